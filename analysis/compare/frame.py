"""The long comparison table (:func:`df_compare`: one row per metric, statistic and side,
with the per-iteration values and the test) and the change against the baseline."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from cmaprof.analysis import stats
from cmaprof.analysis.compare.metrics import (
    IterationMetrics,
    Key,
    gfp_label,
    latencies_ns,
    metrics_copy,
    zone_gfp_label,
)
from cmaprof.analysis.compare.sides import (
    LOGICAL_CMA,
    QUANTILES,
    SECTIONS,
    TOP_GFP,
    ZONE_ORDER,
    Side,
)
from cmaprof.errors import BadInput

#: Statistics of each metric over a side's iterations, in mmtests compare-kernels order.
STATS = ["Amean", "Stddev", "CoeffVar", "Min", "Max"]


#: Latency statistics over all cma_alloc() calls of a side, pooled.
LATENCY_STATS = [*STATS, *QUANTILES]


#: A relative change beyond this (or on a baseline <= 0) is shown as an absolute difference.
MAX_PCT = 1000.0


COLUMNS = [
    "section",
    "metric",
    "unit",
    "stat",
    "direction",
    "side",
    "n",
    "value",
    "values",
    "change_pct",
    "change_abs",
    "change_shown",
    "test",
    "p_value",
    "ci_low",
    "ci_high",
    "significant",
    "note",
]


_LOWER_VMSTAT = ("pgmigrate_fail", "compact_fail", "compact_stall", "cma_alloc_fail")


def direction(sec: str, metric: str) -> str | None:
    """ "lower" or "higher" where one direction is better for a metric, else None.

    Page counts per zone or GFP class have no better direction (they say where memory
    went); failures, retries, lost events and latency are better lower; the success
    rate of cma_alloc() higher.
    """
    if sec == "cma_alloc":
        if metric == "success rate":
            return "higher"
        if metric in ("failed", "busy retries", "pages failed to migrate", "latency"):
            return "lower"
    if sec in ("failures", "lost"):
        return "lower"
    if sec == "migrate" and metric.endswith(" failed"):
        return "lower"
    if sec == "vmstat" and (metric in _LOWER_VMSTAT or metric.endswith("/alloc_pages_fail")):
        return "lower"
    return None


def zone_key(z: str) -> tuple[int, str]:
    return (ZONE_ORDER.index(z) if z in ZONE_ORDER else len(ZONE_ORDER), z)


def _ordered_keys(all_keys: list[Key], sides_vals: list[list[dict[Key, float]]]) -> list[Key]:
    """Metric order: sections in SECTIONS order; zones in kernel order, logical CMA
    last; GFP rows by pages (largest first) within a zone, the top ones only."""

    def weight(k: Key) -> float:
        return max(
            (float(np.mean([it.get(k, 0.0) for it in its])) for its in sides_vals if its),
            default=0.0,
        )

    out: list[Key] = []
    by_sec: dict[str, list[Key]] = {}
    for k in all_keys:
        by_sec.setdefault(k[0], []).append(k)
    for sec in SECTIONS:
        keys = by_sec.get(sec, [])
        if sec == "zones":
            keys = sorted(keys, key=lambda k: (k[1] == LOGICAL_CMA, zone_key(k[1])))
        elif sec == "zone_gfp":
            zones = sorted(
                {k[1].split("\x00")[0] for k in keys},
                key=lambda z: (z == LOGICAL_CMA, zone_key(z)),
            )
            keys = [
                k
                for z in zones
                for k in sorted(
                    (k for k in keys if k[1].split("\x00")[0] == z), key=lambda k: -weight(k)
                )
            ]
        elif sec in ("cma_gfp", "failures"):
            keys = sorted(keys, key=lambda k: -weight(k))
        elif sec == "counterfactual":
            head = [k for k in keys if not k[1].startswith("refused: ")]
            keys = head + sorted(
                (k for k in keys if k[1].startswith("refused: ")), key=lambda k: -weight(k)
            )
        out.extend(keys)
    return out


def change(base: float | None, other: float | None) -> tuple[float | None, float | None, str]:
    """(relative change in %, absolute difference, which one the text shows).

    The relative change is None on a zero baseline (undefined, never infinite); the text
    shows the absolute difference ("abs") where the baseline is <= 0 or the relative
    change is beyond :data:`MAX_PCT` (``+120050%`` of 51 pages says less than ``+61826``).
    """
    if base is None or other is None or math.isnan(base) or math.isnan(other):
        return None, None, ""
    diff = other - base
    pct = diff / abs(base) * 100 if base != 0 else None
    if other == base:
        return (0.0 if pct is not None else None), 0.0, "pct"
    if base <= 0 or pct is None or abs(pct) > MAX_PCT:
        return pct, diff, "abs"
    return pct, diff, "pct"


def _describe(a: np.ndarray, with_quantiles: bool) -> dict[str, float | None]:
    """mmtests' statistics of a sample (pandas: sample standard deviation, ddof=1)."""
    s = pd.Series(a, dtype=float)
    mean = float(s.mean())
    std = float(s.std(ddof=1)) if len(s) > 1 else None
    out: dict[str, float | None] = {
        "Amean": mean,
        "Stddev": std,
        "CoeffVar": (std / abs(mean) * 100) if std is not None and mean != 0 else None,
        "Min": float(s.min()),
        "Max": float(s.max()),
    }
    if with_quantiles:
        for label, q in QUANTILES.items():
            out[label] = float(s.quantile(q))
    return out


