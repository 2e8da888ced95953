"""Compare sides (kernels, layouts), each a recording or a directory of iterations.

A *side* is what one column of ``cmaprof compare`` shows: one recording, or a directory of
recordings taken as iterations of the same run (:func:`load_side`). The table has the
shape of mmtests' compare-kernels, which linux-mm readers know: per metric the Amean,
Stddev, CoeffVar, Min and Max over the side's iterations (latency: those and p50/p90/p99
over all of the side's cma_alloc() calls pooled), the baseline (the first side) first,
each other side with its change against the baseline's same statistic (an absolute
difference where the baseline is <= 0 or the change beyond +-1000%), and a ``*`` only
where a test says the difference is significant (:mod:`cmaprof.analysis.stats`:
Mann-Whitney U on per-iteration values, a bootstrap interval for percentiles). Metrics
with a better direction (failures, latency, lost events) say which.

Kernels need not have the same zones: rows are the union over all sides and a side whose
kernel lacks a zone, counter or probe shows ``-``. The **logical CMA** row lines up CMA
memory however the kernel lays it out: pages in CMA pageblocks inside DMA32/Normal/
Movable (``cma_area`` from the pfn) on one kernel, pages in a zone named CMA on another.
Those pages are also counted in their zone's row. GFP classes are spelled in the
baseline kernel's flag order (:func:`gfp_label`).

:func:`check_sides` refuses one side or one path twice and warns where the sides differ
in kernel, layout or workload. :func:`df_compare` gives the long table (one row per
metric, statistic and side, with the per-iteration values and the test) that
``--format json|csv`` prints; :func:`table_compare` the text.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmaprof.analysis import counterfactual, stats
from cmaprof.analysis.cma import df_cma_calls
from cmaprof.analysis.loaded import Recording, load_many
from cmaprof.analysis.migrate import df_migrate
from cmaprof.errors import BadInput
from cmaprof.kernel import formats

WIDTH = 80
LOGICAL_CMA = "logical CMA"
#: Zone order for the union of rows (others follow in order of appearance).
ZONE_ORDER = ["DMA", "DMA32", "Normal", "HighMem", "Movable", "CMA", "Device"]
#: GFP classes shown per zone (the rest are summed into one row).
TOP_GFP = 5
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
#: /proc/vmstat counters whose deltas are compared (prefixes), plus any with "cma".
VMSTAT_PREFIXES = ("pgalloc_", "pgmigrate_", "compact_stall", "compact_fail", "compact_success")

SECTIONS = {
    "zones": "Pages allocated per zone (logical CMA: CMA pageblocks or zone CMA)",
    "zone_gfp": "Pages per zone and GFP class (flags in the baseline kernel's order)",
    "cma_gfp": "GFP classes landing in CMA (logical CMA)",
    "counterfactual": "ZONE_CMA counterfactual: CMA pages a ZONE_CMA kernel refuses "
    "(__GFP_MOVABLE without __GFP_HIGHMEM)",
    "cma_alloc": "cma_alloc() calls (latency over all calls of a side, pooled)",
    "failures": "cma_alloc() failure causes (pages)",
    "migrate": "migrate_pages() by reason (pages)",
    "vmstat": "/proc/vmstat and CMA sysfs deltas",
    "lost": "Lost and dropped events",
}


@dataclass
class Side:
    """One column: recordings taken as iterations of the same run.

    :param path: what the user named (a recording or a directory of them)
    :param recordings: the iterations, in directory order
    """

    path: Path
    recordings: list[Recording]

    @property
    def name(self) -> str:
        return self.path.resolve().name or str(self.path)

    @property
    def kernel(self) -> str:
        ks = sorted({str(r.meta.kernel_release) for r in self.recordings})
        return ",".join(ks)

    @property
    def layout(self) -> str:
        ls = sorted({layout_of(r) for r in self.recordings})
        return ",".join(ls)

    @property
    def workload(self) -> str:
        ws = sorted({workload_of(r) for r in self.recordings})
        return ",".join(ws)

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.recordings)} recording(s), kernel {self.kernel}, "
            f"{self.layout}, workload: {self.workload}"
        )


def layout_of(rec: Recording) -> str:
    """Where the recording's CMA memory is: "ZONE_CMA", "CMA in <zone>" or "no CMA"."""
    if counterfactual.CMA_ZONE in rec.zone_names.values():
        return "ZONE_CMA"
    zones = sorted({str(z.name) for z in rec.meta.zones if (z.cma or 0) > 0})
    if zones:
        return "CMA in " + "+".join(zones)
    return "CMA area" if rec.meta.cma_areas else "no CMA"


