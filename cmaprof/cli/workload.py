"""``cmaprof workload``: run built-in workloads, each holding its state."""

from __future__ import annotations

import click


def _workload_help() -> str:
    from cmaprof import workloads

    return workloads.help_text()


@click.command(
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
