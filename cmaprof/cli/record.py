"""``cmaprof record``: record system-wide for a time, until Ctrl-C, or around a command."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command(
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
@click.option(
    "--by",
    "by",
    metavar="KEY,...",
    help="also key the page_alloc cube by KEY (comm, tgid, stack; combinable; off by "
    "default) into tables/page_alloc_by, aggregated in the kernel (a hash of "
    "--by-entries keys; events that find it full are counted, never lost). "
    "stack: the kernel stack of each allocation, symbolised at the end into "
    "tables/stacks; with the blockers probe also the stack of the allocation that "
    "placed each CMA page. Example: --by comm,stack",
)
@click.option(
    "--by-entries",
    "by_entries",
    type=int,
    metavar="N",
    help="with --by: keys of the in-kernel table (and stacks of its stack map with "
    "stack) [default: 16384]; events beyond are counted as overflow",
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
    by: str | None,
    by_entries: int | None,
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
    from cmaprof.collectors.page_alloc_by import parse_by
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
            by=parse_by(by),
            by_entries=by_entries,
        )
    )
    click.echo(f"cmaprof: recording written to {output}", err=True)
    sys.exit(status)
