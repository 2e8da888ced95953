"""One row of ``cmaprof doctor``'s report (:class:`Check`), its statuses and the
names of every check in report order."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "fail"


#: Names of the checks, in the order :func:`run_checks` returns them.
CHECK_NAMES = (
    "root",
    "bcc",
    "headers",
    "tracefs",
    "events/kmem",
    "events/cma",
    "events/migrate",
    "events/page_isolation",
    "events/compaction",
    "cma_areas",
    "btf",
    "bpf_stats",
    "lockdown",
    "kptr_restrict",
    "kprobes",
    "raw_tracepoint",
    "other_tracers",
)


@dataclass
class Check:
    """One line of the doctor's report.

    :param name: one of :data:`CHECK_NAMES`.
    :param status: ``"ok"``, ``"warn"`` or ``"fail"``.
    :param detail: what was found (and, when something is missing, what is lost).
    :param fix: a command or action that fixes a warn/fail; empty when there is none.
    :param required: recording is impossible while this check fails.
    """

    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False
