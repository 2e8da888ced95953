"""The comparison as JSON and CSV (``cmaprof compare --format json|csv``)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from cmaprof.analysis import stats
from cmaprof.analysis.compare.by_stack import df_compare_by_stack
from cmaprof.analysis.compare.frame import df_compare
from cmaprof.analysis.compare.sides import Side
from cmaprof.analysis.compare.text import table_compare


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


def _df_all(sides: list[Side], alpha: float) -> pd.DataFrame:
    """:func:`df_compare`, then the stack classes where every side has them (issue 17)."""
    df = df_compare(sides, alpha)
    extra = df_compare_by_stack(sides, alpha)
    return df if extra.empty else pd.concat([df, extra], ignore_index=True)


def compare_json(
    sides: list[Side], alpha: float = stats.ALPHA, warnings: list[str] | None = None
) -> str:
    """``{"sides": [...], "alpha": a, "warnings": [...], "rows": [...]}``; rows as in
    :func:`df_compare`, one object per (metric, statistic, side)."""
    df = _df_all(sides, alpha)
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
    df = _df_all(sides, alpha).copy()
    df["values"] = [";".join(f"{x:g}" for x in v) if v else "" for v in df["values"]]
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


FORMATS: dict[str, Callable[[list[Side], float], str]] = {
    "text": table_compare,
    "json": compare_json,
    "csv": compare_csv,
}
