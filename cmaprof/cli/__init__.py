"""The ``cmaprof`` command line: a thin layer over collectors and analysis."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cmaprof import __version__
from cmaprof.errors import CmaprofError


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  cmaprof doctor
  cmaprof record -o out/w -i 1 -- cmaprof workload anon:1024 pagecache:256
  cmaprof report out/w
  cmaprof compare runs/stock runs/movable
  cmaprof plot runs/stock runs/movable -o out/plots
Each command's --help has its own examples.""",
)
@click.version_option(__version__, prog_name="cmaprof")
def cli() -> None:
    """Profile the Linux page allocator and CMA with BPF."""


@cli.command(short_help="What this machine can record, and how to fix the rest.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def doctor(fmt: str) -> None:
    """What this machine can record, and how to fix what it cannot.

    \b
    Examples:
      cmaprof doctor
      cmaprof doctor --format json
    """
    import json

    from cmaprof.collectors import doctor as doc

    checks = doc.run_checks()
    if doc.recording_possible(checks):
        checks.append(doc.check_probes_compile())
    if fmt == "json":
        click.echo(json.dumps(doc.checks_as_json(checks), indent=2))
    else:
        click.echo(doc.table_checks(checks))
    if not doc.recording_possible(checks):
        raise CmaprofError("recording is not possible on this machine: fix the 'fail' rows above")


@cli.command(
    context_settings={"ignore_unknown_options": False},
    short_help="Record for -d SECONDS, until Ctrl-C, or while COMMAND runs.",
)
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
@click.option(
    "--skip-unavailable",
    is_flag=True,
    help="leave out probes named in --probes that this kernel cannot run (the recording "
    "and report say which and why) instead of failing",
)
@click.option(
    "--events",
    "events",
    multiple=True,
    metavar="page_alloc[:COND,...]",
    help="also stream one row per page allocation into events/page_alloc.parquet "
    "(BPF ring buffer, per-CPU batches; every dropped event counted). COND: "
    "zone=NAME[|NAME] (as in /proc/zoneinfo), gfp=FLAG[|FLAG] (all bits of each set; "
    "names as the kernel prints them, e.g. __GFP_MOVABLE), nogfp=FLAG[|FLAG] (none "
    "set), order=N or order=N-M, cma=yes|no (page in a CMA area or not), sample=N "
    "(keep every Nth matching event per CPU). Example: "
    "--events page_alloc:zone=Normal,gfp=__GFP_MOVABLE,sample=10",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def record(
    output: Path,
    force: bool,
    duration: float | None,
    interval: float | None,
    probe_list: str | None,
    skip_unavailable: bool,
    events: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Record system-wide for -d SECONDS, until Ctrl-C, or while COMMAND runs.

    \b
    Examples:
      cmaprof record -o out/idle -d 10
      cmaprof record -o out/w -i 1 -- cmaprof workload anon:1024 pagecache:256
      cmaprof record -o out/c --probes page_alloc,cma,migrate -i 1 -- \\
          cmaprof workload cma-alloc:pages=100%maxchunk
      cmaprof record -o out/e -d 5 --events page_alloc:zone=Normal,sample=10
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
            skip_unavailable=skip_unavailable,
            events=list(events),
        )
    )
    click.echo(f"cmaprof: recording written to {output}", err=True)
    sys.exit(status)


@cli.command(short_help="Tables of a recording (GFP classes per zone, the check).")
@click.argument("recording", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="csv: directory to write one NAME.csv per table into; text, json: file to write",
)
@click.option(
    "--table",
    metavar="NAME",
    help="csv, json: only the table NAME (e.g. zone_gfp, check, cma_alloc)",
)
@click.option(
    "--redact",
    is_flag=True,
    help="for a public post: hide pfns, pids and local paths (comm and counts are kept)",
)
@click.option(
    "--wide",
    is_flag=True,
    help="text: GFP strings on the line of their numbers, unwrapped (for grep)",
)
def report(
    recording: Path,
    fmt: str,
    output: Path | None,
    table: str | None,
    redact: bool,
    wide: bool,
) -> None:
    """Tables of a recording: per-zone GFP classes and the check against the kernel.

    \b
    Examples:
      cmaprof report out/w
      cmaprof report out/w --wide | grep __GFP_MOVABLE
      cmaprof report out/w --format csv -o out/w-csv      # one NAME.csv per table
      cmaprof report out/w --format csv --table zone_gfp  # one table to stdout
      cmaprof report out/w --format json --redact
    """
    from cmaprof.analysis import tables
    from cmaprof.analysis.recording import load

    rec = load(recording)
    if table is not None and fmt == "text":
        raise click.UsageError("--table needs --format csv or json")
    if fmt == "csv" and table is None and output is not None:
        for path in tables.write_csv_tables(rec, output, redact):
            click.echo(f"report: {path}", err=True)
        return
    if fmt == "text":
        out = tables.table_report(rec, redact, wide=wide)
    elif fmt == "json":
        out = tables.report_json(rec, redact, table)
    elif table is not None:
        out = tables.table_csv(rec, table, redact)
    else:
        out = tables.report_csv(rec, redact)
        click.echo(
            "cmaprof: several tables in one stream; for pandas.read_csv give -o DIR "
            "(one file per table) or --table NAME",
            err=True,
        )
    if output is not None:
        output.write_text(out)
        click.echo(f"report: {output}", err=True)
    else:
        click.echo(out, nl=False)


@cli.command("import", short_help="Turn captured trace text into a recording.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="recording to create"
)
@click.option("--force", is_flag=True, help="replace an earlier recording at OUTPUT")
@click.option(
    "--source",
    type=click.Choice(["auto", "tracefs", "trace-cmd", "perf"]),
    default="auto",
    show_default=True,
    help="which tool printed the text",
)
@click.option(
    "--formats",
    "formats_dir",
    type=click.Path(path_type=Path),
    help="copy of the traced kernel's tracefs events/ (events/<sys>/<event>/format) "
    "[default: formats/ or events/ beside the input]",
)
@click.option("--zoneinfo", type=click.Path(path_type=Path), help="its /proc/zoneinfo (zones)")
@click.option(
    "--pagetypeinfo", type=click.Path(path_type=Path), help="its /proc/pagetypeinfo (names)"
)
@click.option(
    "--cma-ranges",
    multiple=True,
    metavar="NAME:BASE_PFN:COUNT|DIR",
    help="CMA areas, or a copy of debugfs cma/ (repeatable) [default: placement unknown]",
)
@click.option("--vmstat-start", type=click.Path(path_type=Path), help="/proc/vmstat before")
@click.option("--vmstat-end", type=click.Path(path_type=Path), help="/proc/vmstat after")
@click.option(
    "--window",
    type=(float, float),
    metavar="START END",
    help="keep events with START <= timestamp <= END (seconds, as the trace prints them)",
)
@click.option(
    "--window-of",
    type=click.Path(path_type=Path),
    metavar="RECORDING",
    help="keep the events of a cmaprof recording's counting window (CLOCK_MONOTONIC: "
    "capture with perf record -k mono, trace-cmd record -C mono, trace_clock mono)",
)
@click.option("--kernel-release", metavar="UNAME_R", help="the traced kernel's `uname -r`")
def import_(
    inputs: tuple[Path, ...],
    output: Path,
    force: bool,
    source: str,
    formats_dir: Path | None,
    zoneinfo: Path | None,
    pagetypeinfo: Path | None,
    cma_ranges: tuple[str, ...],
    vmstat_start: Path | None,
    vmstat_end: Path | None,
    window: tuple[float, float] | None,
    window_of: Path | None,
    kernel_release: str | None,
) -> None:
    """Turn captured trace text into a recording (tracefs, trace-cmd report, perf script).

    \b
    Examples:
      cmaprof import trace.txt --formats events/ --zoneinfo zoneinfo -o out/imp
      cmaprof report out/imp
    """
    from cmaprof.collectors import importer

    meta = importer.import_text(
        list(inputs),
        output,
        source=source,
        formats_dir=formats_dir,
        zoneinfo=zoneinfo,
        pagetypeinfo=pagetypeinfo,
        cma_ranges=list(cma_ranges) or None,
        vmstat_start=vmstat_start,
        vmstat_end=vmstat_end,
        window=importer.window_arg(window, window_of),
        kernel_release=kernel_release,
        force=force,
    )
    click.echo(importer.summary(meta), err=True)


@cli.command(short_help="Compare BASE with OTHER sides, mmtests-style.")
@click.argument("sides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="write to this file, not stdout"
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="significance level of the tests (two-sided)",
)
@click.option(
    "--wide", is_flag=True, help="text: every label on the line of its numbers (for grep)"
)
def compare(
    sides: tuple[Path, ...], fmt: str, output: Path | None, alpha: float, wide: bool
) -> None:
    """Compare BASE with OTHER sides; each a recording or a directory of iterations.

    Per metric the mean, Stddev, CoeffVar, Min and Max over a side's iterations
    (latency also p50/p90/p99 over its calls), each with its change against BASE;
    * where a test says the difference is significant. Refuses one side; warns
    (on stderr) where the sides differ in kernel, CMA layout or workload.

    \b
    Examples:
      cmaprof compare runs/stock runs/movable
      cmaprof compare runs/stock runs/movable --wide | grep latency
      cmaprof compare runs/stock runs/movable --format json -o out/compare.json
    """
    from cmaprof.analysis import compare as cmp

    loaded = [cmp.load_side(s) for s in sides]
    warnings = cmp.check_sides(loaded)
    for w in warnings:
        click.echo(f"cmaprof: warning: {w}", err=True)
    if fmt == "text":
        out = cmp.table_compare(loaded, alpha, wide=wide)
    elif fmt == "json":
        out = cmp.compare_json(loaded, alpha, warnings)
    else:
        out = cmp.compare_csv(loaded, alpha)
    if output is not None:
        output.write_text(out)
        click.echo(f"compare: {output}", err=True)
    else:
        click.echo(out, nl=False)


@cli.command(short_help="Figures of SIDES (recordings or iterations) into OUTDIR.")
@click.argument("sides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="OUTDIR")
@click.option(
    "--image-format",
    "fmt",
    type=click.Choice(["png", "svg"]),
    default="png",
    show_default=True,
    help="file format of the figures",
)
@click.option(
    "--format", "fmt_old", type=click.Choice(["png", "svg"]), hidden=True, help="old --image-format"
)
def plot(sides: tuple[Path, ...], output: Path, fmt: str, fmt_old: str | None) -> None:
    """Figures of SIDES (recordings or directories of iterations) into OUTDIR.

    cma_alloc() latency CDF per side, pages per zone and GFP class (and the part in
    CMA), CMA use over time with cma_alloc() calls marked, cma_alloc() failure causes,
    the allocation rate against /proc/vmstat. Only figures with data are written;
    the others are named on stderr with the reason.

    \b
    Examples:
      cmaprof plot out/w -o out/w/plots
      cmaprof plot runs/stock runs/movable -o out/plots
      cmaprof plot runs/stock runs/movable -o out/plots --image-format svg
    """
    fmt = fmt_old or fmt
    from cmaprof.analysis import compare as cmp
    from cmaprof.analysis import plots

    loaded = [cmp.load_side(s) for s in sides]
    skipped: dict[str, str] = {}
    for path in plots.save_sides(loaded, output, fmt, skipped):
        click.echo(f"plot: {path}")
    for name, why in skipped.items():
        click.echo(f"plot: skipped {name}: {why}", err=True)


@cli.group()
def probes() -> None:
    """Inspect the BPF programs.

    \b
    Examples:
      cmaprof probes list
      cmaprof probes dump cma
    """


@probes.command("list")
def probes_list() -> None:
    """The probes and the tracepoints they need.

    \b
    Examples:
      cmaprof probes list
    """
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

    \b
    Examples:
      cmaprof probes dump page_alloc
      cmaprof probes dump cma -D HAVE_CMA_START=1 -D HAVE_CMA_FINISH=1
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


def _workload_help() -> str:
    from cmaprof import workloads

    return workloads.help_text()


@cli.command(
    epilog="\b\n" + _workload_help(),
    context_settings={"max_content_width": 100},
    short_help="Run built-in workloads in order, each holding its state.",
)
@click.argument("specs", nargs=-1, required=True, metavar="NAME[:ARGS]...")
def workload(specs: tuple[str, ...]) -> None:
    """Run built-in workloads in order; each keeps its state until all are done.

    ARGS is the main value (anon:1024 is 1024 MiB) and/or KEY=VALUE pairs joined
    by commas; list values are joined by '+'. State (mapped memory, a mounted file
    system, held CMA pages) is removed in reverse order at the end.

    \b
    Examples:
      cmaprof workload anon:1024 pagecache:256
      cmaprof workload anon:leave=400,hold=1 bdev-metadata:seconds=30 \\
          cma-alloc:pages=100%maxchunk,hold=1
    """
    from cmaprof import workloads

    workloads.run([workloads.parse_spec(s) for s in specs], echo=lambda s: click.echo(s, err=True))


@cli.command(short_help="Record workloads in fresh guests per kernel and layout.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="experiment directory"
)
@click.option(
    "--kernel",
    "kernels",
    multiple=True,
    metavar="BZIMAGE",
    help="kernel to boot (repeatable) [default: the test kernel of `cmaprof vm run`]",
)
@click.option(
    "--layout",
    "layouts",
    multiple=True,
    type=click.Choice(["stock", "movable"]),
    help="CMA placement (repeatable): stock (cma=) or movable (inside ZONE_MOVABLE) "
    "[default: stock]",
)
@click.option(
    "--workload",
    "workload_specs",
    multiple=True,
    required=True,
    metavar="NAME[:ARGS]",
    help="workload run under `cmaprof record` in each guest, in order (repeatable); "
    "see `cmaprof workload --help`",
)
@click.option("--iterations", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--memory", default="2G", show_default=True, help="guest RAM")
@click.option("--cma", "cma_size", default="256M", show_default=True, help="CMA area size")
@click.option("--cpus", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--append", multiple=True, help="extra kernel command-line words (repeatable)")
@click.option("--probes", "probe_list", metavar="NAME,...", help="passed to `cmaprof record`")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=1800.0,
    show_default=True,
    help="seconds before a guest is killed",
)
def experiment(
    output: Path,
    kernels: tuple[str, ...],
    layouts: tuple[str, ...],
    workload_specs: tuple[str, ...],
    iterations: int,
    memory: str,
    cma_size: str,
    cpus: int,
    append: tuple[str, ...],
    probe_list: str | None,
    timeout: float,
) -> None:
    """Record workloads in a fresh guest per (kernel, layout) x iteration, then compare.

    Every run's recording, console log, dmesg and record stderr are kept under
    OUTPUT (layout and manifest: see cmaprof/experiment.py). Running the same
    command again resumes: complete runs are skipped, incomplete ones rerun.

    With fewer than 4 iterations a side no Mann-Whitney test in `compare` can reach
    p <= 0.05; one iteration shows the effect, 4 or more test it.

    \b
    Examples:
      cmaprof experiment -o out/exp --layout stock --layout movable --iterations 4 \\
          --probes page_alloc,cma,migrate,blockers \\
          --workload anon:leave=400,hold=1,thp=1 \\
          --workload bdev-metadata:size=256,files=1000,seconds=30 \\
          --workload cma-alloc:pages=100%maxchunk,hold=1
      cmaprof experiment -o out/one --layout stock --workload anon:512
    """
    from cmaprof import experiment as exp
    from cmaprof import workloads

    for spec in workload_specs:
        workloads.parse_spec(spec)  # a typo fails here, not in the guest
    ks = list(kernels) or [k for k in [exp.kernel_default()] if k]
    params = exp.Params(
        kernels=[str(Path(k).resolve()) for k in ks],
        layouts=list(layouts) or ["stock"],
        workloads=list(workload_specs),
        iterations=iterations,
        memory=memory,
        cma=cma_size,
        cpus=cpus,
        append=list(append),
        probes=probe_list,
        timeout_s=timeout,
    )
    exp.experiment(output, params, echo=lambda s: click.echo(s, err=True))


@cli.command(short_help="Doctor, record a workload, print the report, write plots.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=Path("out/demo"), show_default=True
)
@click.option("--anon-mib", default=1024, show_default=True)
@click.option("--pagecache-mib", default=256, show_default=True)
def demo(output: Path, anon_mib: int, pagecache_mib: int) -> None:
    """Doctor, then record a built-in workload, then print the report and write plots.

    \b
    Examples:
      cmaprof demo
      cmaprof demo -o out/demo2 --anon-mib 512
    """
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

    # The group's one-line help and examples for `cmaprof --help` and `cmaprof vm --help`
    # (set here, so that cmaprof/vm.py keeps only the guest runner).
    vm.short_help = "Boot a kernel under test in QEMU and run commands in it."
    vm.epilog = (
        "\b\nExamples:\n"
        "  cmaprof vm run --cma 256M -- cat /sys/kernel/debug/cma/reserved/count\n"
        "  cmaprof vm run --cma-in-movable 256M -- cmaprof doctor"
    )
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
    except BrokenPipeError:  # cmaprof report | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as exc:  # e.g. plot -o onto a file or into a read-only directory
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"cmaprof: error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("cmaprof: interrupted", err=True)
        sys.exit(130)