def _empty_row(sec: str, metric: str, unit: str, stat: str, side: str) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(
        section=sec,
        metric=metric,
        unit=unit,
        stat=stat,
        direction=direction(sec, metric),
        side=side,
        n=0,
        significant=False,
        test="none",
    )
    return row


def gfp_order(side: Side) -> dict[str, int] | None:
    """Position of each GFP name in the side's kernel table (``show_gfp_flags()`` in the
    ``mm_page_alloc`` print fmt), None when the recording cannot say."""
    for rec in side.recordings:
        try:
            return {name: i for i, (_, name) in enumerate(rec.gfp_table.entries)}
        except BadInput:
            continue
    return None


def _canon_keys(metrics: list[list[IterationMetrics]], order: dict[str, int] | None) -> None:
    """Rewrite every GFP string in the metric keys into the baseline kernel's order, so
    that one class is one row even where two kernels print its flags differently."""
    if order is None:
        return

    def canon(k: Key) -> Key:
        sec, metric, unit = k
        if sec == "zone_gfp":
            zone, _, gfp = metric.partition("\x00")
            return (sec, zone_gfp_label(zone, gfp_label(gfp, order)), unit)
        if sec == "cma_gfp":
            return (sec, gfp_label(metric, order), unit)
        if sec == "counterfactual" and metric.startswith("refused: "):
            return (sec, "refused: " + gfp_label(metric[len("refused: ") :], order), unit)
        return k

    for ms in metrics:
        for m in ms:
            new: dict[Key, float] = {}
            for k, v in m.values.items():
                c = canon(k)
                new[c] = new.get(c, 0.0) + v
            m.values = new


def df_compare(sides: list[Side], alpha: float = stats.ALPHA) -> pd.DataFrame:
    """The long comparison table: one row per (metric, statistic, side); the first side
    is the baseline.

    ``stat`` is one of :data:`STATS` over the side's per-iteration values (``values``,
    on the Amean row), or for the ``latency`` metric one of :data:`LATENCY_STATS` over
    all the side's cma_alloc() calls pooled. ``change_pct`` is relative to the baseline's
    same statistic (null on a zero baseline), ``change_abs`` the difference,
    ``change_shown`` which of the two the text prints. ``test`` is "mwu" (Amean rows),
    "bootstrap" (latency percentiles) or "none" (``note`` says why); ``significant`` only
    when the test rejected equality at ``alpha``.
    """
    if not sides:
        raise BadInput("compare needs at least one side")
    metrics = [[metrics_copy(r) for r in s.recordings] for s in sides]
    _canon_keys(metrics, gfp_order(sides[0]))
    sides_vals = [[m.values for m in ms] for ms in metrics]
    seen: dict[Key, None] = {}
    for ms in metrics:
        for m in ms:
            seen.update(dict.fromkeys(m.values))
    keys = _ordered_keys(list(seen), sides_vals)
    keys = _top_gfp(keys, sides_vals)

    rows: list[dict[str, Any]] = []
    recorded = {
        sec: any(sec not in m.not_recorded for ms in metrics for m in ms) for sec in SECTIONS
    }
    for k in keys:
        sec, metric, unit = k
        label = metric.replace("\x00", ": ")
        per_side = [_side_values(metrics[si], k) for si in range(len(sides))]
        rows += _stat_rows(sides, (sec, label, unit), per_side, alpha)
        if sec == "cma_alloc" and metric == "pages failed to migrate":
            rows.extend(_latency_rows(sides, alpha))
    if not any(r["section"] == "cma_alloc" for r in rows):
        rows.extend(_latency_rows(sides, alpha))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["recorded"] = recorded
    return out


