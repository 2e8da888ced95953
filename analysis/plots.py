"""Figures of a recording (object-oriented matplotlib: no pyplot state).

``plot_*`` return a :class:`matplotlib.figure.Figure` 800 px wide at 100 dpi. Figures of
one recording take a :class:`Recording`; figures comparing sides (``cmaprof plot``) take a
list of :class:`~cmaprof.analysis.compare.Side`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cmaprof.analysis import compare, counterfactual, page_alloc
from cmaprof.analysis.causes import plot_failed_calls_by_cause  # issue 12
from cmaprof.analysis.cma import df_cma_calls
from cmaprof.analysis.compare import Side
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
    # issue 12: CMA held / borrowed / free over time (analysis/utilisation.py)
    from cmaprof.analysis.utilisation import plot_cma_held_borrowed_free

    if not rec.df_cma_used_series().empty:
        path = outdir / f"cma_held_borrowed_free.{fmt}"
        plot_cma_held_borrowed_free(rec).savefig(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- sides
# Figures of several sides (kernels, layouts), each a list of iteration recordings:
# what ``cmaprof plot SIDE... -o OUTDIR`` writes.


def _page_mib(rec: Recording) -> float:
    return int(rec.meta.get("page_size") or 4096) / (1 << 20)


def _side_label(side: Side) -> str:
    return f"{side.name}: {side.kernel}, {side.layout}, n={len(side.recordings)}"


def _sides_title(sides: list[Side], what: str) -> str:
    kernels = ", ".join(dict.fromkeys(s.kernel for s in sides))
    layouts = " vs ".join(dict.fromkeys(s.layout for s in sides))
    workloads = ", ".join(dict.fromkeys(s.workload for s in sides))
    return f"{what}\nkernel {kernels}; {layouts}; workload: {workloads}"


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_cma_latency_cdf(sides: list[Side]) -> Figure:
    """Empirical CDF of cma_alloc() latency (ms, log scale), all calls of each side pooled."""
    fig = Figure(figsize=FIGSIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_sides_title(sides, "cma_alloc() latency, CDF of all calls"), fontsize=10)
    drawn = False
    for s in sides:
        lat = compare.latencies_ns(s)
        if lat is None or not len(lat):
            continue
        ms = np.sort(lat) / 1e6
        y = np.arange(1, len(ms) + 1) / len(ms)
        ax.step(ms, y, where="post", label=f"{_side_label(s)}, {len(ms)} calls", linewidth=1.8)
        drawn = True
    if not drawn:
        _empty(ax, "no cma_alloc() calls recorded")
        return fig
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    for q in (0.5, 0.9, 0.99):
        ax.axhline(q, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of calls")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _zone_gfp_means(side: Side) -> pd.DataFrame:
    """Mean pages per iteration by (zone, gfp), with a "logical CMA" zone added."""
    frames = []
    for rec in side.recordings:
        df = rec.df_page_alloc()
        if df.empty:
            continue
        df["zone"] = df["zone"].astype(str)
        parts = [df[["zone", "gfp", "pages"]]]
        if counterfactual.has_cma(rec):
            cma = df[counterfactual.in_logical_cma(df)][["gfp", "pages"]]
            parts.append(cma.assign(zone=compare.LOGICAL_CMA))
        frames.append(pd.concat(parts).groupby(["zone", "gfp"])["pages"].sum())
    if not frames:
        return pd.DataFrame(columns=["zone", "gfp", "pages"])
    total = pd.concat(frames, axis=1).fillna(0).sum(axis=1) / len(side.recordings)
    return total.rename("pages").reset_index()


def plot_zone_gfp_sides(sides: list[Side]) -> Figure:
    """Stacked bars per side and zone (and logical CMA): MiB per iteration by GFP class."""
    fig = Figure(figsize=(8, 6.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(
        _sides_title(sides, "Pages allocated per zone and GFP class (mean per iteration)"),
        fontsize=10,
    )
    data = []
    for s in sides:
        d = _zone_gfp_means(s)
        if not d.empty:
            data.append(d.assign(side=s.name))
    if not data:
        _empty(ax, "no allocations traced")
        return fig
    df = pd.concat(data, ignore_index=True)
    df = df[df["pages"] > 0]
    top = df[df["zone"] != compare.LOGICAL_CMA].groupby("gfp")["pages"].sum().nlargest(TOP_GFP)
    df["class"] = df["gfp"].where(df["gfp"].isin(top.index), "other")
    order = sorted(
        df["zone"].unique(),
        key=lambda z: (z == compare.LOGICAL_CMA, compare._zone_key(z)),
    )
    df["bar"] = [f"{s}\n{z}" for s, z in zip(df["side"], df["zone"])]
    bars = [f"{s.name}\n{z}" for z in order for s in sides if f"{s.name}\n{z}" in set(df["bar"])]
    pivot = df.pivot_table(index="bar", columns="class", values="pages", aggfunc="sum").fillna(0)
    pivot = pivot.reindex(bars)
    classes = [c for c in [*top.index, "other"] if c in pivot.columns]
    page_mib = _page_mib(sides[0].recordings[0])
    bottom = np.zeros(len(pivot))
    for cls in classes:
        vals = pivot[cls].to_numpy() * page_mib
        ax.bar(range(len(pivot)), vals, bottom=bottom, label=_short_gfp(str(cls)))
        bottom += vals
    ax.set_xticks(range(len(pivot)), list(pivot.index), fontsize=8)
    ax.set_ylabel("MiB allocated per iteration")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return fig


def _short_gfp(gfp: str, width: int = 95) -> str:
    return gfp if len(gfp) <= width else gfp[: width - 3] + "..."


def plot_cma_utilisation(sides: list[Side]) -> Figure:
    """Per side, over time: the CMA area's debugfs ``used`` (pages held by cma_alloc(),
    percent of the area) with every cma_alloc() call marked (o success, x failure), and
    below it the rate of pages the page allocator placed in CMA pageblocks."""
    fig = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    axes = fig.subplots(2, len(sides), sharex="col", sharey="row", squeeze=False)
    fig.suptitle(_sides_title(sides, "CMA use over time (each line one iteration)"), fontsize=10)
    for col, s in enumerate(sides):
        top, bottom = axes[0][col], axes[1][col]
        top.set_title(f"{s.name}: {s.layout}", fontsize=9)
        any_used = any_rate = False
        for i, rec in enumerate(s.recordings):
            color = f"C{i % 10}"
            used = rec.df_cma_used_series()
            if not used.empty:
                u = used.groupby("t_ns")[["used_pages", "count_pages"]].sum().reset_index()
                pct = u["used_pages"] / u["count_pages"].where(u["count_pages"] > 0) * 100
                top.plot(u["t_ns"] / 1e9, pct, color=color, linewidth=1.2)
                any_used = True
            calls = df_cma_calls(rec) if "cma" in (rec.meta.get("probes") or {}) else None
            if calls is not None and len(calls):
                ok = calls["success"].astype(bool)
                y = 100.5 + i * 2.0
                top.plot(
                    calls.loc[ok, "start_ns"] / 1e9, [y] * int(ok.sum()), "o", ms=3, color=color
                )
                top.plot(
                    calls.loc[~ok, "start_ns"] / 1e9, [y] * int((~ok).sum()), "x", ms=5, color=color
                )
            series = rec.df_page_alloc_series()
            if not series.empty and counterfactual.has_cma(rec):
                series["zone"] = series["zone"].astype(str)
                cma = series[counterfactual.in_logical_cma(series)]
                g = (
                    cma.groupby(["t_start_ns", "t_end_ns"])["pages"]
                    .sum()
                    .reindex(series.groupby(["t_start_ns", "t_end_ns"]).size().index, fill_value=0)
                    .reset_index()
                    .sort_values("t_start_ns")
                )
                if len(g):
                    rate = g["pages"] / ((g["t_end_ns"] - g["t_start_ns"]) / 1e9) * _page_mib(rec)
                    edges = [g["t_start_ns"].iloc[0] / 1e9, *(g["t_end_ns"] / 1e9)]
                    bottom.stairs(rate.to_numpy(), edges, color=color, linewidth=1.2)
                    any_rate = True
        if not any_used:
            _empty(top, "no cma_used series")
        else:
            top.set_ylim(0, 100.5 + 2.0 * len(s.recordings) + 1)
        if not any_rate:
            _empty(bottom, "no CMA placement data")
        bottom.set_xlabel("seconds since start")
    axes[0][0].set_ylabel("area held by cma_alloc (%)\no ok, x failed calls", fontsize=8)
    axes[1][0].set_ylabel("placed in CMA\npageblocks (MiB/s)", fontsize=8)
    return fig


def plot_failure_causes(sides: list[Side]) -> Figure:
    """Pages that blocked cma_alloc() by cause, mean per iteration, per side (from the
    blockers probe's ``cma_failures`` table); failed calls per side when not recorded."""
    fig = Figure(figsize=FIGSIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(
        _sides_title(sides, "cma_alloc() failure causes (pages, mean per iteration)"), fontsize=10
    )
    frames = []
    missing = []
    for s in sides:
        parts = [compare._failures_frame(r) for r in s.recordings]
        if all(p is None for p in parts):
            missing.append(s.name)
            continue
        got = [p for p in parts if p is not None and not p.empty]
        if got:
            by = pd.concat(got).groupby("cause", observed=True)["pages"].sum() / len(parts)
            frames.append(by.rename(s.name))
    if not frames:
        text = "no failure causes recorded"
        if missing:
            text = (
                "failure causes not recorded for "
                + ", ".join(missing)
                + "\n(needs the blockers probe's cma_failures table)"
            )
        _empty(ax, text)
        return fig
    table = pd.concat(frames, axis=1).fillna(0)
    table = table.loc[table.sum(axis=1).sort_values().index]
    height = 0.8 / len(table.columns)
    for i, name in enumerate(table.columns):
        ax.barh(
            np.arange(len(table)) + i * height, table[name].to_numpy(), height=height, label=name
        )
    ax.set_yticks(np.arange(len(table)) + 0.4 - height / 2, [str(c) for c in table.index])
    ax.set_xlabel("pages per iteration")
    ax.legend(fontsize=8)
    if missing:
        ax.text(
            0.99,
            0.01,
            "not recorded: " + ", ".join(missing),
            ha="right",
            transform=ax.transAxes,
            fontsize=8,
        )
    return fig


SIDE_PLOTS = {
    "cma_latency_cdf": plot_cma_latency_cdf,
    "zone_gfp": plot_zone_gfp_sides,
    "cma_utilisation": plot_cma_utilisation,
    "failure_causes": plot_failure_causes,
    "failed_calls_by_cause": plot_failed_calls_by_cause,  # issue 12: every cause class
}


def save_sides(sides: list[Side], outdir: Path, fmt: str = "png") -> list[Path]:
    """Write every side plot into ``outdir`` as ``NAME.fmt``; return the paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fn in SIDE_PLOTS.items():
        path = outdir / f"{name}.{fmt}"
        fn(sides).savefig(path)
        paths.append(path)
    return paths
