"""``cmaprof report``: the tables of one recording (text, csv, json)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(short_help="Tables of a recording (GFP classes per zone, the check).")
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
    from cmaprof.analysis.loaded import load

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
