"""Tables stored in a recording that are computed from other stored tables.

``cma_failures`` and ``cma_blockers_origin`` summarise the raw ``cma_blockers`` rows;
the recorder writes them when the recording is finished, and analysis computes the
same from ``series/cma_blockers`` for a recording killed before that. Counting rules:
``pages`` are distinct blocking pfns, ``events`` observations (a page that fails to
migrate and then stops the isolation test is one page, two events), ``calls`` distinct
cma_alloc() calls (thread id and start time).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from cmaprof.recording import schema


def state_name(bits: int) -> str:
    """The first state of :data:`schema.BLOCKER_STATES` set in ``bits``, or ``none``."""
    for name, bit in schema.BLOCKER_STATES.items():
        if bits & bit:
            return name
    return schema.BLOCKER_STATE_NONE


def state_names(bits: int) -> str:
    """Every state set in ``bits``, joined by ``|`` (``none`` when none is)."""
    names = [n for n, b in schema.BLOCKER_STATES.items() if bits & b]
    return "|".join(names) or schema.BLOCKER_STATE_NONE


def _name(seq: tuple[str, ...], i: int) -> str:
    return seq[i] if 0 <= i < len(seq) else f"?{i}"


def with_names(raw: pd.DataFrame) -> pd.DataFrame:
    """Add ``stage``, ``cause`` and ``state`` names to raw ``cma_blockers`` rows."""
    df = raw.copy()
    df["stage"] = [_name(schema.BLOCKER_STAGES, int(i)) for i in df["stage_id"]]
    df["cause"] = [_name(schema.BLOCKER_CAUSES, int(i)) for i in df["cause_id"]]
    df["state"] = [state_name(int(b)) for b in df["state_bits"]]
    return df


def failures_table(raw: pd.DataFrame) -> pa.Table:
    """``cma_failures`` from raw ``cma_blockers`` rows: per (area, stage, cause, state),
    distinct pfns, events and distinct cma_alloc() calls."""
    rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["cma_failures"]}
    if len(raw):
        df = with_names(raw)
        df["call"] = list(zip(df["tid"], df["cma_start_ns"], strict=True))
        for (area, stage, cause, state), g in df.groupby(
            ["area", "stage", "cause", "state"], sort=True
        ):
            rows["area"].append(area)
            rows["stage"].append(stage)
            rows["cause"].append(cause)
            rows["state"].append(state)
            rows["pages"].append(int(g["pfn"].nunique()))
            rows["events"].append(len(g))
            rows["calls"].append(int(g["call"].nunique()))
    return schema.to_table("cma_failures", rows)


def origin_table(raw: pd.DataFrame) -> pa.Table:
    """``cma_blockers_origin`` from raw ``cma_blockers`` rows: per (cause, state, gfp
    of the placing allocation), distinct pfns and events; gfp null = origin unknown."""
    rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["cma_blockers_origin"]}
    if len(raw):
        df = with_names(raw)
        df["gfp_key"] = [
            int(g) if known else -1
            for g, known in zip(df["origin_gfp"], df["origin_known"], strict=True)
        ]
        for (cause, state, gfp), g in df.groupby(["cause", "state", "gfp_key"], sort=True):
            rows["cause"].append(cause)
            rows["state"].append(state)
            rows["origin_known"].append(gfp >= 0)
            rows["origin_gfp_flags"].append(int(gfp) if gfp >= 0 else None)
            rows["pages"].append(int(g["pfn"].nunique()))
            rows["events"].append(len(g))
    return schema.to_table("cma_blockers_origin", rows)
