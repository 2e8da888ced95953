"""``cmaprof import``: a recording from trace text (tracefs, trace-cmd, perf script)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("import", short_help="Turn captured trace text into a recording.")
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
    from cmaprof.collectors import text_import as importer

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
