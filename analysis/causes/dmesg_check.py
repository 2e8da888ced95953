"""The kernel's own account of failed calls: dmesg ``cma: ... alloc failed`` lines,
parsed, and checked against the causes (:func:`check_against_dmesg`)."""

from __future__ import annotations

import pandas as pd

from cmaprof.analysis.causes.rules import EBUSY, EINTR, ENOMEM, Cause
from cmaprof.kernel import dmesg

#: The return value the kernel prints for each cause (``None``: no line is printed: 6.1
#: returns before the message for a request larger than the area; isolation refused,
#: migration failed and busy retries all end as -EBUSY).
KERNEL_RET: dict[Cause, tuple[int | None, ...]] = {
    # 6.1 returns before the message; kernels with CMA ranges ("mm, cma: support
    # multiple contiguous ranges, if requested", 6.15) start cma_range_alloc() at -EBUSY
    # and print it (measured on 7.3.4: "alloc failed, req-size: 70000 pages, ret: -16")
    Cause.TOO_LARGE_FOR_AREA: (None, -EBUSY),
    Cause.TOO_LARGE_FOR_AVAILABLE: (-ENOMEM,),
    Cause.NEVER_FITS: (-ENOMEM,),
    Cause.NO_ALIGNED_FREE_RANGE: (-ENOMEM,),
    Cause.ISOLATION_REFUSED: (-EBUSY,),
    Cause.MIGRATION_FAILED: (-EBUSY,),
    Cause.BUSY_RETRIES: (-EBUSY,),
    Cause.ENOMEM: (-ENOMEM,),
    Cause.INTERRUPTED: (-EINTR,),
}


def parse_dmesg_alloc_failed(text: str) -> pd.DataFrame:
    """The kernel's ``alloc failed`` lines in a dmesg capture, in order: ``area``,
    ``pages`` (req-size) and ``ret`` (:func:`cmaprof.kernel.dmesg.parse_alloc_failed`)."""
    return pd.DataFrame(dmesg.parse_alloc_failed(text), columns=["area", "pages", "ret"])


def check_against_dmesg(failures: pd.DataFrame, dmesg: pd.DataFrame) -> pd.DataFrame:
    """Each failed call next to the kernel's ``alloc failed`` line for it, matched in
    order per (area, pages): ``kernel_ret`` (null: no line), ``expected_ret`` (what
    :data:`KERNEL_RET` accepts for our cause, ``|``-separated) and ``agrees``.

    :param failures: :func:`df_cma_failures` rows (in call order).
    :param dmesg: :func:`parse_dmesg_alloc_failed` rows of the same run.
    """
    queues: dict[tuple[str, int], list[int]] = {}
    for r in dmesg.itertuples(index=False):
        queues.setdefault((str(r.area), int(r.pages)), []).append(int(r.ret))
    out = failures[["start_ns", "area", "pages_requested", "cause"]].copy()
    kernel, expected = [], []
    for r in out.sort_values("start_ns", kind="stable").itertuples():
        q = queues.get((str(r.area), int(r.pages_requested)), [])
        kernel.append(q.pop(0) if q else None)
        cause = str(r.cause)
        expected.append(KERNEL_RET.get(Cause(cause), ()) if cause != "unknown" else ())
    out = out.sort_values("start_ns", kind="stable")
    out["kernel_ret"] = pd.array(kernel, dtype="Int64")
    out["expected_ret"] = [
        "|".join("no line" if e is None else str(e) for e in acc) for acc in expected
    ]
    out["agrees"] = [k in acc for k, acc in zip(kernel, expected, strict=True)]
    return out.reset_index(drop=True)
