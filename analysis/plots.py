"""Figures of a recording (object-oriented matplotlib: no pyplot state).

``plot_*`` return a :class:`matplotlib.figure.Figure` 800 px wide at 100 dpi.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from cmaprof.analysis import page_alloc
from cmaprof.analysis.recording import Recording

FIGSIZE = (8, 4.5)
TOP_GFP = 6


def _title(rec: Recording, what: str) -> str:
    m = rec.meta
    cmd = " ".join(m.get("command") or [])
    wl = f" — {cmd[-40:]}" if cmd else ""
    return f"{what}\nkernel {m.get('kernel_release')}{wl}"


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
    page_mib = int(rec.meta.get("page_size") or 4096) / (1 << 20)
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
    g = s.groupby(["t_start_ns", "t_end_ns", "zone"], observed=True)["pages"].sum().reset_index()
    vm = rec.df_vmstat_series()
    for zone, zg in g.groupby("zone", observed=True):
        zg = zg.sort_values("t_start_ns")
        edges = [zg["t_start_ns"].iloc[0] / 1e9, *(zg["t_end_ns"] / 1e9)]
        rate = zg["pages"] / ((zg["t_end_ns"] - zg["t_start_ns"]) / 1e9)
        art = ax.stairs(rate.to_numpy(), edges, label=f"{zone} traced", linewidth=2)
        v = vm[vm["counter"] == f"pgalloc_{str(zone).lower()}"].sort_values("t_ns")
        if len(v) > 1:
            vrate = (v["value"].diff() / (v["t_ns"].diff() / 1e9)).iloc[1:]
            ax.stairs(
                vrate.to_numpy(),
                (v["t_ns"] / 1e9).to_numpy(),
                ls="--",
                color=art.get_edgecolor(),
                label=f"{zone} vmstat",
            )
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("pages per second")
    ax.legend(fontsize=8)
    return fig


def save_all(rec: Recording, outdir: Path, fmt: str = "png") -> list[Path]:
    """Write every plot of the recording into ``outdir``; return the paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in (("zone_gfp", plot_zone_gfp), ("pages_over_time", plot_pages_over_time)):
        path = outdir / f"{name}.{fmt}"
        fn(rec).savefig(path)
        paths.append(path)
    return paths
