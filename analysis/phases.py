"""Where the time of a cma_alloc() call went: its phases, per call and per area.

The cma probe keeps, for the task of each call in flight, a stack of the phase
functions it is in (``probes/cma.bpf.c``; the phases are ``CMA_PHASE_*`` of
``probes/events.h``, their functions ``collectors/cma.py`` ``PHASE_SYMBOLS``). A phase's
time is its self time: the time in its function less the time of the phases nested in
it (``migrate`` inside ``migrate_range`` inside ``contig``). The call's time in no phase
is ``unattributed`` (the cma_mutex wait, the bitmap update, the failure message, and
every function the kernel does not let us see), so the phases of a call add up to its
latency exactly; :func:`df_cma_phase_check` says so per call.

A phase whose function this kernel lacks (inlined, renamed, absent) has no rows; the
recording's metadata ``cma_phases.missing`` says why, and the report prints ``-`` with
that reason instead of zeros.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pandas as pd

from cmaprof.analysis import cma
from cmaprof.analysis.loaded import Recording
from cmaprof.probes import abi

#: Phase names by code (``CMA_PHASE_*``); the last, ``unattributed``, is the rest.
PHASES = abi.enum("CMA_PHASE_")
UNATTRIBUTED = PHASES[abi.CMA_PHASE_UNATTRIBUTED]

#: What each phase is, for the report's legend.
PHASE_MEANING = {
    "search": "bitmap search for a free aligned range",
    "contig": "alloc_contig_range() outside the phases in it",
    "isolate": "isolating the range's pageblocks",
    "drain": "draining per-CPU free lists and LRU batches",
    "migrate_range": "__alloc_contig_migrate_range() outside its parts",
    "collect": "taking the pages to migrate off the LRU",
    "reclaim": "reclaiming clean page cache instead of migrating it",
    "migrate": "migrate_pages()",
    "test": "test_pages_isolated()",
    "take": "taking the freed range off the free lists",
    "undo": "undoing the isolation",
    "sleep": "sleeping between busy retries",
    UNATTRIBUTED: "the rest of the call",
}

SUMMARY_COLUMNS = [
    "area",
    "phase",
    "seen",
    "reason",
    "calls",
    "calls_in",
    "entries",
    "total_ns",
    "share_pct",
    "failed_ns",
    "lost",
    "p50_ns",
    "p90_ns",
    "p99_ns",
    "max_ns",
]


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def phase_visibility(rec: Recording) -> dict[str, str | None]:
    """Per phase: None where the recording saw it, else why it did not.

    A recording made before phases were measured, or without the cma probe, sees none
    but ``unattributed``."""
    info = _dict(rec.meta.get("cma_phases"))
    if not info:
        off = cma.probe_not_run(rec, "cma")
        why = off or "the recording has no phases (made by a cmaprof that did not measure them)"
        return {p: why for p in PHASES}
    missing = _dict(info.get("missing"))
    attached = _dict(info.get("attached"))
    out: dict[str, str | None] = {}
    for p in PHASES:
        if p == UNATTRIBUTED or p in attached:
            out[p] = None
        else:
            out[p] = str(missing.get(p) or "not attached")
    return out


def has_phases(rec: Recording) -> bool:
    """Whether the recording measured phases (its ``cma_phases`` metadata)."""
    return bool(_dict(rec.meta.get("cma_phases")))


def _phase_rows(rec: Recording) -> pd.DataFrame:
    t = rec.table("cma_phases")
    if t.num_rows == 0 and not (rec.path / "tables/cma_phases.parquet").exists():
        t = rec.series("cma_phases")
    df = t.to_pandas()
    df["phase"] = pd.Categorical(
        [PHASES[int(i)] if int(i) < len(PHASES) else f"phase{int(i)}" for i in df["phase_id"]],
        categories=list(PHASES),
        ordered=True,
    )
    return df


def df_cma_call_phases(rec: Recording) -> pd.DataFrame:
    """One row per cma_alloc() call and phase seen: the call's ``start_ns``, ``pid``,
    ``area``, ``success``, ``latency_ns``, and the phase's ``entries``, ``ns`` (self
    time), ``failed_ns`` (of it, in alloc_contig_range() attempts that failed) and
    ``lost`` (frames closed without their return)."""
    rows = _phase_rows(rec)
    calls = cma.df_cma_calls(rec)
    keep = ["start_ns", "pid", "area", "success", "latency_ns"]
    if calls.empty or rows.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype="object") for c in keep + ["phase", "entries", "ns"]}
        )
    calls = calls[keep].astype({"start_ns": "int64", "pid": "int64"})
    rows = rows.astype({"start_ns": "int64", "pid": "int64"})
    df = calls.merge(rows.drop(columns="phase_id"), on=["start_ns", "pid"], how="inner")
    return df.sort_values(["start_ns", "pid", "phase"], ignore_index=True)


def df_cma_phase_check(rec: Recording) -> pd.DataFrame:
    """Per call: ``latency_ns``, ``attributed_ns`` (the phases but unattributed),
    ``unattributed_ns``, ``diff_ns`` (latency minus both: 0 when the phases add up),
    ``attributed_pct`` and ``lost``."""
    df = df_cma_call_phases(rec)
    cols = ["start_ns", "pid", "area", "success", "latency_ns"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    un = df["phase"] == UNATTRIBUTED
    g = df.groupby(["start_ns", "pid"], sort=True)
    out = g[cols[2:]].first()
    out["attributed_ns"] = df[~un].groupby(["start_ns", "pid"])["ns"].sum()
    out["attributed_ns"] = out["attributed_ns"].fillna(0).astype("int64")
    out["unattributed_ns"] = df[un].groupby(["start_ns", "pid"])["ns"].sum()
    out["unattributed_ns"] = out["unattributed_ns"].fillna(0).astype("int64")
    out["lost"] = g["lost"].sum().astype("int64")
    lat = out["latency_ns"].astype("int64")
    out["diff_ns"] = lat - out["attributed_ns"] - out["unattributed_ns"]
    out["attributed_pct"] = (out["attributed_ns"] / lat.where(lat > 0) * 100).round(3)
    return out.reset_index()


def df_cma_phase_summary(rec: Recording) -> pd.DataFrame:
    """Per area and phase (every phase of the vocabulary, in order): whether it was
    ``seen`` (else ``reason``), the ``calls`` of the area, ``calls_in`` that entered it,
    its ``entries``, ``total_ns``, ``share_pct`` of the area's summed latency,
    ``failed_ns``, ``lost``, and percentiles of the per-call time (``pNN_ns`` null
    where unseen or where the area has too few calls: :func:`cma.quantile_estimable`)."""
    df = df_cma_call_phases(rec)
    vis = phase_visibility(rec)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SUMMARY_COLUMNS})
    rows = []
    for area, g in df.groupby("area", sort=True, observed=True):
        per_call = g.groupby(["start_ns", "pid"])["latency_ns"].first()
        n, lat_total = len(per_call), int(per_call.sum())
        for p in PHASES:
            gp = g[g["phase"] == p]
            seen = vis[p] is None
            ns = gp["ns"].astype("int64")
            rows.append(
                {
                    "area": area,
                    "phase": p,
                    "seen": seen,
                    "reason": vis[p] or "",
                    "calls": n,
                    "calls_in": int((gp["entries"] > 0).sum()) if p != UNATTRIBUTED else n,
                    "entries": int(gp["entries"].sum()) if seen else None,
                    "total_ns": int(ns.sum()) if seen else None,
                    "share_pct": round(ns.sum() / lat_total * 100, 2)
                    if seen and lat_total
                    else None,
                    "failed_ns": int(gp["failed_ns"].sum()) if seen else None,
                    "lost": int(gp["lost"].sum()) if seen else None,
                    **{
                        f"{name}_ns": int(ns.quantile(q))
                        if seen and len(ns) == n and cma.quantile_estimable(n, q)
                        else None
                        for name, q in cma.PERCENTILES.items()
                    },
                    "max_ns": int(ns.max()) if seen and len(ns) else None,
                }
            )
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for c in ("entries", "total_ns", "failed_ns", "lost", "p50_ns", "p90_ns", "p99_ns", "max_ns"):
        out[c] = out[c].astype("Int64")
    return out


def _ms(ns: Any) -> str:
    if ns is None or pd.isna(ns):
        return "-"
    ms = ns / 1e6
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def table_cma_phases(rec: Recording, width: int = 80) -> str:
    """Where the time of cma_alloc() went, per area: each phase's calls, summed time,
    share of the summed latency, percentiles of the per-call time and the time in
    attempts that failed (milliseconds); ``-`` with the reason for a phase not seen."""
    if not has_phases(rec):
        return ""
    summ = df_cma_phase_summary(rec)
    if summ.empty:
        return ""
    check = df_cma_phase_check(rec)
    out = ["Where the time of cma_alloc() went (per call, self time, milliseconds)"]
    head = (
        f"{'phase':<14} {'calls':>5} {'total':>8} {'share':>6} {'p50':>7} {'p90':>7} "
        f"{'p99':>7} {'max':>7} {'failed':>7}"
    )
    few: set[str] = set()
    for area, g in summ.groupby("area", sort=True):
        calls = int(g["calls"].iloc[0])
        total = check.loc[check["area"] == area, "latency_ns"].astype("int64").sum()
        contig = g[g["phase"] == "contig"].iloc[0]
        attempts = f", {contig.entries} alloc_contig_range() attempts" if contig.seen else ""
        out += ["", f"area {area}: {calls} calls{attempts}, {_ms(total)} ms in all", head]
        for r in g.itertuples(index=False):
            if not r.seen:
                out.append(f"{r.phase:<14} {'-':>5} {'-':>8} {'-':>6}")
                continue
            share = "-" if pd.isna(r.share_pct) else f"{r.share_pct:.1f}%"
            out.append(
                f"{r.phase:<14} {r.calls_in:>5} {_ms(r.total_ns):>8} {share:>6} "
                f"{_ms(r.p50_ns):>7} {_ms(r.p90_ns):>7} {_ms(r.p99_ns):>7} "
                f"{_ms(r.max_ns):>7} {_ms(r.failed_ns):>7}"
            )
        few |= {name for name, q in cma.PERCENTILES.items() if calls < cma.calls_needed(q)}
    notes = [
        (
            "calls: calls that entered the phase; share: of the summed latency; pNN, "
            "max: of the per-call time; failed: in alloc_contig_range() attempts that failed"
        )
    ]
    unseen = summ[~summ["seen"]].drop_duplicates("phase")
    if len(unseen):
        notes.append(
            "-: not seen on this kernel: "
            + "; ".join(f"{r.phase}: {r.reason}" for r in unseen.itertuples(index=False))
        )
    if few:
        notes.append(
            "percentiles need "
            + ", ".join(f"{n}: {cma.calls_needed(cma.PERCENTILES[n])}" for n in sorted(few))
            + " calls in the area (- where it has fewer)"
        )
    bad = check[check["diff_ns"] != 0]
    lost = int(check["lost"].sum())
    if len(check):
        pct = check["attributed_ns"].sum() / max(1, check["latency_ns"].astype("int64").sum())
        notes.append(
            f"the phases of {len(check) - len(bad)} of {len(check)} calls add up to their "
            f"latency; {pct * 100:.1f}% of the time is in a phase, the rest unattributed"
            + (f"; {lost} frames lost (a return not seen)" if lost else "")
        )
    notes.append("phases: " + "; ".join(f"{p}: {PHASE_MEANING[p]}" for p in PHASES))
    out.append("")
    out += [textwrap.fill(n, width, subsequent_indent="  ") for n in notes]
    return "\n".join(out)
