"""Kernel features by presence, turned into the probes' ``-D`` options.

Never a version number: a tracepoint directory, a field in its format file, or a
kprobe-able symbol. Each define names the kernel change it follows (see the
comment at the top of the probe that uses it).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from cmaprof.analysis import formats
from cmaprof.collectors import tracefs


def event_format(tfs: Path, event: str) -> formats.EventFormat | None:
    """The parsed format of ``system/event``, or None when the kernel lacks it."""
    path = tfs / "events" / event / "format"
    try:
        text = path.read_text()
    except OSError:
        return None
    system, _, name = event.partition("/")
    return formats.parse_format(text, system, name, str(path))


@cache
def kallsyms_text_symbols() -> frozenset[str]:
    """Names of the kernel's text symbols (``T``/``t`` in /proc/kallsyms)."""
    try:
        lines = Path("/proc/kallsyms").read_text().splitlines()
    except OSError:
        return frozenset()
    return frozenset(p[2] for p in (line.split() for line in lines) if len(p) >= 3 and p[1] in "Tt")


def kprobes_available(tfs: Path) -> bool:
    """CONFIG_KPROBES (and kprobe events) present: tracefs has ``kprobe_events``."""
    return (tfs / "kprobe_events").exists()


def can_kprobe(tfs: Path, symbol: str) -> bool:
    return kprobes_available(tfs) and symbol in kallsyms_text_symbols()


def available_probes(tfs: Path) -> list[str]:
    """The probes whose tracepoints this kernel has, in registry order."""
    from cmaprof import probes

    return [
        p.name
        for p in probes.PROBES.values()
        if any(tracefs.has_event(tfs, e) for e in p.tracepoints)
    ]


def defines(tfs: Path, names: list[str]) -> dict[str, int | str]:
    """The ``-D`` options for compiling ``names`` on the running kernel."""
    out: dict[str, int | str] = {}
    if "cma" in names:
        start = event_format(tfs, "cma/cma_alloc_start")
        finish = event_format(tfs, "cma/cma_alloc_finish")
        out["HAVE_CMA_START"] = int(start is not None)
        if start is not None:
            out["CMA_START_COUNT"] = (
                "request_count" if start.has_field("request_count") else "count"
            )
        out["HAVE_CMA_FINISH"] = int(finish is not None)
        out["HAVE_CMA_ERRORNO"] = int(finish is not None and finish.has_field("errorno"))
        out["HAVE_CMA_BUSY_RETRY"] = int(tracefs.has_event(tfs, "cma/cma_alloc_busy_retry"))
        out["HAVE_OLD_CMA_ALLOC"] = int(tracefs.has_event(tfs, "cma/cma_alloc"))
        out["HAVE_CMA_RELEASE"] = int(tracefs.has_event(tfs, "cma/cma_release"))
        out["HAVE_TEST_PAGES_ISOLATED"] = int(
            tracefs.has_event(tfs, "page_isolation/test_pages_isolated")
        )
        out["HAVE_KPROBE_CMA_ALLOC"] = int(can_kprobe(tfs, "cma_alloc"))
    if "migrate" in names:
        mig = event_format(tfs, "migrate/mm_migrate_pages")
        out["HAVE_MIGRATE_START"] = int(tracefs.has_event(tfs, "migrate/mm_migrate_pages_start"))
        out["HAVE_THP_FIELDS"] = int(mig is not None and mig.has_field("thp_split"))
    return out
