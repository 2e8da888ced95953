"""Failed calls as text: the report section (:func:`table_cma_failure_causes`) and the
causes of each side for ``compare`` (:func:`table_causes_compare`)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmaprof.analysis.causes.frames import causes_frame, df_cma_failures, has_cma_probe
from cmaprof.analysis.causes.rules import Cause
from cmaprof.analysis.redact import fmt_pfn

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording


WIDTH = 80


#: blocker pfns listed per call (the column holds all of them).
PFNS_SHOWN = 4


def _latency(ns: int) -> str:
    return f"{ns / 1e9:.2f} s" if ns >= 1e9 else f"{ns / 1e6:.2f} ms"


def table_cma_failure_causes(rec: Recording) -> str:
    """Failed cma_alloc() calls by cause (counts, shares, 100% total), then each call
    with the evidence that decided its cause; "" when no call failed."""
    df = df_cma_failures(rec)
    if df.empty:
        return ""
    by = causes_frame(df)
    out = [
        "Why cma_alloc() failed (each failed call: one cause)",
        f"{'cause':<44} {'calls':>7} {'share':>7}",
    ]
    for r in by.itertuples(index=False):
        out.append(f"{r.label[:44]:<44} {r.calls:>7} {r.share:>7.1%}")
    out.append(f"{'total':<44} {int(by['calls'].sum()):>7} {by['share'].sum():>7.1%}")
    out.append("")
    for r in df.itertuples(index=False):
        head = (
            f"{r.area} {r.pages_requested} pages align {r.align}, "
            f"{_latency(r.latency_ns)}, pid {r.pid} {r.comm}: {Cause(r.cause).label}"
        )
        out.extend(textwrap.wrap(head, WIDTH, subsequent_indent="    "))
        text = f"by {r.decided_by}: {r.evidence}"
        if r.blocker_pfns:
            pfns = [int(p) for p in str(r.blocker_pfns).split(",")]
            shown = ", ".join(fmt_pfn(p) for p in pfns[:PFNS_SHOWN])
            more = f" and {len(pfns) - PFNS_SHOWN} more" if len(pfns) > PFNS_SHOWN else ""
            text += f"; pfns {shown}{more}"
        if r.first_busy_pfn is not pd.NA and not pd.isna(r.first_busy_pfn):
            text += f"; first_busy_pfn {fmt_pfn(int(r.first_busy_pfn))}"
        out.extend(textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="    "))
    return "\n".join(out)


def table_causes_compare(sides: list[Any]) -> str:
    """Failed cma_alloc() calls by cause per side of ``cmaprof compare`` (calls summed
    over the side's iterations, share of the side's failed calls).

    :param sides: :class:`cmaprof.analysis.compare.Side` objects.
    """
    label_w, col_w = 30, 23
    out = ["cma_alloc() failed calls by cause (all iterations of a side; share)"]
    per_side: list[pd.Series | None] = []
    for s in sides:
        recs = [r for r in s.recordings if has_cma_probe(r)]
        if not recs:
            per_side.append(None)
            continue
        frames = [df_cma_failures(r) for r in recs]
        cat = pd.concat(frames) if any(len(f) for f in frames) else frames[0]
        per_side.append(cat["cause"].astype(str).value_counts())
    if all(p is None for p in per_side):
        return "\n".join(out + ["  not recorded (no cma probe on any side)"])
    if all(p is None or p.empty for p in per_side):
        return "\n".join(out + ["  none on any side"])
    out.append(
        " " * label_w + "".join(f"{s.name[: col_w - 2]:>{col_w - 2}}  " for s in sides).rstrip()
    )
    for c in Cause:
        if not any(p is not None and c.value in p.index for p in per_side):
            continue
        cells = []
        for p in per_side:
            if p is None:
                cells.append(f"{'-':>{col_w - 2}}  ")
                continue
            k = int(p.get(c.value, 0))
            cell = f"{k} ({k / p.sum():.0%})" if p.sum() else str(k)  # no failed call: no share
            cells.append(f"{cell:>{col_w - 2}}  ")
        out.append((f"{c.label[: label_w - 1]:<{label_w}}" + "".join(cells)).rstrip())
    totals = [f"{'-' if p is None else int(p.sum()):>{col_w - 2}}  " for p in per_side]
    out.append((f"{'total failed calls':<{label_w}}" + "".join(totals)).rstrip())
    return "\n".join(out)
