"""``cmaprof doctor``: what this machine can record, and how to fix the rest."""

from __future__ import annotations

import click

from cmaprof.errors import CmaprofError


@click.command(short_help="What this machine can record, and how to fix the rest.")
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