def _side_values(metrics: list[IterationMetrics], k: Key) -> list[float] | None:
    """The per-iteration values of ``k`` on one side; 0 where the iteration recorded
    the section (and, for zone x GFP, the zone) but saw nothing; None without any."""
    out = []
    for m in metrics:
        if k in m.values:
            out.append(m.values[k])
        elif k[0] in m.zero_sections and k[0] not in m.not_recorded:
            zone = k[1].split("\x00")[0] if k[0] == "zone_gfp" else None
            if zone is None or ("zones", zone, "pages") in m.values:
                out.append(0.0)
    return out or None


def _stat_rows(
    sides: list[Side],
    what: tuple[str, str, str],
    per_side: list[list[float] | None],
    alpha: float,
) -> list[dict[str, Any]]:
    """The rows of one metric ``what`` (section, label, unit): every statistic of
    :data:`STATS` for every side, with the change and (Amean) the test."""
    sec, label, unit = what
    rows = []
    described = [_describe(np.asarray(v, dtype=float), False) if v else None for v in per_side]
    for stat in STATS:
        for si, s in enumerate(sides):
            row = _empty_row(sec, label, unit, stat, s.name)
            vals, d = per_side[si], described[si]
            if vals and d is not None:
                row.update(n=len(vals), value=d[stat])
                if stat == "Amean":
                    row["values"] = [float(x) for x in vals]
                base = described[0]
                if base is not None:
                    pct, diff, shown = change(base[stat], d[stat])
                    row.update(change_pct=pct, change_abs=diff, change_shown=shown)
                if si and stat == "Amean" and per_side[0]:
                    res = stats.mwu(per_side[0], vals, alpha)
                    row.update(
                        test=res.test,
                        p_value=res.p_value,
                        significant=res.significant,
                        note=res.reason,
                    )
            rows.append(row)
    return rows


def _top_gfp(keys: list[Key], sides_vals: list[list[dict[Key, float]]]) -> list[Key]:
    """Keep TOP_GFP GFP rows per zone; fold the others into "(other classes)" values."""
    out: list[Key] = []
    count: dict[str, int] = {}
    for k in keys:
        if k[0] != "zone_gfp":
            out.append(k)
            continue
        zone = k[1].split("\x00")[0]
        count[zone] = count.get(zone, 0) + 1
        if count[zone] <= TOP_GFP:
            out.append(k)
            continue
        other: Key = ("zone_gfp", zone_gfp_label(zone, "(other classes)"), "pages")
        for its in sides_vals:
            for it in its:
                if k in it:
                    it[other] = it.get(other, 0.0) + it[k]
        if count[zone] == TOP_GFP + 1:
            out.append(other)
    return out


def _latency_rows(sides: list[Side], alpha: float) -> list[dict[str, Any]]:
    """Rows of the ``latency`` metric (us): statistics over all calls of a side."""
    lats = [latencies_ns(s) for s in sides]
    if all(x is None for x in lats):
        return []
    us = [lat / 1e3 if lat is not None and len(lat) else None for lat in lats]
    described = [_describe(u, True) if u is not None else None for u in us]
    rows = []
    for stat in LATENCY_STATS:
        for si, s in enumerate(sides):
            row = _empty_row("cma_alloc", "latency", "us", stat, s.name)
            u, d = us[si], described[si]
            if u is None or d is None:
                rows.append(row)
                continue
            row.update(n=len(u), value=d[stat])
            base, bu = described[0], us[0]
            if base is not None:
                pct, diff, shown = change(base[stat], d[stat])
                row.update(change_pct=pct, change_abs=diff, change_shown=shown)
            if si and bu is not None and stat in QUANTILES:
                res = stats.bootstrap_quantile_diff(bu, u, QUANTILES[stat], alpha)
                row.update(
                    test=res.test,
                    significant=res.significant,
                    note=res.reason,
                    ci_low=res.ci[0] if res.ci else None,
                    ci_high=res.ci[1] if res.ci else None,
                )
            rows.append(row)
    return rows
