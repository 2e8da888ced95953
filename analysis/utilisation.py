"""CMA utilisation over time: pages held by cma_alloc(), borrowed by ordinary
allocations, and free, per area at every interval sample.

The number the ZONE_CMA debate was about: how much of a CMA area ordinary (movable)
allocations use while cma_alloc() does not need it. From what a recording already has,
sampled together at each interval (same ``t_ns``):

* ``held_pages``: debugfs ``cma/<area>/used`` (``series/cma_used``): bits set in the
  area's bitmap, i.e. pages handed out by cma_alloc() and not released, plus the range
  an in-flight cma_alloc() has reserved while it isolates and migrates;
* ``free_pages``: ``nr_free_cma`` of /proc/vmstat (``series/vmstat``): free pages in CMA
  pageblocks, summed over every area (isolated pageblocks of an in-flight call are not
  counted: the kernel moves their free pages to MIGRATE_ISOLATE);
* ``borrowed_pages`` = ``count_pages - free_pages - held_pages``: pages of the area that
  the page allocator gave to ordinary allocations (movable requests fall back to, or on
  6.1 prefer, CMA pageblocks).

``t_ns`` is the tick at which ``cmaprof record`` took the sample; it reads /proc/vmstat
and then debugfs after the page_alloc cube (which can take seconds under TCG), so a
sample describes some moment before the next tick, and ``used`` and ``nr_free_cma`` are
not read at the same instant (a cma_alloc() between the two reads counts in one only).

Per-area free pages exist only as that global counter, so ``free_pages`` and
``borrowed_pages`` are given per area only when the recording has exactly one CMA area;
with several they are null (a new collector field would be needed: per-zone
``nr_free_cma`` from /proc/zoneinfo at every interval, which splits areas lying in
different zones, or per-area free counts from a probe).
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cmaprof.analysis import layout

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cmaprof.analysis.loaded import Recording

WIDTH = 80
COLUMNS = ["t_ns", "area", "count_pages", "held_pages", "borrowed_pages", "free_pages"]


def df_cma_utilisation(rec: Recording) -> pd.DataFrame:
    """Per CMA area and interval sample (``t_ns`` since the recording start): the area's
    ``count_pages``, ``held_pages`` (debugfs used), ``borrowed_pages`` and ``free_pages``
    (nr_free_cma; both null with more than one area, see the module docstring)."""
    used = rec.df_cma_used_series()
    if used.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in COLUMNS}).assign(
            area=pd.Series(dtype="object")
        )[COLUMNS]
    vm = rec.df_vmstat_series()
    free = (
        vm[vm["counter"] == "nr_free_cma"].set_index("t_ns")["value"]
        if not vm.empty
        else pd.Series(dtype="int64")
    )
    areas = {a.name for a in layout.cma_areas_of(rec)} | set(used["area"])
    one = len(areas) == 1
    df = used.rename(columns={"used_pages": "held_pages"})[
        ["t_ns", "area", "count_pages", "held_pages"]
    ].copy()
    f = df["t_ns"].map(free) if one else pd.Series(pd.NA, index=df.index)
    df["free_pages"] = pd.array(f, dtype="Int64")
    df["borrowed_pages"] = (
        df["count_pages"].astype("Int64") - df["free_pages"] - df["held_pages"].astype("Int64")
    )
    return df.sort_values(["area", "t_ns"], kind="stable").reset_index(drop=True)[COLUMNS]


def table_cma_utilisation(rec: Recording) -> str:
    """Per area: held, borrowed and free pages over the interval samples (median and
    extreme), <= 80 columns; "" without samples."""
    df = df_cma_utilisation(rec)
    if df.empty:
        return ""
    out = [
        "CMA utilisation per interval sample (pages): held = debugfs used (by",
        "cma_alloc), free = nr_free_cma, borrowed = area - free - held (by ordinary",
        "allocations)",
        f"{'':<26} {'held':>15} {'borrowed':>17} {'free':>16}",
        (
            f"{'area':<10} {'samples':>7} {'count':>7} {'p50':>7} {'max':>7} {'p50':>8} "
            f"{'max':>8} {'p50':>8} {'min':>7}"
        ),
    ]
    negative = 0
    for area, g in df.groupby("area", sort=True):
        b, fr = g["borrowed_pages"].dropna().astype("int64"), g["free_pages"].dropna()
        negative += int((b < 0).sum())
        held = g["held_pages"]
        cells = (
            f"{b.median():>8.0f} {int(b.max()):>8} {fr.astype('int64').median():>8.0f} "
            f"{int(fr.min()):>7}"
            if len(b)
            else f"{'-':>8} {'-':>8} {'-':>8} {'-':>7}"
        )
        out.append(
            f"{str(area)[:10]:<10} {len(g):>7} {int(g['count_pages'].max()):>7} "
            f"{held.median():>7.0f} {int(held.max()):>7} " + cells
        )
    notes = []
    if negative:
        notes.append(
            f"note: {negative} samples with held + free > area (borrowed < 0): held "
            "(debugfs) and free (/proc/vmstat) are not read at the same instant, and "
            "cma_alloc() calls between the two reads (or in flight) count in one only"
        )
    areas = {a.name for a in layout.cma_areas_of(rec)} | set(df["area"])
    if df["free_pages"].isna().all() and len(areas) > 1:
        notes.append(
            "note: free and borrowed need per-area free pages; the recording has only "
            "the global nr_free_cma (several areas)"
        )
    for n in notes:
        out.extend(textwrap.wrap(n, WIDTH, subsequent_indent="  "))
    return "\n".join(out)


def plot_cma_held_borrowed_free(rec: Recording) -> Figure:
    """Stacked, per area over time: pages held by cma_alloc(), borrowed by ordinary
    allocations, free (MiB), from :func:`df_cma_utilisation`."""
    from matplotlib.figure import Figure  # here: `cmaprof report` never imports matplotlib

    df = df_cma_utilisation(rec)
    areas = sorted(set(df["area"])) if not df.empty else []
    fig = Figure(figsize=(8, 3 + 1.5 * max(0, len(areas) - 1)), dpi=100, layout="constrained")
    axes = fig.subplots(max(1, len(areas)), 1, squeeze=False, sharex=True)
    fig.suptitle(
        f"CMA area use over time: {rec.label} (kernel {rec.meta.kernel_release})",
        fontsize=10,
    )
    mib = int(rec.meta.page_size or 4096) / (1 << 20)
    if not areas:
        ax = axes[0][0]
        ax.text(0.5, 0.5, "no cma_used series", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    for ax, area in zip((a[0] for a in axes), areas, strict=True):
        g = df[df["area"] == area]
        t = g["t_ns"].to_numpy() / 1e9
        held = g["held_pages"].to_numpy(dtype=float) * mib
        if g["free_pages"].notna().all():
            borrowed = g["borrowed_pages"].to_numpy(dtype=float).clip(min=0) * mib
            free = g["free_pages"].to_numpy(dtype=float) * mib
            ax.stackplot(
                t,
                held,
                borrowed,
                free,
                labels=["held by cma_alloc", "borrowed", "free"],
                colors=["C3", "C1", "C2"],
                step="post",
            )
        else:
            ax.stackplot(t, held, labels=["held by cma_alloc"], colors=["C3"], step="post")
            ax.text(
                0.99,
                0.95,
                "free/borrowed: no per-area free count",
                ha="right",
                va="top",
                transform=ax.transAxes,
                fontsize=8,
            )
        ax.axhline(float(g["count_pages"].max()) * mib, color="k", linewidth=0.8)
        ax.set_ylabel(f"{area} (MiB)", fontsize=9)
        ax.set_ylim(0, float(np.nanmax(g["count_pages"].to_numpy(dtype=float))) * mib * 1.05)
        ax.legend(fontsize=8, loc="upper left")
    axes[-1][0].set_xlabel("seconds since start")
    return fig
