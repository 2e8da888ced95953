"""The ``cmaprof`` command line: a thin layer over collectors and analysis."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cmaprof import __version__
from cmaprof.errors import CmaprofError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cmaprof")
def cli() -> None:
    """Profile the Linux page allocator and CMA with BPF."""


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def doctor(fmt: str) -> None:
    """What this machine can record, and how to fix what it cannot."""
    import json

    from cmaprof.collectors import doctor as doc

    checks = doc.run_checks()
    if fmt == "json":
        click.echo(json.dumps(doc.checks_as_json(checks), indent=2))
    else:
        click.echo(doc.table_checks(checks))
    if not doc.recording_possible(checks):
        raise CmaprofError("recording is not possible on this machine: fix the 'fail' rows above")


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="recording directory to create",
)
@click.option("--force", is_flag=True, help="replace an earlier recording at OUTPUT")
@click.option(
    "-d", "--duration", type=click.FloatRange(min=0, min_open=True), help="stop after SECONDS"
)
@click.option(
    "-i",
    "--interval",
    type=click.FloatRange(min=0.05),
    help="print a live table every SECONDS and save the series at that interval",
)
@click.option(
    "--probes",
    "probe_list",
    metavar="NAME,...",
    help="probes to run (page_alloc always runs); default: every probe the kernel supports",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(
    output: Path,
    force: bool,
    duration: float | None,
    interval: float | None,
    probe_list: str | None,
    command: tuple[str, ...],
) -> None:
    """Record system-wide for -d SECONDS, until Ctrl-C, or while COMMAND runs.

    \b
    Examples:
      cmaprof record -o out/idle -d 10
      cmaprof record -o out/w -i 1 -- cmaprof workload anon:1024 pagecache:256
    """
    from cmaprof.collectors.record import RecordOptions
    from cmaprof.collectors.record import record as do_record

    if not command and duration is None:
        click.echo("cmaprof: no -d and no command: recording until Ctrl-C", err=True)
    status = do_record(
        RecordOptions(
            output=output,
            force=force,
            duration_s=duration,
            interval_s=interval,
            command=list(command),
            probes=[p.strip() for p in probe_list.split(",") if p.strip()] if probe_list else None,
        )
    )
    click.echo(f"cmaprof: recording written to {output}", err=True)
    sys.exit(status)


@cli.command()
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text")
def report(recording: Path, fmt: str) -> None:
    """Tables of a recording: per-zone GFP classes and the check against the kernel."""
    from cmaprof.analysis import tables
    from cmaprof.analysis.recording import load

    rec = load(recording)
    out = {"text": tables.table_report, "json": tables.report_json, "csv": tables.report_csv}[fmt](
        rec
    )
    click.echo(out, nl=False)


@cli.command()
@click.argument("sides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text")
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="significance level of the tests (two-sided)",
)
def compare(sides: tuple[Path, ...], fmt: str, alpha: float) -> None:
    """Compare BASE with OTHER sides; each a recording or a directory of iterations.

    \b
    Examples:
      cmaprof compare runs/stock runs/movable
      cmaprof compare runs/stock runs/movable --format json
    """
    from cmaprof.analysis import compare as cmp

    loaded = [cmp.load_side(s) for s in sides]
    click.echo(cmp.FORMATS[fmt](loaded, alpha), nl=False)


@cli.command()
@click.argument("sides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="OUTDIR")
@click.option("--format", "fmt", type=click.Choice(["png", "svg"]), default="png")
def plot(sides: tuple[Path, ...], output: Path, fmt: str) -> None:
    """Plots of SIDES (recordings or directories of iterations) into OUTDIR.

    cma_alloc() latency CDF per side, pages per zone and GFP class, CMA use over time
    with cma_alloc() calls marked, cma_alloc() failure causes.
    """
    from cmaprof.analysis import compare as cmp
    from cmaprof.analysis import plots

    loaded = [cmp.load_side(s) for s in sides]
    for path in plots.save_sides(loaded, output, fmt):
        click.echo(f"plot: {path}")


@cli.group()
def probes() -> None:
    """Inspect the BPF programs."""


@probes.command("list")
def probes_list() -> None:
    """The probes and the tracepoints they need."""
    from cmaprof import probes as reg

    for p in reg.PROBES.values():
        click.echo(f"{p.name:<12} {', '.join(p.tracepoints):<24} {p.description}")


@probes.command("dump")
@click.argument("names", nargs=-1, required=True)
@click.option("-D", "defines", multiple=True, metavar="NAME=VALUE", help="set a -D option")
def probes_dump(names: tuple[str, ...], defines: tuple[str, ...]) -> None:
    """Print the exact text and flags that would be compiled for probes NAMES.

    Without -D options the kernel features are detected on this machine (as
    `record` does); detection needs a mounted tracefs.
    """
    from cmaprof import probes as reg
    from cmaprof.collectors import features, tracefs

    opts: dict[str, object] = {}
    tfs = tracefs.find()
    if tfs is not None:
        opts.update(features.defines(tfs, list(names)))
    for d in defines:
        key, sep, val = d.partition("=")
        opts[key] = val if sep else 1
    click.echo(reg.dump(list(names), opts))


@cli.command()
@click.argument("specs", nargs=-1, required=True, metavar="NAME[:MIB]...")
def workload(specs: tuple[str, ...]) -> None:
    """Run built-in workloads in order: anon[:MIB], pagecache[:MIB], bulk[:MIB]."""
    from cmaprof import workloads

    parsed = [workloads.parse_spec(s) for s in specs]
    for wl, mib in parsed:
        wl.run(mib)
        click.echo(f"cmaprof workload: {wl.name} {mib} MiB done", err=True)


@cli.command()
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=Path("out/demo"), show_default=True
)
@click.option("--anon-mib", default=1024, show_default=True)
@click.option("--pagecache-mib", default=256, show_default=True)
def demo(output: Path, anon_mib: int, pagecache_mib: int) -> None:
    """Doctor, then record a built-in workload, then print the report and write plots."""
    from cmaprof.analysis import plots, tables
    from cmaprof.analysis.recording import load
    from cmaprof.collectors import doctor as doc
    from cmaprof.collectors.record import RecordOptions
    from cmaprof.collectors.record import record as do_record

    checks = doc.run_checks()
    click.echo(doc.table_checks(checks))
    if not doc.recording_possible(checks):
        raise CmaprofError("recording is not possible on this machine: fix the 'fail' rows above")
    cmd = [
        sys.executable,
        "-m",
        "cmaprof",
        "workload",
        f"anon:{anon_mib}",
        f"pagecache:{pagecache_mib}",
    ]
    status = do_record(RecordOptions(output=output, force=True, interval_s=1.0, command=cmd))
    if status:
        raise CmaprofError(f"the demo workload failed with status {status}")
    rec = load(output)
    click.echo()
    click.echo(tables.table_report(rec), nl=False)
    for path in plots.save_all(rec, output / "plots"):
        click.echo(f"plot: {path}")


def _register_vm() -> None:
    from cmaprof.vm import vm

    cli.add_command(vm)


_register_vm()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("cmaprof: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CmaprofError as exc:
        click.echo(f"cmaprof: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("cmaprof: interrupted", err=True)
        sys.exit(130)
