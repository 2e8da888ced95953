"""``cmaprof report``: the tables of one recording (text, csv, json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
@click.option(
    "--by",
    "by_keys",
    multiple=True,
    metavar="comm|tgid|stack",
    callback=lambda ctx, param, value: _parse_by(value),
    help="who allocates: top processes or kernel stacks per GFP class, zone and CMA "
    "area (needs a recording made with record --by the same key); combinable: "
    "--by comm,stack",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    help="--by: rows per class before (other)  [default: 10]",
)
@click.option(
    "--include-self",
    is_flag=True,
    help="--by: keep cmaprof's own process in the tables (excluded by default)",
)
@click.option(
    "--stacks",
    "full_stacks",
    is_flag=True,
    help="--by stack, text: every frame of each stack under its row",
)
def report(
    recording: Path,
    fmt: str,
    output: Path | None,
    table: str | None,
    redact: bool,
    wide: bool,
    by_keys: tuple[str, ...],
    top: int | None,
    include_self: bool,
    full_stacks: bool,
) -> None:
    """Tables of a recording: per-zone GFP classes and the check against the kernel.

    \b
    Examples:
      cmaprof report out/w
      cmaprof report out/w --wide | grep __GFP_MOVABLE
      cmaprof report out/w --format csv -o out/w-csv      # one NAME.csv per table
      cmaprof report out/w --format csv --table zone_gfp  # one table to stdout
      cmaprof report out/w --format json --redact
      cmaprof report out/w --by comm --top 5       # record --by comm: who allocates
      cmaprof report out/w --by stack --stacks     # every frame of each stack
    """
    from cmaprof.analysis import tables
    from cmaprof.analysis.loaded import load

    rec = load(recording)
    if table is not None and fmt == "text":
        raise click.UsageError("--table needs --format csv or json")
    if not by_keys and (top is not None or include_self or full_stacks):
        raise click.UsageError("--top, --include-self and --stacks need --by")
    if by_keys:
        opts = (list(by_keys), top or 10, not include_self)
        _emit(_by_report(rec, fmt, table, redact, full_stacks, *opts), output, fmt)
        return
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


BY_KEYS = ("comm", "tgid", "stack")


def _parse_by(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--by comm,stack --by tgid`` -> the keys in order, each once."""
    keys = [k.strip() for v in values for k in v.split(",") if k.strip()]
    bad = [k for k in keys if k not in BY_KEYS]
    if bad:
        raise click.BadParameter(
            f"{', '.join(bad)}: not one of {', '.join(BY_KEYS)} (e.g. --by comm,stack)"
        )
    return tuple(dict.fromkeys(keys))


def _by_report(
    rec: Any,
    fmt: str,
    table: str | None,
    redact: bool,
    full_stacks: bool,
    keys: list[str],
    top: int,
    exclude_self: bool,
) -> str | dict[str, Any]:
    """``report --by``: the text, or the named tables (csv, json)."""
    from cmaprof.analysis import by_text, tables

    if fmt == "text" and redact:
        from cmaprof.analysis import redact as rd

        with rd.active():
            out = _by_text(rd.view(rec), keys, top, exclude_self, full_stacks)
        return rd.redact_text(out, rec)
    if fmt == "text":
        return _by_text(rec, keys, top, exclude_self, full_stacks)
    frames = by_text.by_tables(rec, keys, top, exclude_self, redact)
    return frames if table is None else {table: tables.pick_table(frames, table, rec.path)}


def _by_text(rec: Any, keys: list[str], top: int, exclude_self: bool, full: bool) -> str:
    from cmaprof.analysis import by_text, tables

    text = by_text.table_by_report(rec, keys, top, exclude_self, full)
    return tables.table_header(rec) + "\n\n" + text + "\n"


def _emit(out: str | dict[str, Any], output: Path | None, fmt: str) -> None:
    """Text as it is; named tables as json, csv (one file per table with ``-o DIR``)."""
    from cmaprof.analysis import tables

    if isinstance(out, dict) and fmt == "csv" and output is not None and len(out) > 1:
        for path in tables.write_frames_csv(out, output):
            click.echo(f"report: {path}", err=True)
        return
    if not isinstance(out, dict):
        text = out
    elif fmt == "json":
        text = tables.frames_json(out)
    elif len(out) == 1:
        text = next(iter(out.values())).to_csv(index=False)
    else:
        text = tables.frames_csv(out)
    if output is not None:
        output.write_text(text)
        click.echo(f"report: {output}", err=True)
    else:
        click.echo(text, nl=False)
