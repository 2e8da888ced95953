"""Figures of several sides (kernels, layouts), each a list of iteration recordings:
CMA latency CDFs, zone x GFP bars, CMA area use, failure causes, allocation rate."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from cmaprof.analysis import compare, counterfactual
from cmaprof.analysis.causes.plot import note_not_recorded
from cmaprof.analysis.cma import df_cma_calls
from cmaprof.analysis.compare import Side
from cmaprof.analysis.loaded import Recording
from cmaprof.analysis.plots.single import FIGSIZE, TOP_GFP, draw_rate, fit_title
from cmaprof.errors import BadInput


def _page_mib(rec: Recording) -> float:
    return int(rec.meta.page_size or 4096) / (1 << 20)


def _side_label(side: Side) -> str:
    return f"{side.name}: {side.kernel}, {side.layout}, n={len(side.recordings)}"


def _sides_title(sides: list[Side], what: str) -> str:
    kernels = ", ".join(dict.fromkeys(s.kernel for s in sides))
    layouts = " vs ".join(dict.fromkeys(s.layout for s in sides))
    workloads = ", ".join(dict.fromkeys(s.workload for s in sides))
    return fit_title(f"{what}\nkernel {kernels}; {layouts}; workload: {workloads}")


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_cma_latency_cdf(sides: list[Side]) -> Figure:
    """Empirical CDF of cma_alloc() latency (ms, log scale), all calls of each side pooled."""
    fig = Figure(figsize=FIGSIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_sides_title(sides, "cma_alloc() latency, CDF of all calls"), fontsize=10)
    drawn_range: tuple[float, float] | None = None
    for s in sides:
        lat = compare.latencies_ns(s)
        if lat is None or not len(lat):
            continue
        ms = np.sort(lat) / 1e6
        y = np.arange(1, len(ms) + 1) / len(ms)
        # from 0 at the first call, so that one call is a visible step, not a point;
        # each call marked while there are few enough to tell apart
        ax.step(
            np.r_[ms[0], ms],
            np.r_[0.0, y],
            where="post",
            label=f"{_side_label(s)}, {len(ms)} call{'s' if len(ms) != 1 else ''}",
            linewidth=1.8,
            marker="o" if len(ms) <= 50 else None,
            markevery=list(range(1, len(ms) + 1)) if len(ms) <= 50 else None,
            ms=4,
        )
        lo, hi = drawn_range or (ms[0] / 2, ms[-1] * 2)
        drawn_range = (min(lo, ms[0] / 2), max(hi, ms[-1] * 2))
    if drawn_range is None:
        _empty(ax, "no cma_alloc() calls recorded")
        return fig
    ax.set_xscale("log")
    ax.set_xlim(*drawn_range)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_ylim(0, 1.02)
    for q in (0.5, 0.9, 0.99):
        ax.axhline(q, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of calls")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


#: GFP classes named in the zone x GFP figure at most (the rest are "other classes").
MAX_CLASSES = 10


def df_zone_gfp_sides(sides: list[Side]) -> pd.DataFrame:
    """Mean pages per iteration by (side, zone, gfp), with ``in_cma`` (pages in CMA
    pageblocks or a CMA zone: a part of the zone's pages, not more of them),
    ``cma_eligible`` (``__GFP_MOVABLE``: the page allocator may place it in CMA) and
    ``zone_cma_refused`` (eligible, but not ``__GFP_HIGHMEM`` too: a ZONE_CMA kernel keeps
    it out, the buffer-head class ``GFP_NOFS|__GFP_MOVABLE|...`` among them)."""
    cols = ["side", "zone", "gfp", "in_cma", "cma_eligible", "zone_cma_refused", "pages"]
    frames = []
    for s in sides:
        parts = []
        for rec in s.recordings:
            df = rec.df_page_alloc()
            if df.empty:
                continue
            df["zone"] = df["zone"].astype(str)
            df["in_cma"] = (
                counterfactual.in_logical_cma(df).to_numpy()
                if counterfactual.has_cma(rec)
                else False
            )
            try:
                rule = counterfactual.rule_of(rec)
                flags = df["gfp_flags"].astype("int64")
                df["cma_eligible"] = (flags & rule.movable) != 0
                df["zone_cma_refused"] = df["cma_eligible"] & ~np.array(
                    [rule.admits(v) for v in flags]
                )
            except BadInput:
                df["cma_eligible"] = False
                df["zone_cma_refused"] = False
            parts.append(df[cols[1:]])
        if parts:
            g = pd.concat(parts).groupby(cols[1:-1], observed=True)["pages"].sum()
            frames.append((g / len(s.recordings)).reset_index().assign(side=s.name))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    out = pd.concat(frames, ignore_index=True)[cols]
    return out[out["pages"] > 0].reset_index(drop=True)


def _named_classes(df: pd.DataFrame) -> list[str]:
    """The classes the figure names: the largest overall, the largest in CMA, and the
    CMA-eligible classes a ZONE_CMA kernel refuses (at most :data:`MAX_CLASSES`)."""
    by = df.groupby("gfp")["pages"].sum().sort_values(ascending=False)
    in_cma = df[df["in_cma"]].groupby("gfp")["pages"].sum().sort_values(ascending=False)
    refused = df[df["zone_cma_refused"]].groupby("gfp")["pages"].sum()
    refused = refused.sort_values(ascending=False)
    picked = [*in_cma.index[:3], *refused.index[:3], *by.index[:TOP_GFP]]
    return list(dict.fromkeys(picked))[:MAX_CLASSES]


def plot_zone_gfp_sides(sides: list[Side]) -> Figure:
    """Left: stacked bars per side and zone, MiB per iteration by GFP class. Right: the
    part of those pages in CMA (logical CMA: CMA pageblocks or a CMA zone), by the same
    classes on its own scale: a subset, so it is never stacked onto the zones."""
    fig = Figure(figsize=(8, 7), dpi=100, layout="constrained")
    fig.suptitle(
        _sides_title(sides, "Pages allocated per zone and GFP class (mean per iteration)"),
        fontsize=10,
    )
    df = df_zone_gfp_sides(sides)
    if df.empty or not df["in_cma"].any():
        left, right = fig.add_subplot(), None
    else:
        left, right = fig.subplots(1, 2, width_ratios=[3, 1.3])
    if df.empty:
        _empty(left, "no allocations traced")
        return fig
    named = _named_classes(df)
    df["class"] = df["gfp"].where(df["gfp"].isin(named), "other classes")
    refused = set(df.loc[df["zone_cma_refused"], "gfp"])
    classes = [*named, "other classes"]
    colors = {c: f"C{i % 10}" for i, c in enumerate(named)} | {"other classes": "0.75"}
    page_mib = _page_mib(sides[0].recordings[0])
    zones = sorted(df["zone"].unique(), key=compare.zone_key)

    def stack(ax: Axes, part: pd.DataFrame, bars: list[tuple[str, str]], labels: list[str]) -> None:
        _stack(
            ax,
            part.pivot_table(index=["side", "zone"], columns="class", values="pages", aggfunc="sum")
            .reindex(pd.MultiIndex.from_tuples(bars, names=["side", "zone"]))
            .fillna(0),
            classes,
            colors,
            page_mib,
        )
        ax.set_xticks(range(len(bars)), labels, fontsize=8)

    bars = [
        (s.name, z)
        for z in zones
        for s in sides
        if ((df["side"] == s.name) & (df["zone"] == z)).any()
    ]
    stack(left, df, bars, [f"{s}\n{z}" for s, z in bars])
    left.set_ylabel("MiB allocated per iteration")
    left.set_title("all pages, by zone", fontsize=9)
    cma = df[df["in_cma"]]
    if right is None:
        left.set_title("all pages, by zone (no page in CMA on any side)", fontsize=9)
    else:
        cbars = [(s.name, "CMA") for s in sides]
        # side names wrapped at their hyphens: the narrow panel's labels ran together
        names = ["\n".join(textwrap.wrap(s.name, 11, break_on_hyphens=True)) for s in sides]
        stack(right, cma.assign(zone="CMA"), cbars, names)
        right.set_ylabel("MiB in CMA per iteration")
        right.set_title("of which in CMA pageblocks", fontsize=9)
    shown = [c for c in classes if c in set(df["class"])]
    handles = [
        Patch(
            color=colors[c], label=_short_gfp(c) + (" [ZONE_CMA refuses]" if c in refused else "")
        )
        for c in shown
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=1, frameon=False)
    return fig


def _stack(
    ax: Axes, pivot: pd.DataFrame, classes: list[str], colors: dict[str, str], page_mib: float
) -> None:
    """Bars of ``pivot`` (one row a bar, one column a class, pages) stacked in MiB."""
    bottom = np.zeros(len(pivot))
    for cls in classes:
        if cls not in pivot.columns:
            continue
        vals = pivot[cls].to_numpy() * page_mib
        ax.bar(range(len(pivot)), vals, bottom=bottom, color=colors[cls])
        bottom += vals


def _short_gfp(gfp: str, width: int = 95) -> str:
    return gfp if len(gfp) <= width else gfp[: width - 3] + "..."


def plot_cma_utilisation(sides: list[Side]) -> Figure:
    """Per side, over time: the CMA area's debugfs ``used`` (pages held by cma_alloc(),
    percent of the area) with every cma_alloc() call marked at the size it asked for,
    in percent of its area (o success, x failure), and
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
            any_used = _draw_use(top, rec, color) or any_used
            any_rate = _draw_cma_rate(bottom, rec, color) or any_rate
        if not any_used:
            _empty(top, "no cma_used series")
        else:
            top.set_ylim(0, 105)
        if not any_rate:
            _empty(bottom, "no CMA placement data")
        bottom.set_xlabel("seconds since start")
    axes[0][0].set_ylabel("% of the area: held by\ncma_alloc() (line), asked (marks)", fontsize=8)
    axes[1][0].set_ylabel("placed in CMA\npageblocks (MiB/s)", fontsize=9)
    n = max(len(s.recordings) for s in sides)
    handles = [Line2D([], [], color=f"C{i % 10}", label=f"iteration {i + 1}") for i in range(n)] + [
        Line2D([], [], color="0.3", marker="o", ls="", ms=4, label="call succeeded (at its size)"),
        Line2D([], [], color="0.3", marker="x", ls="", ms=6, label="call failed (at its size)"),
    ]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=min(4, len(handles)))
    return fig


