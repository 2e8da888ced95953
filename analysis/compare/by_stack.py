"""Pages per kernel stack class across sides (``record --by stack``, issue 17).

A stack class is the allocator's caller, :func:`cmaprof.analysis.by.stack_label`
(``do_anonymous_page``, ``__filemap_get_folio``): stacks of different call sites in
the same function are one class, so the rows line up across kernels and boots
(stack ids and offsets do not). Per class, every side's per-iteration pages (cmaprof's
own process included, as in every other compare row; the by-map's overflow its own
row), in the shape of the other metrics (:func:`cmaprof.analysis.compare.frame.
df_compare` rows, section :data:`SECTION`). Only when every side has a recording made
with ``--by stack``; otherwise no rows, and the comparison is as without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cmaprof.analysis import by, stats
from cmaprof.analysis.compare.frame import COLUMNS, _stat_rows
from cmaprof.analysis.compare.sides import Side
from cmaprof.analysis.loaded import Recording

SECTION = "by_stack"
TITLE = "Pages per kernel stack class (record --by stack: the allocator's caller)"
#: Stack classes shown (by the largest side mean); the others are one row.
TOP_STACKS = 10
OTHER = "(other stack classes)"


def has_stacks(rec: Recording) -> bool:
    """Whether ``rec`` has ``page_alloc_by`` keyed by stack."""
    return by.has_by(rec) and "stack" in by.by_keys(rec)


def stack_class_pages(rec: Recording) -> dict[str, float]:
    """Pages per stack class of one recording, the not-keyed overflow included."""
    df = by.df_top_by(rec, "stack", "all", top=1 << 30, exclude_self=False)
    return {str(w): float(p) for w, p in zip(df["who"], df["pages"], strict=True)}


def _per_iteration(sides: list[Side]) -> list[list[dict[str, float]]] | None:
    """Per side, the stack class pages of each iteration that has them; None unless
    every side has one."""
    out = [[stack_class_pages(r) for r in s.recordings if has_stacks(r)] for s in sides]
    return out if all(out) else None


def _classes(vals: list[list[dict[str, float]]], top: int) -> tuple[list[str], list[str]]:
    """(the top classes by the largest side mean, largest first; the others)."""
    seen = {k for its in vals for it in its for k in it if k != by.OVERFLOW}

    def weight(k: str) -> float:
        return max(float(np.mean([it.get(k, 0.0) for it in its])) for its in vals)

    ranked = sorted(seen, key=lambda k: (-weight(k), k))
    return ranked[:top], ranked[top:]


def df_compare_by_stack(
    sides: list[Side], alpha: float = stats.ALPHA, top: int = TOP_STACKS
) -> pd.DataFrame:
    """Rows of :data:`COLUMNS` (section :data:`SECTION`, unit pages) for the ``top``
    stack classes, :data:`OTHER` and the overflow; empty unless every side has a
    recording made with ``--by stack``."""
    vals = _per_iteration(sides)
    if vals is None:
        return pd.DataFrame(columns=COLUMNS)
    head, rest = _classes(vals, top)
    labels = head + ([OTHER] if rest else [])
    if any(by.OVERFLOW in it for its in vals for it in its):
        labels.append(by.OVERFLOW)
    rows: list[dict[str, Any]] = []
    for label in labels:
        keys = rest if label == OTHER else [label]
        per_side = [[sum(it.get(k, 0.0) for k in keys) for it in its] for its in vals]
        rows += _stat_rows(sides, (SECTION, label, "pages"), list(per_side), alpha)
    return pd.DataFrame(rows, columns=COLUMNS)
