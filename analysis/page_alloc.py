"""Page-allocator tables from a recording: per-zone GFP classes and the kernel check.

All functions take a :class:`~cmaprof.analysis.loaded.Recording` and return DataFrames;
pages are base pages (``1 << order`` per allocation).
"""

from __future__ import annotations

import pandas as pd

from cmaprof.analysis.loaded import Recording

ZONE_GFP_COLUMNS = ["node", "zone", "gfp", "order", "migratetype", "cma_area", "pages", "allocs"]


def df_zone_gfp(rec: Recording) -> pd.DataFrame:
    """The full cube: (node, zone, gfp, order, migratetype, cma_area) -> pages, allocs."""
    df = rec.df_page_alloc()
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in ZONE_GFP_COLUMNS})
    keys = ["node", "zone", "gfp", "order", "migratetype", "cma_area"]
    out = (
        df.groupby(keys, observed=True, dropna=False, sort=False)[["pages", "allocs"]]
        .sum()
        .reset_index()
    )
    return out.sort_values(
        ["node", "zone", "pages"], ascending=[True, True, False], ignore_index=True
    )[ZONE_GFP_COLUMNS]


def df_zones(rec: Recording) -> pd.DataFrame:
    """Pages and allocations per (node, zone)."""
    df = rec.df_page_alloc()
    cols = ["node", "zone", "pages", "allocs"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    out = df.groupby(["node", "zone"], observed=True)[["pages", "allocs"]].sum().reset_index()
    return out[cols].sort_values(["node", "zone"], ignore_index=True)


def _dominant(group: pd.DataFrame, col: str) -> str:
    by = group.groupby(col, observed=True)["pages"].sum().sort_values(ascending=False)
    total = by.sum()
    if not total:
        return "-"
    if len(by) == 1:
        return str(by.index[0])
    parts = [f"{k}:{v / total:.0%}" for k, v in by.items() if v / total >= 0.05][:3]
    return ",".join(parts)


def df_gfp_classes(rec: Recording) -> pd.DataFrame:
    """Per (node, zone, gfp): pages, share of the zone, allocs, dominant orders and
    migratetypes (the value alone when it is the only one, else ``value:share`` for
    up to three with at least 5% of the pages)."""
    df = rec.df_page_alloc()
    cols = ["node", "zone", "gfp", "pages", "zone_share", "allocs", "orders", "migratetypes"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    zone_pages = df.groupby(["node", "zone"], observed=True)["pages"].sum()
    rows = []
    for (node, zone, gfp), g in df.groupby(["node", "zone", "gfp"], observed=True):
        pages = int(g["pages"].sum())
        rows.append(
            {
                "node": node,
                "zone": zone,
                "gfp": gfp,
                "pages": pages,
                "zone_share": pages / zone_pages[(node, zone)] if zone_pages[(node, zone)] else 0.0,
                "allocs": int(g["allocs"].sum()),
                "orders": _dominant(g, "order"),
                "migratetypes": _dominant(g, "migratetype"),
            }
        )
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(
        ["node", "zone", "pages"], ascending=[True, True, False], ignore_index=True
    )


def df_check(rec: Recording) -> pd.DataFrame:
    """Traced pages per zone against the recording's own ``pgalloc_<zone>`` deltas.

    ``traced_pages`` comes from mm_page_alloc, ``bulk_pages`` from the bulk allocator's
    fast path (counted by the kernel without an mm_page_alloc event); ``diff_pct`` =
    (traced + bulk - vmstat) / vmstat. Every ``pgalloc_*`` counter of the kernel is a
    row, including zones the probe never saw.
    """
    start, end = rec.vmstat("start"), rec.vmstat("end")
    traced = df_zones(rec).groupby("zone", observed=True)["pages"].sum()
    bulk_df = rec.df_page_alloc_bulk()
    bulk = (
        bulk_df.groupby("zone", observed=True)["pages"].sum()
        if not bulk_df.empty
        else pd.Series(dtype="uint64")
    )
    zones = list(rec.zone_names.values())
    counters = [k for k in end if k.startswith("pgalloc_")]
    by_counter = {f"pgalloc_{z.lower()}": z for z in zones}
    rows = []
    for c in counters:
        zone = by_counter.get(c, c[len("pgalloc_") :])
        vm = end.get(c, 0) - start.get(c, 0)
        t = int(traced.get(zone, 0))
        b = int(bulk.get(zone, 0))
        # undefined (None, never infinite) where the kernel counted 0 and we did not
        diff = (t + b - vm) / vm * 100 if vm else (0.0 if t + b == 0 else None)
        rows.append(
            {
                "zone": zone,
                "traced_pages": t,
                "bulk_pages": b,
                "vmstat_pages": vm,
                "diff_pct": None if diff is None else round(diff, 3),
            }
        )
    for zone in traced.index:
        if f"pgalloc_{str(zone).lower()}" not in counters:
            rows.append(
                {
                    "zone": str(zone),
                    "traced_pages": int(traced[zone]),
                    "bulk_pages": int(bulk.get(zone, 0)),
                    "vmstat_pages": None,
                    "diff_pct": None,
                }
            )
    return pd.DataFrame(
        rows, columns=["zone", "traced_pages", "bulk_pages", "vmstat_pages", "diff_pct"]
    )


def df_failed(rec: Recording) -> pd.DataFrame:
    """Failed allocations per (gfp, order, migratetype): calls and pages asked for."""
    df = rec.df_page_alloc_fail()
    cols = ["gfp", "order", "migratetype", "allocs", "pages"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    return df[cols].sort_values("allocs", ascending=False, ignore_index=True)