def _draw_use(ax: Axes, rec: Recording, color: str) -> bool:
    """debugfs ``used`` in percent of the area, and each call at the size it asked for;
    whether there was a used series."""
    used = rec.df_cma_used_series()
    drawn = False
    if not used.empty:
        u = used.groupby("t_ns")[["used_pages", "count_pages"]].sum().reset_index()
        pct = u["used_pages"] / u["count_pages"].where(u["count_pages"] > 0) * 100
        ax.plot(u["t_ns"] / 1e9, pct, color=color, linewidth=1.2)
        drawn = True
    calls = df_cma_calls(rec) if "cma" in rec.meta.probes else None
    if calls is not None and len(calls):
        # each call at the size it asked for, in percent of its area
        sizes = {str(a.name): a.count for a in rec.meta.cma_areas}
        y = [
            p / sizes[a] * 100 if sizes.get(a) else np.nan
            for p, a in zip(calls["pages_requested"], calls["area"].astype(str))
        ]
        y = pd.Series(y, index=calls.index)
        ok = calls["success"].astype(bool)
        ax.plot(calls.loc[ok, "start_ns"] / 1e9, y[ok], "o", ms=4, color=color)
        ax.plot(calls.loc[~ok, "start_ns"] / 1e9, y[~ok], "x", ms=6, mew=1.5, color=color)
    return drawn