def workload_of(rec: Recording) -> str:
    """The recorded command, shortened (program names without directories)."""
    if rec.meta.label:
        return str(rec.meta.label)
    cmd = [str(c) for c in rec.meta.command or []]
    if not cmd:
        return "system-wide"
    if len(cmd) > 2 and cmd[1] == "-m":  # python -m cmaprof ...
        cmd = cmd[2:]
    words = [c.rsplit("/", 1)[-1] if c.startswith("/") or i == 0 else c for i, c in enumerate(cmd)]
    return textwrap.shorten(" ".join(words), 40, placeholder="...")


def load_side(path: str | Path) -> Side:
    """A recording, or a directory whose subdirectories are recordings (iterations)."""
    p = Path(path)
    return Side(p, load_many([p]))


# --------------------------------------------------------------------------- extraction

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


def _zone_gfp_label(zone: str, gfp: str) -> str:
    return f"{zone}\x00{gfp}"


def _has_cma_probe(rec: Recording) -> bool:
    return "cma" in rec.meta.probes


def _failures_frame(rec: Recording) -> pd.DataFrame | None:
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
            v[("zone_gfp", _zone_gfp_label(str(z), str(gfp)), "pages")] = float(pages)
        if cma_known:
            cma = df[counterfactual.in_logical_cma(df)]
            v[("zones", LOGICAL_CMA, "pages")] = float(cma["pages"].sum())
            for gfp, pages in cma.groupby("gfp")["pages"].sum().items():
                v[("cma_gfp", str(gfp), "pages")] = float(pages)
                v[("zone_gfp", _zone_gfp_label(LOGICAL_CMA, str(gfp)), "pages")] = float(pages)
    if not cma_known:
        m.not_recorded.add("cma_gfp")
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
    # failure causes (engineer B's table)
    fail = _failures_frame(rec)
    if fail is None:
        m.not_recorded.add("failures")
    elif not fail.empty:
        # pages are distinct pfns per stage; a page seen at two stages is counted in both
        keys = ["cause", "stage"] if "stage" in fail else ["cause"]
        for key, pages in fail.groupby(keys, observed=True)["pages"].sum().items():
            parts = key if isinstance(key, tuple) else (key,)
            label = f"{parts[0]} ({parts[1]})" if len(parts) > 1 else str(parts[0])
            v[("failures", label, "pages")] = float(pages)
    # migrations
    if "migrate" in rec.meta.probes:
        mig = df_migrate(rec)
        if not mig.empty:
            for reason, g in mig.groupby("reason", observed=True):
                v[("migrate", f"{reason} succeeded", "pages")] = float(g["succeeded"].sum())
                v[("migrate", f"{reason} failed", "pages")] = float(g["failed"].sum())
    else:
        m.not_recorded.add("migrate")
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
    return m


_CACHE: weakref.WeakKeyDictionary[Recording, IterationMetrics] = weakref.WeakKeyDictionary()


def _metrics_copy(rec: Recording) -> IterationMetrics:
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


# --------------------------------------------------------------------------- comparison

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


