"""Compare sides (kernels, layouts), each a recording or a directory of iterations.

A *side* is what one column of ``cmaprof compare`` shows: one recording, or a directory of
recordings taken as iterations of the same run (:func:`load_side`). Every row is one
metric: the value shown is the mean over the side's iterations (latency percentiles are
taken over all of the side's cma_alloc() calls pooled), then the relative change against
the baseline (the first side), and a ``*`` only where a test says the difference is
significant (:mod:`cmaprof.analysis.stats`: Mann-Whitney U on per-iteration values, a
bootstrap interval for percentiles).

Kernels need not have the same zones: rows are the union over all sides and a side whose
kernel lacks a zone, counter or probe shows ``-``. The **logical CMA** row lines up CMA
memory however the kernel lays it out: pages in CMA pageblocks inside DMA32/Normal/
Movable (``cma_area`` from the pfn) on one kernel, pages in a zone named CMA on another.
Those pages are also counted in their zone's row.

:func:`df_compare` gives the long table (one row per metric and side, with the
per-iteration values and the test) that ``--format json|csv`` prints; :func:`table_compare`
the mmtests-style text.
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
from cmaprof.analysis.migrate import df_migrate
from cmaprof.analysis.recording import Recording, load_many
from cmaprof.errors import BadInput

WIDTH = 80
LABEL_W = 30
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
    "zone_gfp": "Pages per zone and GFP class (flags after the GFP_* names sorted)",
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
        ks = sorted({str(r.meta.get("kernel_release")) for r in self.recordings})
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
    zones = sorted(
        {str(z.get("name")) for z in rec.meta.get("zones") or [] if (z.get("cma") or 0) > 0}
    )
    if zones:
        return "CMA in " + "+".join(zones)
    return "CMA area" if rec.meta.get("cma_areas") else "no CMA"


def workload_of(rec: Recording) -> str:
    """The recorded command, shortened (program names without directories)."""
    if rec.meta.get("label"):
        return str(rec.meta["label"])
    cmd = [str(c) for c in rec.meta.get("command") or []]
    if not cmd:
        return "system-wide"
    if len(cmd) > 2 and cmd[1] == "-m":  # python -m cmaprof ...
        cmd = cmd[2:]
    words = [c.rsplit("/", 1)[-1] if c.startswith("/") else c for c in cmd]
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


def gfp_label(gfp: str) -> str:
    """A GFP string as one kernel printed it, in a form that lines up across kernels:
    composite names (``GFP_*``) first in the kernel's order, then single flags sorted
    (6.1 prints ``__GFP_COMP|__GFP_ZERO`` where 6.18 prints ``__GFP_ZERO|__GFP_COMP``)."""
    names = gfp.split("|")
    composite = [n for n in names if not n.startswith("__")]
    return "|".join(composite + sorted(n for n in names if n.startswith("__")))


def _zone_gfp_label(zone: str, gfp: str) -> str:
    return f"{zone}\x00{gfp}"


def _has_cma_probe(rec: Recording) -> bool:
    return "cma" in (rec.meta.get("probes") or {})


def _failures_frame(rec: Recording) -> pd.DataFrame | None:
    """Engineer B's ``cma_failures`` table (area, cause, pages, events), None if not recorded."""
    fn = getattr(rec, "df_cma_failures", None)
    recorded = "blockers" in (rec.meta.get("probes") or {}) or any(
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
        df["gfp"] = [gfp_label(g) for g in df["gfp"]]
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
            v[("counterfactual", f"refused: {gfp_label(r.gfp)}", "pages")] = float(r.pages)
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
    if "migrate" in (rec.meta.get("probes") or {}):
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
    lost = rec.meta.get("lost")
    if isinstance(lost, dict):
        v[("lost", "lost events", "events")] = float(sum(int(x) for x in lost.values()))
    dropped = rec.meta.get("dropped") or {}
    if isinstance(dropped.get("page_alloc"), dict):
        dropped = dropped["page_alloc"]
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

COLUMNS = [
    "section",
    "metric",
    "unit",
    "side",
    "n",
    "value",
    "median",
    "min",
    "max",
    "values",
    "change_pct",
    "test",
    "p_value",
    "ci_low",
    "ci_high",
    "significant",
    "note",
]


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


def _change(base: float | None, other: float | None) -> float | None:
    if base is None or other is None:
        return None
    if base == 0:
        return 0.0 if other == 0 else math.inf
    return (other - base) / abs(base) * 100


def _cell(sec: str, metric: str, unit: str, side: str, vals: list[float] | None) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(section=sec, metric=metric, unit=unit, side=side, significant=False, test="none")
    if vals:
        a = np.asarray(vals, dtype=float)
        row.update(
            n=len(a),
            value=float(a.mean()),
            median=float(np.median(a)),
            min=float(a.min()),
            max=float(a.max()),
            values=[float(x) for x in a],
        )
    else:
        row["n"] = 0
    return row


def df_compare(sides: list[Side], alpha: float = stats.ALPHA) -> pd.DataFrame:
    """The long comparison table: one row per (metric, side); the first side is the base.

    ``value`` is the mean of the per-iteration ``values`` (the pooled percentile for
    latency rows), ``change_pct`` relative to the base, ``test`` "mwu", "bootstrap" or
    "none" (``note`` says why), ``significant`` only when the test rejected equality.
    """
    if not sides:
        raise BadInput("compare needs at least one side")
    metrics = [[_metrics_copy(r) for r in s.recordings] for s in sides]
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
        base_vals = side_values(0, k)
        for si, s in enumerate(sides):
            vals = side_values(si, k)
            row = _cell(sec, metric.replace("\x00", ": "), unit, s.name, vals)
            if si and base_vals and vals:
                row["change_pct"] = _change(float(np.mean(base_vals)), float(np.mean(vals)))
                res = stats.mwu(base_vals, vals, alpha)
                row.update(
                    test=res.test, p_value=res.p_value, significant=res.significant, note=res.reason
                )
            elif si == 0 and vals:
                row["change_pct"] = 0.0
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
    lats = [latencies_ns(s) for s in sides]
    if all(x is None for x in lats):
        return []
    rows = []
    base = lats[0]
    for label, q in [*QUANTILES.items(), ("max", 1.0)]:
        for si, (s, lat) in enumerate(zip(sides, lats)):
            row = _cell("cma_alloc", f"latency {label}", "us", s.name, None)
            if lat is None or not len(lat):
                rows.append(row)
                continue
            us = lat / 1e3
            val = float(np.quantile(us, q))
            row.update(n=len(us), value=val, median=None, min=float(us.min()), max=float(us.max()))
            if si == 0:
                row["change_pct"] = 0.0
            elif base is not None and len(base):
                bval = float(np.quantile(base / 1e3, q))
                row["change_pct"] = _change(bval, val)
                if q < 1.0:
                    res = stats.bootstrap_quantile_diff(base / 1e3, us, q, alpha)
                    row.update(
                        test=res.test,
                        significant=res.significant,
                        note=res.reason,
                        ci_low=res.ci[0] if res.ci else None,
                        ci_high=res.ci[1] if res.ci else None,
                    )
                else:
                    row["note"] = "the maximum is not tested"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- text


def _fmt_value(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "%" or (abs(v) < 100 and v != int(v)):
        return f"{v:.2f}"
    return f"{v:.0f}"


def _fmt_change(chg: float | None, significant: bool) -> str:
    if chg is None or (isinstance(chg, float) and math.isnan(chg)):
        return " " * 11
    if chg == 0:
        return "(   +0.00%)" if not significant else "*   +0.00%*"
    if math.isinf(chg):
        txt = "      new"
    elif abs(chg) >= 10000:
        txt = f"{chg:+8.0f}%"
    else:
        txt = f"{chg:+8.2f}%"
    return f"*{txt}*" if significant else f"({txt})"


def table_compare(sides: list[Side], alpha: float = stats.ALPHA) -> str:
    """mmtests-style text: baseline first with (0.00%), then each side's change, ``*``
    where significant. Within 80 columns for two sides (each side adds 23)."""
    df = df_compare(sides, alpha)
    col_w = 23
    out = [
        "cmaprof compare: value = mean over iterations; (change vs baseline);",
        f"*change* = significant at alpha={alpha:g}, two-sided:",
        "  per-iteration values: Mann-Whitney U, exact permutation p-value;",
        "  latency p50/p90/p99 (all calls of a side pooled): bootstrap CI of the",
        "  difference, calls resampled; the maximum is not tested",
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
    head = " " * LABEL_W + "".join(f"{s.name[: col_w - 2]:>{col_w - 2}}  " for s in sides)
    nline = " " * LABEL_W + "".join(f"{'n=' + str(k):>{col_w - 2}}  " for k in n)
    notes: dict[str, None] = {}
    for sec, title in SECTIONS.items():
        part = df[df["section"] == sec]
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
        for (metric, unit), g in part.groupby(["metric", "unit"], sort=False):
            label = _label(sec, metric, unit)
            cells = []
            for i, r in enumerate(g.itertuples(index=False)):
                chg = "(    0.00%)" if i == 0 and r.n else _fmt_change(r.change_pct, r.significant)
                cells.append(f"{_fmt_value(r.value, unit):>10} {chg}")
                if isinstance(r.note, str) and r.note:
                    notes[r.note] = None
            if len(label) > LABEL_W - 1:
                wrapped = _wrap_label(label, WIDTH - 2)
                out.extend("  " + w if j else w for j, w in enumerate(wrapped))
                label = ""
            out.append((f"{label:<{LABEL_W}}" + " ".join(cells)).rstrip())
    notes.pop("", None)
    shown = [n_ for n_ in notes if "iterations: Mann-Whitney" not in n_ and "maximum" not in n_]
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
    """Split a long label (GFP strings) at '|' or spaces."""
    parts = label.replace("|", "|\x01").split("\x01")
    lines, cur = [], ""
    for p in parts:
        if cur and len(cur) + len(p) > width:
            lines.append(cur)
            cur = p
        else:
            cur += p
    lines.append(cur)
    return lines


# --------------------------------------------------------------------------- machine


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if hasattr(v, "item"):
        return v.item()
    return v


def compare_json(sides: list[Side], alpha: float = stats.ALPHA) -> str:
    """``{"sides": [...], "alpha": a, "rows": [...]}``; rows as in :func:`df_compare`."""
    df = df_compare(sides, alpha)
    rows = [{k: _jsonable(v) for k, v in r.items()} for r in df.astype(object).to_dict("records")]
    obj = {
        "alpha": alpha,
        "tests": {
            "per_iteration": "Mann-Whitney U, two-sided, exact permutation p-value",
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
        "rows": rows,
    }
    return json.dumps(obj, indent=2, default=_jsonable) + "\n"


def compare_csv(sides: list[Side], alpha: float = stats.ALPHA) -> str:
    """The long table as CSV; ``values`` joined by ``;``."""
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
