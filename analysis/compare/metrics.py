"""The scalars of one iteration that the comparison shows (:func:`iteration_metrics`),
section by section, the pooled cma_alloc() latencies of a side, and :func:`check_sides`
(which refuses or warns on sides that cannot be compared)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cmaprof.analysis import counterfactual
from cmaprof.analysis.cma import df_cma_calls
from cmaprof.analysis.compare.sides import LOGICAL_CMA, VMSTAT_PREFIXES, Side
from cmaprof.analysis.loaded import Recording
from cmaprof.analysis.migrate import df_migrate
from cmaprof.errors import BadInput

#: Key of a per-iteration metric: (section, metric label, unit).
Key = tuple[str, str, str]


@dataclass
class IterationMetrics:
    """The per-iteration scalars of one recording.

    :param values: metric -> value
    :param zero_sections: sections in which a metric this recording lacks is 0 (the data
        source exists, the class simply did not occur), others show ``-``
    :param not_recorded: sections the recording has no data for at all
    """

    values: dict[Key, float] = field(default_factory=dict)
    zero_sections: set[str] = field(default_factory=set)
    not_recorded: set[str] = field(default_factory=set)


def gfp_label(gfp: str, order: dict[str, int] | None = None) -> str:
    """A GFP string in one spelling for every side: the names in the order of ``order``
    (the baseline kernel's ``show_gfp_flags()`` table, :func:`gfp_order`), names that
    table lacks after them as printed. 6.1 prints ``__GFP_COMP|__GFP_ZERO`` where 6.18
    prints ``__GFP_ZERO|__GFP_COMP``; with one kernel this is the kernel's own string,
    the one ``cmaprof report`` prints. Without ``order`` the string is kept."""
    if not order:
        return gfp
    names = gfp.split("|")
    return "|".join(sorted(names, key=lambda n: order.get(n, len(order))))


def zone_gfp_label(zone: str, gfp: str) -> str:
    return f"{zone}\x00{gfp}"


def _has_cma_probe(rec: Recording) -> bool:
    return "cma" in rec.meta.probes


def failures_table(rec: Recording) -> pd.DataFrame | None:
    """Engineer B's ``cma_failures`` table (area, cause, pages, events), None if not recorded."""
    fn = getattr(rec, "df_cma_failures", None)
    recorded = "blockers" in rec.meta.probes or any(
        (rec.path / f"tables/{t}.parquet").exists() for t in ("cma_failures", "cma_blockers")
    )
    if fn is None or not recorded:
        return None
    df = fn()
    return df if isinstance(df, pd.DataFrame) else None


def iteration_metrics(rec: Recording) -> IterationMetrics:
    """Every per-iteration scalar of ``rec`` that the comparison shows."""
    m = IterationMetrics()
    _zones_metrics(rec, m)
    _counterfactual_metrics(rec, m)
    _cma_alloc_metrics(rec, m)
    _failures_metrics(rec, m)
    _migrate_metrics(rec, m)
    _vmstat_metrics(rec, m)
    _lost_metrics(rec, m)
    return m


def _zones_metrics(rec: Recording, m: IterationMetrics) -> None:
    """Pages per zone, zone x GFP and logical CMA."""
    v = m.values
    df = rec.df_page_alloc()
    zones = list(rec.zone_names.values())
    cma_known = counterfactual.has_cma(rec)
    for z in zones:
        v[("zones", z, "pages")] = 0.0
    if cma_known:
        v[("zones", LOGICAL_CMA, "pages")] = 0.0
    m.zero_sections.update({"zone_gfp", "cma_gfp", "migrate", "failures"})
    if not df.empty:
        df["zone"] = df["zone"].astype(str)
        for z, pages in df.groupby("zone")["pages"].sum().items():
            v[("zones", str(z), "pages")] = float(pages)
        for (z, gfp), pages in df.groupby(["zone", "gfp"])["pages"].sum().items():
            v[("zone_gfp", zone_gfp_label(str(z), str(gfp)), "pages")] = float(pages)
        if cma_known:
            cma = df[counterfactual.in_logical_cma(df)]
            v[("zones", LOGICAL_CMA, "pages")] = float(cma["pages"].sum())
            for gfp, pages in cma.groupby("gfp")["pages"].sum().items():
                v[("cma_gfp", str(gfp), "pages")] = float(pages)
                v[("zone_gfp", zone_gfp_label(LOGICAL_CMA, str(gfp)), "pages")] = float(pages)
    if not cma_known:
        m.not_recorded.add("cma_gfp")


def _counterfactual_metrics(rec: Recording, m: IterationMetrics) -> None:
    """The ZONE_CMA counterfactual."""
    v = m.values
    cma_known = counterfactual.has_cma(rec)
    # counterfactual
    cf = counterfactual.summary(rec) if cma_known else None
    if cf is not None:
        m.zero_sections.add("counterfactual")
        v[("counterfactual", "pages placed in CMA", "pages")] = float(cf["cma_pages"])
        v[("counterfactual", "refused by ZONE_CMA rule", "pages")] = float(cf["refused_pages"])
        v[("counterfactual", "predicted loss of CMA use", "%")] = float(cf["refused_pct"])
        cdf = counterfactual.df_counterfactual(rec)
        for r in cdf[cdf["refused"].astype(bool)].itertuples(index=False):
            v[("counterfactual", f"refused: {r.gfp}", "pages")] = float(r.pages)
    else:
        m.not_recorded.add("counterfactual")


def _cma_alloc_metrics(rec: Recording, m: IterationMetrics) -> None:
    """Cma_alloc() calls."""
    v = m.values
    # cma_alloc
    if _has_cma_probe(rec):
        calls = df_cma_calls(rec)
        n = len(calls)
        ok = int(calls["success"].sum()) if n else 0
        v[("cma_alloc", "calls", "calls")] = float(n)
        v[("cma_alloc", "succeeded", "calls")] = float(ok)
        v[("cma_alloc", "failed", "calls")] = float(n - ok)
        if n:
            v[("cma_alloc", "success rate", "%")] = ok / n * 100
        ok_calls = calls[calls["success"]] if n else calls
        v[("cma_alloc", "pages allocated", "pages")] = float(
            ok_calls["pages_requested"].sum() if n else 0
        )
        v[("cma_alloc", "busy retries", "retries")] = float(calls["busy_retries"].sum() if n else 0)
        v[("cma_alloc", "pages migrated", "pages")] = float(
            calls["migrate_succeeded"].sum() if n else 0
        )
        v[("cma_alloc", "pages failed to migrate", "pages")] = float(
            calls["migrate_failed"].sum() if n else 0
        )
    else:
        m.not_recorded.add("cma_alloc")


def _failures_metrics(rec: Recording, m: IterationMetrics) -> None:
    """Failure causes (engineer B's table)."""
    v = m.values
    # failure causes (engineer B's table)
    fail = failures_table(rec)
    if fail is None:
        m.not_recorded.add("failures")
    elif not fail.empty:
        # pages are distinct pfns per stage; a page seen at two stages is counted in both
        keys = ["cause", "stage"] if "stage" in fail else ["cause"]
        for key, pages in fail.groupby(keys, observed=True)["pages"].sum().items():
            parts = key if isinstance(key, tuple) else (key,)
            label = f"{parts[0]} ({parts[1]})" if len(parts) > 1 else str(parts[0])
            v[("failures", label, "pages")] = float(pages)


def _migrate_metrics(rec: Recording, m: IterationMetrics) -> None:
    """Migrations per reason."""
    v = m.values
    # migrations
    if "migrate" in rec.meta.probes:
        mig = df_migrate(rec)
        if not mig.empty:
            for reason, g in mig.groupby("reason", observed=True):
                v[("migrate", f"{reason} succeeded", "pages")] = float(g["succeeded"].sum())
                v[("migrate", f"{reason} failed", "pages")] = float(g["failed"].sum())
    else:
        m.not_recorded.add("migrate")


def _vmstat_metrics(rec: Recording, m: IterationMetrics) -> None:
    """Vmstat and CMA sysfs deltas."""
    v = m.values
    # vmstat and CMA sysfs deltas: every counter of interest the kernel has
    start, end = rec.vmstat("start"), rec.vmstat("end")
    for c in end:
        if c.startswith(VMSTAT_PREFIXES) or "cma" in c:
            v[("vmstat", c, "delta")] = float(end[c] - start.get(c, 0))
    for area in rec.cma_area_names:
        for what in ("success", "fail"):
            rel = f"cma/{area}/alloc_pages_{what}"
            k0, k1 = rec.sys_counter("start", rel), rec.sys_counter("end", rel)
            if k0 is not None and k1 is not None:
                v[("vmstat", f"{area}/alloc_pages_{what}", "pages")] = float(k1 - k0)


def _lost_metrics(rec: Recording, m: IterationMetrics) -> None:
    """Lost and dropped events."""
    v = m.values
    # lost and dropped
    lost = rec.meta.lost
    if rec.meta.has("lost") and isinstance(lost, dict):
        v[("lost", "lost events", "events")] = float(sum(int(x) for x in lost.values()))
    dropped = rec.meta.dropped_counts
    if dropped:
        v[("lost", "dropped (all causes)", "events")] = float(sum(int(x) for x in dropped.values()))
        for k, x in dropped.items():
            if int(x):
                v[("lost", f"dropped: {k}", "events")] = float(x)


_CACHE: weakref.WeakKeyDictionary[Recording, IterationMetrics] = weakref.WeakKeyDictionary()


def metrics_copy(rec: Recording) -> IterationMetrics:
    """:func:`iteration_metrics`, computed once per loaded recording; a copy that the
    caller may change."""
    m = _CACHE.get(rec)
    if m is None:
        m = _CACHE[rec] = iteration_metrics(rec)
    return IterationMetrics(dict(m.values), set(m.zero_sections), set(m.not_recorded))


def latencies_ns(side: Side) -> np.ndarray | None:
    """cma_alloc() latencies of all calls of all iterations, or None without the probe."""
    parts = []
    seen = False
    for rec in side.recordings:
        if not _has_cma_probe(rec):
            continue
        seen = True
        calls = df_cma_calls(rec)
        if len(calls):
            parts.append(calls["latency_ns"].to_numpy(dtype=float))
    if not seen:
        return None
    return np.concatenate(parts) if parts else np.array([], dtype=float)


def check_sides(sides: list[Side]) -> list[str]:
    """Refuse what cannot be compared; return warnings about what should not be.

    :raises BadInput: fewer than two sides, or one path given twice
    :returns: one warning per way the sides differ besides what is compared (kernel,
        CMA layout, workload), and one when two sides hold the same numbers
    """
    if len(sides) < 2:
        only = sides[0].path if sides else "nothing"
        raise BadInput(
            f"compare needs a baseline and at least one other side, got only {only}; "
            f"give two (cmaprof compare BASE OTHER), or see one recording with "
            f"`cmaprof report {only}`"
        )
    paths = [s.path.resolve() for s in sides]
    for i, p in enumerate(paths):
        if p in paths[:i]:
            raise BadInput(
                f"{sides[i].path} is given twice: a side compared with itself shows no "
                f"change; give two different recordings or directories"
            )
    warnings = []
    for what in ("kernel", "layout", "workload"):
        values = [getattr(s, what) for s in sides]
        if len(set(values)) > 1:
            warnings.append(
                f"sides differ in {what}: "
                + "; ".join(f"{s.name} {v}" for s, v in zip(sides, values))
            )
    if len(warnings) > 1:
        warnings.append(
            "more than one of kernel, layout and workload differ: a change cannot be "
            "put down to one of them"
        )
    base = [metrics_copy(r).values for r in sides[0].recordings]
    for s in sides[1:]:
        if [metrics_copy(r).values for r in s.recordings] == base:
            warnings.append(
                f"{s.name} has the same numbers as {sides[0].name}: the same recordings "
                f"twice? every change will be 0"
            )
    return warnings
