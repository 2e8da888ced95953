"""Failed calls as frames: one row per call with its cause (:func:`df_cma_failures`)
and the calls per cause (:func:`df_cma_failure_causes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from cmaprof.analysis.causes.rules import CAUSE_NAMES, Cause, Evidence, classify, optional_int
from cmaprof.analysis.cma import df_cma_calls

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording


COLUMNS = [
    "start_ns",
    "area",
    "pid",
    "comm",
    "pages_requested",
    "align",
    "latency_ns",
    "busy_retries",
    "errno",
    "cause",
    "decided_by",
    "evidence",
    "blocker_causes",
    "blocker_pages",
    "blocker_pfns",
    "first_busy_pfn",
]


def has_cma_probe(rec: Recording) -> bool:
    """Whether the recording ran the cma probe (so its failed calls were seen)."""
    return "cma" in rec.meta.probes


def df_cma_failures(rec: Recording) -> pd.DataFrame:
    """One row per failed cma_alloc() call with its ``cause`` (a :class:`Cause` value;
    categorical in vocabulary order), ``decided_by`` (which evidence decided), ``evidence``
    (in words, with what the recording lacked), the blocking pages (``blocker_causes``,
    ``blocker_pages``, ``blocker_pfns``) and the call's own fields (pages, align,
    latency, busy retries, errno when the kernel gives it, ``first_busy_pfn``).

    Not :func:`cmaprof.analysis.blockers.df_cma_failures`, which counts blocking *pages*
    per (area, stage, cause, state); this one is per failed *call*.
    """
    calls = df_cma_calls(rec)
    if calls.empty or not (~calls["success"]).any():
        return failures_frame(calls, Evidence())
    return failures_frame(calls, Evidence.of(rec))


def failures_frame(calls: pd.DataFrame, ev: Evidence) -> pd.DataFrame:
    """:func:`df_cma_failures` from :func:`df_cma_calls` rows and the evidence."""
    if calls.empty or not (~calls["success"]).any():
        df = pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
        df["cause"] = pd.Categorical([], categories=CAUSE_NAMES)
        return df
    rows = []
    for call in calls[~calls["success"]].itertuples(index=False):
        c = classify(call, ev)
        rows.append(
            {
                "start_ns": int(call.start_ns),
                "area": str(call.area),
                "pid": int(call.pid),
                "comm": str(call.comm),
                "pages_requested": int(call.pages_requested),
                "align": int(call.align),
                "latency_ns": int(call.latency_ns),
                "busy_retries": int(call.busy_retries),
                "errno": optional_int(call.errno),
                "first_busy_pfn": optional_int(call.first_busy_pfn),
                **c,
            }
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["cause"] = pd.Categorical(df["cause"], categories=CAUSE_NAMES)
    df["errno"] = df["errno"].astype("Int64")
    df["first_busy_pfn"] = df["first_busy_pfn"].astype("Int64")
    return df


def df_cma_failure_causes(rec: Recording) -> pd.DataFrame:
    """Per cause (only those seen): ``calls``, ``share`` of the failed calls (sums to 1)."""
    return causes_frame(df_cma_failures(rec))


def causes_frame(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`df_cma_failure_causes` from :func:`df_cma_failures` rows."""
    counts = df["cause"].value_counts(sort=False)
    counts = counts[counts > 0]
    total = int(counts.sum())
    return pd.DataFrame(
        {
            "cause": [str(c) for c in counts.index],
            "label": [Cause(c).label for c in counts.index],
            "calls": [int(v) for v in counts.values],
            "share": [v / total for v in counts.values] if total else [],
        }
    )