def _zone_key(z: str) -> tuple[int, str]:
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
            keys = sorted(keys, key=lambda k: (k[1] == LOGICAL_CMA, _zone_key(k[1])))
        elif sec == "zone_gfp":
            zones = sorted(
                {k[1].split("\x00")[0] for k in keys},
                key=lambda z: (z == LOGICAL_CMA, _zone_key(z)),
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
            return (sec, _zone_gfp_label(zone, gfp_label(gfp, order)), unit)
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
    metrics = [[_metrics_copy(r) for r in s.recordings] for s in sides]
    _canon_keys(metrics, gfp_order(sides[0]))
    sides_vals = [[m.values for m in ms] for ms in metrics]
    seen: dict[Key, None] = {}
    for ms in metrics:
        for m in ms:
            seen.update(dict.fromkeys(m.values))
    keys = _ordered_keys(list(seen), sides_vals)
    keys = _top_gfp(keys, sides_vals)

    def side_values(si: int, k: Key) -> list[float] | None:
        out = []
        for m in metrics[si]:
            if k in m.values:
                out.append(m.values[k])
            elif k[0] in m.zero_sections and k[0] not in m.not_recorded:
                zone = k[1].split("\x00")[0] if k[0] == "zone_gfp" else None
                if zone is None or ("zones", zone, "pages") in m.values:
                    out.append(0.0)
        return out or None

    rows: list[dict[str, Any]] = []
    recorded = {
        sec: any(sec not in m.not_recorded for ms in metrics for m in ms) for sec in SECTIONS
    }
    for k in keys:
        sec, metric, unit = k
        label = metric.replace("\x00", ": ")
        per_side = [side_values(si, k) for si in range(len(sides))]
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
        if sec == "cma_alloc" and metric == "pages failed to migrate":
            rows.extend(_latency_rows(sides, alpha))
    if not any(r["section"] == "cma_alloc" for r in rows):
        rows.extend(_latency_rows(sides, alpha))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["recorded"] = recorded
    return out


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
        other: Key = ("zone_gfp", _zone_gfp_label(zone, "(other classes)"), "pages")
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


# --------------------------------------------------------------------------- sides


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
    base = [_metrics_copy(r).values for r in sides[0].recordings]
    for s in sides[1:]:
        if [_metrics_copy(r).values for r in s.recordings] == base:
            warnings.append(
                f"{s.name} has the same numbers as {sides[0].name}: the same recordings "
                f"twice? every change will be 0"
            )
    return warnings


# --------------------------------------------------------------------------- text


def _fmt_value(v: float | None, unit: str, stat: str = "Amean") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "%" or stat == "CoeffVar" or (abs(v) < 100 and v != int(v)):
        return f"{v:.2f}"
    return f"{v:.0f}"


def _fmt_change(r: Any, unit: str) -> str:
    """11 characters: ``(  +12.34%)``, an absolute difference ``(   +61826)``, ``*`` for
    ``(`` and ``)`` where significant, blank without a baseline."""
    shown = r.change_shown
    if not isinstance(shown, str) or not shown:
        return " " * 11
    if shown == "pct":
        pct = 0.0 if pd.isna(r.change_pct) else float(r.change_pct)
        txt = f"{pct:+8.2f}%"
    else:
        diff = float(r.change_abs)
        txt = f"{_fmt_value(abs(diff), unit, r.stat)}"
        txt = f"{'+' if diff >= 0 else '-'}{txt}"
        txt = f"{txt:>9}"
    return f"*{txt}*" if r.significant else f"({txt})"


#: Width of the statistic name at the start of a text row (mmtests: ``Amean``).
STAT_W = 9
#: Where the first value column starts in the 80-column form.
LABEL_W = 34
COL_W = 23
_DIRECTION_TAG = {"lower": " [lower]", "higher": " [higher]"}


def _varies(g: pd.DataFrame) -> bool:
    """Whether any side's iterations differ (else Stddev..Max repeat the mean)."""
    spread = g.loc[g["stat"] == "Stddev", "value"]
    return bool((spread.fillna(0) > 0).any())


def table_compare(sides: list[Side], alpha: float = stats.ALPHA, wide: bool = False) -> str:
    """mmtests compare-kernels-style text: per metric Amean, Stddev, CoeffVar, Min, Max
    (and p50/p90/p99 of latency), baseline first with its value, each other side with
    its change; ``*`` where a test says the difference is significant.

    :param wide: every label on the line of its numbers (for grep), wider than 80 columns
    """
    df = df_compare(sides, alpha)
    out = [
        "cmaprof compare: statistics over each side's iterations (latency: over all",
        "cma_alloc() calls of a side); (change against the baseline's same statistic):",
        "  (+1.23%) relative; (+456) absolute, where the baseline is <= 0 or the change",
        f"  beyond +-{MAX_PCT:g}%; Stddev..Max shown where a side's iterations differ",
        f"*change* = significant at alpha={alpha:g}, two-sided: Amean: Mann-Whitney U on",
        "  per-iteration values, exact p; latency p50/p90/p99: bootstrap CI of the",
        "  difference, calls resampled; other statistics are not tested",
        "[lower] / [higher]: the direction that is better, where a metric has one",
    ]
    for i, s in enumerate(sides):
        tag = "baseline" if i == 0 else f"side {i + 1}"
        out.extend(
            textwrap.wrap(
                f"{tag} {s.describe()}",
                WIDTH,
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
        )
    n = [len(s.recordings) for s in sides]
    untestable = [
        f"{sides[i].name} ({n[0]} vs {n[i]} iterations)"
        for i in range(1, len(sides))
        if stats.mwu_min_p(n[0], n[i]) > alpha
    ]
    if untestable:
        out.extend(
            textwrap.wrap(
                "no test possible on per-iteration rows for "
                + ", ".join(untestable)
                + f": Mann-Whitney U cannot reach p<={alpha:g} with so few iterations "
                f"(needs {stats.min_iterations(alpha)} per side); no * there",
                WIDTH,
                break_on_hyphens=False,
            )
        )
    rows = df.assign(_label=[_label(r.section, r.metric, r.unit) for r in df.itertuples()])
    rows["_label"] = [
        lab + _DIRECTION_TAG.get(str(d), "") for lab, d in zip(rows["_label"], rows["direction"])
    ]
    label_w = LABEL_W
    if wide and not rows.empty:
        label_w = max(LABEL_W, STAT_W + int(rows["_label"].str.len().max()) + 1)
    head = " " * label_w + " ".join(f"{s.name[: COL_W - 1]:>{COL_W - 1}}" for s in sides)
    nline = " " * label_w + " ".join(f"{'n=' + str(k):>{COL_W - 1}}" for k in n)
    notes: dict[str, None] = {}
    for sec, title in SECTIONS.items():
        part = rows[rows["section"] == sec]
        out.append("")
        out.extend(textwrap.wrap(title, WIDTH))
        if part.empty:
            if df.attrs["recorded"].get(sec):
                out.append("  none on any side")
            else:
                out.append("  not recorded" + _not_recorded_by(sides, sec))
            continue
        out.append(head.rstrip())
        out.append(nline.rstrip())
        for (_metric, _unit), g in part.groupby(["metric", "unit"], sort=False):
            label = str(g["_label"].iloc[0])
            shown_stats = [
                st
                for st in g["stat"].unique()
                if st == "Amean" or st in QUANTILES or _varies(g) or (st == "Max" and _is_lat(g))
            ]
            own_line = not wide and len(label) > label_w - STAT_W - 1
            if own_line:
                out.extend(_wrap_label(label, WIDTH))
            for st in shown_stats:
                cells = []
                for i, r in enumerate(g[g["stat"] == st].itertuples(index=False)):
                    chg = _fmt_change(r, r.unit)
                    if i == 0 and chg.strip():
                        chg = "(    0.00%)"
                    cells.append(f"{_fmt_value(r.value, r.unit, r.stat):>10} {chg}")
                    if isinstance(r.note, str) and r.note:
                        notes[r.note] = None
                lab = f"{st:<{STAT_W}}" + ("" if own_line else label)
                out.append((f"{lab:<{label_w}}" + " ".join(cells)).rstrip())
    notes.pop("", None)
    shown = [n_ for n_ in notes if "iterations: Mann-Whitney" not in n_]
    if shown:
        out.append("")
        out.append("not tested:")
        for note in shown:
            out.extend(textwrap.wrap(note, WIDTH, initial_indent="  ", subsequent_indent="    "))
    # issue 12: the layouts of the sides next to each other (analysis/layout.py) and
    # the failed calls by cause (analysis/causes.py)
    from cmaprof.analysis.causes import table_causes_compare
    from cmaprof.analysis.layout import table_layout_compare

    out += ["", table_layout_compare(sides), "", table_causes_compare(sides)]
    return "\n".join(out) + "\n"


def _is_lat(g: pd.DataFrame) -> bool:
    return bool((g["metric"] == "latency").any())


def _not_recorded_by(sides: list[Side], sec: str) -> str:
    if sec == "failures":
        return " (needs the blockers probe's cma_failures table)"
    return ""


def _label(sec: str, metric: str, unit: str) -> str:
    if sec == "zone_gfp":
        zone, _, gfp = metric.partition(": ")
        return f"{zone}: {gfp}"
    if unit in ("pages", "delta", "calls") or sec in ("cma_gfp", "failures", "migrate", "lost"):
        return metric
    return f"{metric} ({unit})"


def _wrap_label(label: str, width: int) -> list[str]:
    """Split a long label (GFP strings) at '|' or spaces, continuation lines indented."""
    lines = formats.wrap_flags(label, width - 2)
    return [lines[0], *("  " + line for line in lines[1:])]


# --------------------------------------------------------------------------- machine


def _jsonable(v: Any) -> Any:
    """JSON value of a cell: numbers stay numbers, NaN and infinities become null."""
    if v is None or v is pd.NA:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def compare_json(
    sides: list[Side], alpha: float = stats.ALPHA, warnings: list[str] | None = None
) -> str:
    """``{"sides": [...], "alpha": a, "warnings": [...], "rows": [...]}``; rows as in
    :func:`df_compare`, one object per (metric, statistic, side)."""
    df = df_compare(sides, alpha)
    rows = [{k: _jsonable(v) for k, v in r.items()} for r in df.astype(object).to_dict("records")]
    obj = {
        "alpha": alpha,
        "tests": {
            "per_iteration": "Mann-Whitney U on Amean rows, two-sided, exact permutation p-value",
            "percentiles": "percentile bootstrap CI of the difference, calls resampled",
        },
        "sides": [
            {
                "name": s.name,
                "path": str(s.path),
                "iterations": len(s.recordings),
                "kernel": s.kernel,
                "layout": s.layout,
                "workload": s.workload,
            }
            for s in sides
        ],
        "warnings": list(warnings or []),
        "rows": rows,
    }
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def compare_csv(sides: list[Side], alpha: float = stats.ALPHA) -> str:
    """The long table as CSV, one line per (metric, statistic, side); ``values`` joined
    by ``;``."""
    df = df_compare(sides, alpha).copy()
    df["values"] = [";".join(f"{x:g}" for x in v) if v else "" for v in df["values"]]
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


FORMATS: dict[str, Callable[[list[Side], float], str]] = {
    "text": table_compare,
    "json": compare_json,
    "csv": compare_csv,
}
