"""Why each cma_alloc() call failed: one cause per failed call, and the evidence for it.

The vocabulary is :class:`Cause` (defined here once). :func:`df_cma_failures` gives
every failed call of ``tables/cma_alloc`` exactly one cause, decided from what the
recording holds, in this order (the first rule that applies wins):

1. the area: a request larger than the area's ``count`` (debugfs) can never succeed
   (6.1 counts the failure; 6.12 returns before any event or counter);
2. the layout (:mod:`cmaprof.analysis.layout`): no position aligned to ``2**align`` pages
   (relative to pfn 0) leaves room for the request inside the area: it can never fit;
3. the kernel's own return value where the kernel gives it (``errorno`` of
   ``cma_alloc_finish``, ~6.3 on): -EINTR, -ENOMEM, -EBUSY, anything else; where the
   kernel has no errorno, a failed call that returned with SIGKILL pending is -EINTR
   (the cma probe's ``inferred: SIGKILL pending at return``);
4. whether a range was tried at all (the finish event's pfn, busy retries, isolation
   tests): when none was, the bitmap search found no free aligned run: the request was
   larger than the free pages of the area (debugfs ``used`` sampled before the call) or
   there was no aligned free range of its size;
5. for -EBUSY (or busy retries where the kernel gives no errno): the pages that blocked
   it (``cma_blockers``: migrate stage and pages left at the isolation test = migration
   failed; isolate stage = isolation refused), else the per-call counts (pages that
   failed to migrate; busy retries without a failed isolation test = isolation
   refused), else -EBUSY after N busy retries;
6. otherwise unknown, with the raw call row as the evidence.

``decided_by`` names the rule, ``evidence`` says in words what decided it and what the
recording lacked. pfns stay out of ``evidence`` (``first_busy_pfn``, ``blocker_pfns``
hold them, so ``--redact`` can null them).

The rules are in :mod:`.rules`, the frames in :mod:`.frames`, the report and compare text
in :mod:`.text`, the dmesg cross-check in :mod:`.dmesg_check`, the figure in :mod:`.plot`;
this package re-exports their public names.
"""

from __future__ import annotations

from cmaprof.analysis.causes.dmesg_check import (
    KERNEL_RET,
    check_against_dmesg,
    parse_dmesg_alloc_failed,
)
from cmaprof.analysis.causes.frames import (
    COLUMNS,
    causes_frame,
    df_cma_failure_causes,
    df_cma_failures,
    failures_frame,
    has_cma_probe,
)
from cmaprof.analysis.causes.plot import plot_failed_calls_by_cause
from cmaprof.analysis.causes.rules import (
    CAUSE_NAMES,
    EBUSY,
    EINTR,
    ENOMEM,
    FATAL_SIGNAL_SOURCE,
    LABELS,
    Cause,
    Evidence,
    classify,
    errno_name,
    optional_int,
)
from cmaprof.analysis.causes.text import (
    PFNS_SHOWN,
    WIDTH,
    table_causes_compare,
    table_cma_failure_causes,
)

__all__ = [
    "CAUSE_NAMES",
    "COLUMNS",
    "EBUSY",
    "EINTR",
    "ENOMEM",
    "FATAL_SIGNAL_SOURCE",
    "KERNEL_RET",
    "LABELS",
    "PFNS_SHOWN",
    "WIDTH",
    "Cause",
    "Evidence",
    "causes_frame",
    "check_against_dmesg",
    "classify",
    "df_cma_failure_causes",
    "df_cma_failures",
    "errno_name",
    "failures_frame",
    "has_cma_probe",
    "optional_int",
    "parse_dmesg_alloc_failed",
    "plot_failed_calls_by_cause",
    "table_causes_compare",
    "table_cma_failure_causes",
]
