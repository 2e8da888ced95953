"""Figures of one recording: pages per zone and GFP class, pages over time; and
:func:`save_all`, what ``cmaprof plot RECORDING`` writes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cmaprof.analysis import compare, page_alloc
from cmaprof.analysis.loaded import Recording

FIGSIZE = (8, 4.5)


TOP_GFP = 6


#: Characters per title line at fontsize 10 in an 800 px figure (DejaVu Sans ~7 px each).
TITLE_CHARS = 95


def fit_title(text: str, width: int = TITLE_CHARS) -> str:
    """Wrap each line of a title at word boundaries so that none is cut by the figure."""
    return "\n".join(
        "\n".join(textwrap.wrap(line, width, break_on_hyphens=False) or [""])
        for line in text.split("\n")
    )


def _title(rec: Recording, what: str) -> str:
    m = rec.meta
    return fit_title(f"{what}\nkernel {m.kernel_release}; workload: {compare.workload_of(rec)}")


def plot_zone_gfp(rec: Recording) -> Figure:
    """Stacked bars: pages per zone, split by the largest GFP classes."""
    df = page_alloc.df_zone_gfp(rec)
    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_title(rec, "Pages allocated per zone and GFP class"), fontsize=10)
    if df.empty:
        ax.text(0.5, 0.5, "no allocations traced", ha="center", transform=ax.transAxes)
        return fig
    df = df.assign(
        where=df["zone"].astype(str)
        + (" n" + df["node"].astype(str) if df["node"].nunique() > 1 else "")
    )
    top = df.groupby("gfp")["pages"].sum().nlargest(TOP_GFP).index
    df["class"] = df["gfp"].where(df["gfp"].isin(top), "other")
    pivot = df.pivot_table(
        index="where", columns="class", values="pages", aggfunc="sum", fill_value=0, observed=True
    )
    bottom = pd.Series(0.0, index=pivot.index)
    page_mib = int(rec.meta.page_size or 4096) / (1 << 20)
    for cls in pivot.columns:
        vals = pivot[cls] * page_mib
        ax.bar(pivot.index, vals, bottom=bottom, label=str(cls)[:100])
        bottom += vals
    ax.set_ylabel("MiB allocated")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=1, frameon=False)
    return fig


def plot_pages_over_time(rec: Recording) -> Figure:
    """Pages allocated per second and zone, per interval, with the vmstat rate dashed."""
    s = rec.df_page_alloc_series()
    fig = Figure(figsize=FIGSIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_title(rec, "Page allocation rate per zone (traced; vmstat dashed)"), fontsize=10)
    if s.empty:
        ax.text(0.5, 0.5, "no interval data", ha="center", transform=ax.transAxes)
        return fig
    draw_rate(ax, rec)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("pages per second")
    return fig


def save_all(rec: Recording, outdir: Path, fmt: str = "png") -> list[Path]:
    """Write every plot of the recording into ``outdir``; return the paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in (("zone_gfp", plot_zone_gfp), ("pages_over_time", plot_pages_over_time)):
        path = outdir / f"{name}.{fmt}"
        fn(rec).savefig(path)
        paths.append(path)
    # issue 12: CMA held / borrowed / free over time (analysis/utilisation.py)
    from cmaprof.analysis.utilisation import plot_cma_held_borrowed_free

    if not rec.df_cma_used_series().empty:
        path = outdir / f"cma_held_borrowed_free.{fmt}"
        plot_cma_held_borrowed_free(rec).savefig(path)
        paths.append(path)
    return paths


def draw_rate(ax: Axes, rec: Recording) -> None:
    s = rec.df_page_alloc_series()
    g = s.groupby(["t_start_ns", "t_end_ns", "zone"], observed=True)["pages"].sum().reset_index()
    g = g[g.groupby("zone", observed=True)["pages"].transform("sum") > 0]
    vm = rec.df_vmstat_series()
    for zone, zg in g.groupby("zone", observed=True):
        zg = zg.sort_values("t_start_ns")
        edges = [zg["t_start_ns"].iloc[0] / 1e9, *(zg["t_end_ns"] / 1e9)]
        rate = zg["pages"] / ((zg["t_end_ns"] - zg["t_start_ns"]) / 1e9)
        art = ax.stairs(rate.to_numpy(), edges, label=f"{zone} traced", linewidth=3, alpha=0.45)
        v = vm[vm["counter"] == f"pgalloc_{str(zone).lower()}"].sort_values("t_ns")
        if len(v) > 1:
            vrate = (v["value"].diff() / (v["t_ns"].diff() / 1e9)).iloc[1:]
            ax.stairs(
                vrate.to_numpy(),
                (v["t_ns"] / 1e9).to_numpy(),
                ls="--",
                linewidth=1.3,
                color=art.get_edgecolor()[:3],
                label=f"{zone} vmstat",
                zorder=3,
            )
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
