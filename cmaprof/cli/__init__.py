"""The ``cmaprof`` command line: a thin layer over collectors, analysis and the guest runner.

This package holds all of the click code: the root group and :func:`main` (the console
script) here, one module per command or command family beside it, each parsing options
and calling library functions.
"""

from __future__ import annotations

import os
import sys

import click

from cmaprof import __version__
from cmaprof.cli.compare import compare
from cmaprof.cli.demo import demo
from cmaprof.cli.doctor import doctor
from cmaprof.cli.experiment import experiment
from cmaprof.cli.import_ import import_
from cmaprof.cli.plot import plot
from cmaprof.cli.probes import probes
from cmaprof.cli.record import record
from cmaprof.cli.report import report
from cmaprof.cli.vm import vm
from cmaprof.cli.workload import workload
from cmaprof.errors import CmaprofError

__all__ = ["cli", "main"]


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


for _command in (
    doctor,
    record,
    report,
    import_,
    compare,
    plot,
    probes,
    workload,
    experiment,
    demo,
    vm,
):
    cli.add_command(_command)


def main() -> None:
    """The console script: run :data:`cli`, errors as one ``cmaprof: error:`` line."""
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
