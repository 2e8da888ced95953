"""``cmaprof probes``: list the BPF programs, print what would be compiled."""

from __future__ import annotations

import click


@click.group()
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
