"""``cmaprof plot``: the figures of sides (recordings or directories of iterations)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(short_help="Figures of SIDES (recordings or iterations) into OUTDIR.")
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