def _draw_cma_rate(ax: Axes, rec: Recording, color: str) -> bool:
    """MiB/s the page allocator placed in CMA pageblocks, per interval; whether drawn."""
    series = rec.df_page_alloc_series()
    if series.empty or not counterfactual.has_cma(rec):
        return False
    series["zone"] = series["zone"].astype(str)
    cma = series[counterfactual.in_logical_cma(series)]
    g = (
        cma.groupby(["t_start_ns", "t_end_ns"])["pages"]
        .sum()
        .reindex(series.groupby(["t_start_ns", "t_end_ns"]).size().index, fill_value=0)
        .reset_index()
        .sort_values("t_start_ns")
    )
    if not len(g):
        return False
    rate = g["pages"] / ((g["t_end_ns"] - g["t_start_ns"]) / 1e9) * _page_mib(rec)
    edges = [g["t_start_ns"].iloc[0] / 1e9, *(g["t_end_ns"] / 1e9)]
    ax.stairs(rate.to_numpy(), edges, color=color, linewidth=1.2)
    return True


def plot_failure_causes(sides: list[Side]) -> Figure:
    """Pages that blocked cma_alloc() by cause, mean per iteration, per side (from the
    blockers probe's ``cma_failures`` table); failed calls per side when not recorded."""
    fig = Figure(figsize=FIGSIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    # the figure's title, not the axes': the cause labels narrow the axes (a title of
    # TITLE_CHARS was cut at the right)
    fig.suptitle(
        _sides_title(sides, "cma_alloc() failure causes (pages, mean per iteration)"), fontsize=10
    )
    frames = []
    missing = []
    for s in sides:
        parts = [compare.failures_table(r) for r in s.recordings]
        if all(p is None for p in parts):
            missing.append(s.name)
            continue
        got = [p for p in parts if p is not None and not p.empty]
        if got:
            by = pd.concat(got).groupby("cause", observed=True)["pages"].sum() / len(parts)
            frames.append(by.rename(s.name))
        else:  # recorded, nothing blocked: the side is in the legend, its bars 0
            frames.append(pd.Series(dtype=float, name=s.name))
    if not any(len(f) for f in frames):
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
    note_not_recorded(ax, missing)
    return fig


def plot_alloc_rate(sides: list[Side]) -> Figure:
    """Per side (its first iteration with interval data): pages allocated per second and
    zone as traced, with /proc/vmstat's pgalloc_<zone> rate dashed: the check against
    the kernel over time, not only at the end."""
    fig = Figure(figsize=(8, 3.2 + 1.6 * len(sides)), dpi=100, layout="constrained")
    axes = fig.subplots(len(sides), 1, squeeze=False, sharex=True)
    fig.suptitle(
        _sides_title(sides, "Page allocation rate per zone: traced (solid), vmstat (dashed)"),
        fontsize=10,
    )
    for ax, s in zip(axes[:, 0], sides):
        rec = next((r for r in s.recordings if not r.df_page_alloc_series().empty), None)
        if rec is None:
            _empty(ax, f"{s.name}: no interval data (record with -i SECONDS)")
            continue
        which = s.recordings.index(rec) + 1
        ax.set_title(
            f"{s.name}: iteration {which} of {len(s.recordings)}"
            if len(s.recordings) > 1
            else s.name,
            fontsize=9,
        )
        draw_rate(ax, rec)
        ax.set_ylabel("pages per second")
    axes[-1][0].set_xlabel("seconds since start")
    return fig
