"""``cmaprof compare``: BASE against the other sides, mmtests-style."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(short_help="Compare BASE with OTHER sides, mmtests-style.")
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
