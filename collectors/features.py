"""Kernel features by presence, turned into the probes' ``-D`` options.

Never a version number: a tracepoint directory, a field in its format file, or a
kprobe-able symbol. Each define names the kernel change it follows (see the
comment at the top of the probe that uses it).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from cmaprof.collectors import tracefs
from cmaprof.kernel import formats


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


#: The bulk allocator's entry point, newest name first (probes/bulk.bpf.c): v6.10+, then
#: v5.13..v6.9. Older kernels have no bulk allocator: every page has its mm_page_alloc.
BULK_SYMBOLS = ("alloc_pages_bulk_noprof", "__alloc_pages_bulk")
#: Present only while alloc_pages_bulk_noprof still took a page_list (v6.10..v6.13);
#: renamed by 6bf9b5b40af3 in the release where c8b979530f27 dropped the list (v6.14).
BULK_LIST_MARKER = "alloc_pages_bulk_array_mempolicy_noprof"


#: cma_alloc()'s common path, newest first (probes/cma.bpf.c cma_call_entry): 7.x's
#: frozen-page API (__cma_alloc_frozen(), which hugetlb reaches without cma_alloc()),
#: __cma_alloc() (v6.11, "mm: cma: add cma_alloc_folio()"), then cma_alloc() itself.
CMA_CALL_SYMBOLS = ("__cma_alloc_frozen", "__cma_alloc", "cma_alloc")


def cma_call_symbol(tfs: Path) -> str | None:
    """The function whose kprobe brackets every cma allocation here, or None (no kprobes
    or none of :data:`CMA_CALL_SYMBOLS`: the cma tracepoints bracket the calls)."""
    return next((s for s in CMA_CALL_SYMBOLS if can_kprobe(tfs, s)), None)


def bulk_symbol() -> str | None:
    """The bulk allocator function this kernel has (a kallsyms text symbol), or None."""
    syms = kallsyms_text_symbols()
    return next((s for s in BULK_SYMBOLS if s in syms), None)


def bulk_has_list(symbol: str | None) -> bool:
    """Whether ``symbol`` takes a ``page_list`` before ``page_array``.

    ``__alloc_pages_bulk`` always did; ``alloc_pages_bulk_noprof`` did until v6.14, known
    by :data:`BULK_LIST_MARKER` (a NUMA-only function: without CONFIG_NUMA a v6.10..v6.13
    kernel is taken for v6.14+).
    """
    return symbol == "__alloc_pages_bulk" or (
        symbol is not None and BULK_LIST_MARKER in kallsyms_text_symbols()
    )


def bulk_unavailable_reason(tfs: Path) -> str | None:
    """Why the bulk probe cannot run here (one line), or None when it can."""
    if not kprobes_available(tfs):
        return (
            "no kprobes (CONFIG_KPROBES off): bulk-allocator pages are counted by "
            "pgalloc_* but cannot be traced on this kernel"
        )
    if not kallsyms_text_symbols():
        return "/proc/kallsyms unreadable: cannot find the bulk allocator to kprobe"
    if bulk_symbol() is None:
        return (
            f"no bulk allocator in /proc/kallsyms ({' or '.join(BULK_SYMBOLS)}): "
            f"kernels before 5.13 have none, every page has an mm_page_alloc event"
        )
    return None


def blockers_unavailable_reason(tfs: Path) -> str | None:
    """Why the blockers probe cannot run here (one line), or None when it can: it needs
    the cma probe's call in flight, the test_pages_isolated tracepoint and a CMA area
    with a known pfn range (its origin array is indexed by pfn)."""
    from cmaprof.collectors import procfs

    if not tracefs.has_event(tfs, "page_isolation/test_pages_isolated"):
        return "kernel lacks page_isolation/test_pages_isolated (CONFIG_MEMORY_ISOLATION)"
    if not any(tracefs.has_event(tfs, e) for e in ("cma/cma_alloc_start", "cma/cma_alloc")):
        return "kernel lacks the cma tracepoints (no CONFIG_CMA)"
    if not any(a.end_pfn is not None for a in procfs.read_cma_areas()):
        return "no CMA area with a known pfn range (debugfs cma/<area>/base_pfn, count)"
    return None


def blockers_origin_entries(root: Path = Path("/")) -> int:
    """Entries of the blockers probe's origin array: one per page of every CMA area."""
    from cmaprof.collectors import procfs

    return max(1, sum(a.count or 0 for a in procfs.read_cma_areas(root) if a.end_pfn is not None))


def available_probes(tfs: Path) -> list[str]:
    """The probes whose tracepoints (bulk: kprobes and symbol) this kernel has, in
    registry order; opt-in probes (stream: ``record --events``) are never listed."""
    from cmaprof import probes

    return [
        p.name
        for p in probes.PROBES.values()
        if not p.opt_in
        and (
            bulk_unavailable_reason(tfs) is None
            if p.name == "bulk"
            else blockers_unavailable_reason(tfs) is None
            if p.name == "blockers"
            else any(tracefs.has_event(tfs, e) for e in p.tracepoints)
        )
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
        out["HAVE_KPROBE_CMA_ALLOC"] = int(cma_call_symbol(tfs) is not None)
    if "bulk" in names:
        out["BULK_HAS_LIST"] = int(bulk_has_list(bulk_symbol()))
    if "blockers" in names:
        out["HAVE_TEST_PAGES_ISOLATED"] = int(
            tracefs.has_event(tfs, "page_isolation/test_pages_isolated")
        )
        out["HAVE_KPROBE_PUTBACK"] = int(can_kprobe(tfs, "putback_movable_pages"))
        out["BLK_ORIGIN_ENTRIES"] = blockers_origin_entries()
    if "migrate" in names:
        mig = event_format(tfs, "migrate/mm_migrate_pages")
        out["HAVE_MIGRATE_START"] = int(tracefs.has_event(tfs, "migrate/mm_migrate_pages_start"))
        out["HAVE_THP_FIELDS"] = int(mig is not None and mig.has_field("thp_split"))
    return out
