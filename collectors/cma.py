"""Collector for probes/cma.bpf.c: cma_alloc() calls streamed, histograms, releases,
and the CMA counters (vmstat, sysfs, debugfs) around the recording; where the time of
each call went (its phases: ``tables/cma_phases``, the functions attached per phase in
metadata ``cma_phases``; see :data:`PHASE_SYMBOLS`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.kernel.procfs import CmaArea
from cmaprof.probes import abi
from cmaprof.recording import schema

NONE_PFN = (1 << 64) - 1


#: outcome sources that carry an errno: the kernel's, or -EINTR inferred from SIGKILL
ERRNO_SOURCES = (abi.CMA_OUTCOME_ERRORNO, abi.CMA_OUTCOME_FATAL_SIGNAL)

#: Phase names (events.h CMA_PHASE_*), by code; the last, ``unattributed``, has no probe.
PHASES = abi.enum("CMA_PHASE_")

#: The functions of each phase (probes/cma.bpf.c cma_phase_enter_NAME/exit_NAME), by
#: presence in /proc/kallsyms: every group is attached, to the first of its names this
#: kernel has (newest first). Names and where they come from:
#: - ``search``: bitmap_find_next_zero_area_off() (lib/bitmap.c), the bitmap search of
#:   cma_alloc() (v3.17..6.11), __cma_alloc() (v6.11, "mm: cma: add cma_alloc_folio()")
#:   and cma_range_alloc() (~v6.15, Frank van der Linden's multi-range CMA areas); other
#:   callers (genalloc, IOMMU) search too, only the task of a call in flight counts.
#:   6.1 and 7.3 refuse a kprobe on it (measured in the guests): not seen there.
#: - ``contig``: alloc_contig_range() (v3.5, Linux kernel commit 041d3a8cdc18 "mm:
#:   page_alloc: introduce alloc_contig_range()"), alloc_contig_range_noprof() (v6.10,
#:   b951aaff5035 "mm: enable page allocation tagging"), alloc_contig_frozen_range_noprof()
#:   (~v7.0, the frozen-page CMA API: cma_range_alloc() calls it directly).
#: - ``isolate``: start_isolate_page_range(); ``undo``: undo_isolate_page_range()
#:   (mm/page_isolation.c, both since v3.5); ``test``: test_pages_isolated() (same file;
#:   its tracepoint page_isolation:test_pages_isolated fires only at its end).
#: - ``drain``: drain_all_pages() (the per-CPU free lists) and lru_cache_disable() (the
#:   per-CPU LRU batches, with the RCU grace period that publishes the disable count:
#:   v5.13, d479960e44f2 "mm: disable LRU pagevec during the migration temporarily").
#: - ``migrate_range``: __alloc_contig_migrate_range() (6.1; inlined away on 7.3.4),
#:   not static since v5.19
#:   (b2c9e2fbba32 "mm: make alloc_contig_range work at pageblock granularity": it is
#:   called from mm/page_isolation.c too, so it is not inlined away); its parts
#:   ``collect`` isolate_migratepages_range() (mm/compaction.c), ``reclaim``
#:   reclaim_clean_pages_from_list() (mm/vmscan.c) and ``migrate`` migrate_pages().
#: - ``take``: isolate_freepages_range() (mm/compaction.c): the range off the free lists.
#: - ``sleep``: msleep(): the sleep of a busy-retry loop. Mainline cma_alloc() retries
#:   at the next aligned position at once (6.1, 6.12, 7.3); Android's "ANDROID: mm: cma:
#:   retry allocations in cma_alloc" sleeps 100 ms per retry. Seen when a kernel has one.
PHASE_SYMBOLS: dict[str, tuple[tuple[str, ...], ...]] = {
    "search": (("bitmap_find_next_zero_area_off",),),
    "contig": (
        (
            "alloc_contig_frozen_range_noprof",
            "alloc_contig_frozen_range",
            "alloc_contig_range_noprof",
            "alloc_contig_range",
        ),
    ),
    "isolate": (("start_isolate_page_range",),),
    "drain": (("drain_all_pages",), ("lru_cache_disable",)),
    "migrate_range": (("__alloc_contig_migrate_range",),),
    "collect": (("isolate_migratepages_range",),),
    "reclaim": (("reclaim_clean_pages_from_list",),),
    "migrate": (("migrate_pages",),),
    "test": (("test_pages_isolated",),),
    "take": (("isolate_freepages_range",),),
    "undo": (("undo_isolate_page_range",),),
    "sleep": (("msleep",),),
}

#: Compiler clones that keep a function's entry (a kprobe there sees every call).
_CLONE_RE = re.compile(r"^(?P<base>[A-Za-z0-9_]+)\.(?:constprop|isra)\.\d+$")


def _refused(kind: str, sym: str, exc: BaseException) -> str:
    """Why the kernel would not let a phase function be probed, in one line (BCC's own
    text after its "Failed to attach ... to kprobe b'NAME', ")."""
    why = str(exc).split(f"{sym}', ", 1)[-1] if f"{sym}', " in str(exc) else str(exc)
    return f"the kernel refused a {kind} on {sym}: {why}"


def phase_symbol_choice(
    symbols: frozenset[str] | set[str],
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Which functions of :data:`PHASE_SYMBOLS` this kernel has: ``(found, missing)``,
    ``found`` phase -> symbols (a compiler clone ``NAME.constprop.N`` stands for NAME),
    ``missing`` phase -> why it cannot be seen. ``unattributed`` is never missing.

    :param symbols: the kernel's text symbols (``/proc/kallsyms`` T/t).
    """
    clones: dict[str, str] = {}
    for sym in symbols:
        m = _CLONE_RE.match(sym)
        if m:
            clones.setdefault(m.group("base"), sym)
    found: dict[str, list[str]] = {}
    missing: dict[str, str] = {}
    for phase, groups in PHASE_SYMBOLS.items():
        got = []
        for group in groups:
            pick = next((s for s in group if s in symbols), None) or next(
                (clones[s] for s in group if s in clones), None
            )
            if pick is not None:
                got.append(pick)
        if got:
            found[phase] = got
        else:
            names = " or ".join(s for g in groups for s in g)
            missing[phase] = f"no {names} in /proc/kallsyms (inlined or absent)"
    return found, missing


def _cstr(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


class CmaCollector(Collector):
    """Drains the cma ring buffer into rows of the ``cma_alloc`` table.

    :param t0_ns: CLOCK_MONOTONIC at the start of counting (bpf_ktime_get_ns base).
    """

    name = "cma"

    def __init__(self, bpf: Any, cma_areas: list[CmaArea], call_symbol: str | None = None) -> None:
        self.bpf = bpf
        self.call_symbol = call_symbol
        self.areas = [a for a in cma_areas if a.end_pfn is not None]
        self.t0_ns = 0
        self.rows: list[dict[str, Any]] = []
        self._flushed = 0
        self._ring = False
        self.phase_rows: list[dict[str, Any]] = []
        self._phases_flushed = 0
        #: phase -> symbols attached; phase -> why it is not seen (see attach_phases)
        self.phases_attached: dict[str, list[str]] = {}
        self.phases_missing: dict[str, str] = {
            p: "no kprobes on the call (the cma tracepoints bracket it)"
            for p in PHASES
            if p != "unattributed"
        }
        self._phase_ids: list[int] = []

    @classmethod
    def create(cls, ctx: CollectorContext) -> CmaCollector:
        return cls(ctx.bpf, ctx.cma_areas, ctx.call_symbol)

    def start(self, t0_ns: int) -> None:
        self.open(t0_ns)

    def interval_tables(self, t_range: tuple[int, int]) -> dict[str, pa.Table]:
        out = {}
        calls = self.new_rows_table()
        if calls is not None:
            out["cma_alloc"] = calls
        rows = self.phase_rows[self._phases_flushed :]
        self._phases_flushed = len(self.phase_rows)
        if rows:
            out["cma_phases"] = self._phase_table(rows)
        return out

    def final_tables(self) -> dict[str, pa.Table]:
        return {
            "cma_alloc": self.calls_table(),
            "cma_phases": self._phase_table(self.phase_rows),
            "cma_latency_hist": self.hist_table(),
            "cma_release": self.release_table(),
        }

    def metadata(self, meta: Any, final: bool) -> None:
        """``cma_phases``: the functions attached per phase, and why the others are not
        seen (analysis.phases shows those as "-" with the reason)."""
        meta["cma_phases"] = {
            "attached": {p: list(s) for p, s in self.phases_attached.items()},
            "missing": dict(self.phases_missing),
        }

    def attach(self) -> None:
        """Bracket every call with a kprobe/kretprobe on :attr:`call_symbol` (compiled in
        with ``HAVE_KPROBE_CMA_ALLOC``); without one the tracepoints bracket the calls.
        Then the phase functions (:meth:`attach_phases`)."""
        if self.call_symbol is None:
            return
        self.bpf.attach_kprobe(event=self.call_symbol, fn_name="cma_call_entry")
        self.bpf.attach_kretprobe(event=self.call_symbol, fn_name="cma_call_return")
        from cmaprof.collectors import features

        self.attach_phases(features.kallsyms_text_symbols())

    def attach_phases(self, symbols: frozenset[str]) -> None:
        """A kprobe/kretprobe pair on every phase function this kernel has. A program
        the verifier refuses is an error (raised); a function that cannot be probed
        (a kprobe blacklist, a symbol that is not a function entry) is a phase not seen,
        with the kernel's reason."""
        from bcc import BPF

        found, missing = phase_symbol_choice(symbols)
        self.phases_missing = missing
        for phase, syms in found.items():
            enter = self.bpf.load_func(f"cma_phase_enter_{phase}", BPF.KPROBE)
            exit_ = self.bpf.load_func(f"cma_phase_exit_{phase}", BPF.KPROBE)
            for sym in syms:
                try:
                    self.bpf.attach_kprobe(event=sym, fn_name=enter.name)
                except Exception as exc:  # noqa: BLE001 - BCC raises a bare Exception
                    self.phases_missing.setdefault(phase, _refused("kprobe", sym, exc))
                    continue
                try:
                    self.bpf.attach_kretprobe(event=sym, fn_name=exit_.name)
                except Exception as exc:  # noqa: BLE001 - same
                    self.bpf.detach_kprobe(event=sym, fn_name=enter.name)
                    self.phases_missing.setdefault(phase, _refused("kretprobe", sym, exc))
                    continue
                self.phases_attached.setdefault(phase, []).append(sym)
                self.phases_missing.pop(phase, None)
        self._phase_ids = [i for i, p in enumerate(PHASES) if p in self.phases_attached]

    def open(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.bpf["cma_events"].open_ring_buffer(self._on_event)
        self._ring = True

    def _on_event(self, ctx: Any, data: Any, size: int) -> None:
        e = self.bpf["cma_events"].event(data)
        c = e  # struct cma_event starts with the cma_call fields
        self.rows.append(
            {
                "start_ns": int(c.start_ns) - self.t0_ns,
                "latency_ns": int(e.latency_ns),
                "area_idx": int(e.area),
                "area": _cstr(c.name)
                or (self.areas[e.area].name if e.area < len(self.areas) else ""),
                "pages_requested": int(c.count),
                "align": int(c.align),
                "success": bool(e.success),
                "outcome_source": int(e.outcome_source),
                "errno": int(c.err) if e.outcome_source in ERRNO_SOURCES else None,
                "busy_retries": int(c.busy_retries),
                "migrate_succeeded": int(c.migrate_succeeded),
                "migrate_failed": int(c.migrate_failed),
                "isolate_tests": int(c.isolate_tests),
                "isolate_failures": int(c.isolate_failures),
                "first_busy_pfn": None if c.first_busy_pfn == NONE_PFN else int(c.first_busy_pfn),
                "pfn": None if c.pfn == NONE_PFN else int(c.pfn),
                "pid": int(e.pid),
                "tgid": int(e.tgid),
                "comm": _cstr(e.comm),
            }
        )
        start_ns, tid = int(c.start_ns) - self.t0_ns, int(e.pid)
        for i in [*self._phase_ids, abi.CMA_PHASE_UNATTRIBUTED]:
            self.phase_rows.append(
                {
                    "start_ns": start_ns,
                    "pid": tid,
                    "phase_id": i,
                    "entries": int(e.phase_entries[i]),
                    "ns": int(e.phase_ns[i]),
                    "failed_ns": int(e.phase_failed_ns[i]),
                    "lost": int(e.phase_lost[i]),
                }
            )

    def poll(self) -> None:
        """Consume whatever the ring buffer holds (non-blocking)."""
        if self._ring:
            self.bpf.ring_buffer_consume()

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        cols = {f.name: [r[f.name] for r in rows] for f in schema.CMA_ALLOC}
        return pa.table(
            {f.name: pa.array(cols[f.name], type=f.type) for f in schema.CMA_ALLOC},
            schema=schema.CMA_ALLOC,
        )

    def _phase_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        want = schema.SCHEMAS["cma_phases"]
        return schema.to_table("cma_phases", {f.name: [r[f.name] for r in rows] for f in want})

    def new_rows_table(self) -> pa.Table | None:
        """The rows since the last call (for ``series/cma_alloc``), or None."""
        rows = self.rows[self._flushed :]
        self._flushed = len(self.rows)
        return self._table(rows) if rows else None

    def calls_table(self) -> pa.Table:
        return self._table(self.rows)

    def hist_table(self) -> pa.Table:
        rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["cma_latency_hist"]}
        for k, v in self.bpf["cma_latency"].items():
            rows["area_idx"].append(k.area)
            rows["size_log2"].append(k.size_log2)
            rows["success"].append(bool(k.success))
            rows["slot"].append(k.slot)
            rows["calls"].append(v.value)
        return schema.to_table("cma_latency_hist", rows)

    def release_table(self) -> pa.Table:
        pages, calls = self.bpf["cma_release_pages"], self.bpf["cma_release_calls"]
        rows: dict[str, list] = {"area_idx": [], "calls": [], "pages": []}
        for i in range(abi.MAX_CMA_AREAS + 1):
            n = sum(calls[calls.Key(i)])
            if n:
                rows["area_idx"].append(i if i < abi.MAX_CMA_AREAS else abi.CMA_AREA_NONE)
                rows["calls"].append(n)
                rows["pages"].append(sum(pages[pages.Key(i)]))
        return schema.to_table("cma_release", rows)


def read_cma_used(root: Path = Path("/")) -> dict[str, tuple[int, int]]:
    """debugfs ``used`` and ``count`` (pages) of every CMA area."""
    out = {}
    d = root / "sys/kernel/debug/cma"
    if d.is_dir():
        for a in sorted(d.iterdir()):
            try:
                out[a.name] = (int((a / "used").read_text()), int((a / "count").read_text()))
            except (OSError, ValueError):
                continue
    return out


def cma_counter_files(root: Path = Path("/")) -> dict[str, Path]:
    """sysfs per-area counters (pages): ``<area>/alloc_pages_success|fail``, and debugfs
    ``<area>/used``, by the relative name they get in a recording's snapshot."""
    out: dict[str, Path] = {}
    s = root / "sys/kernel/mm/cma"
    if s.is_dir():
        for a in sorted(s.iterdir()):
            for f in ("alloc_pages_success", "alloc_pages_fail"):
                if (a / f).is_file():
                    out[f"cma/{a.name}/{f}"] = a / f
    d = root / "sys/kernel/debug/cma"
    if d.is_dir():
        for a in sorted(d.iterdir()):
            for f in ("used", "count", "maxchunk"):
                if (a / f).is_file():
                    out[f"cma/{a.name}/{f}"] = a / f
    return out


def cma_used_rows(t_ns: int, used: dict[str, tuple[int, int]]) -> dict[str, list]:
    return {
        "t_ns": [t_ns] * len(used),
        "area": list(used),
        "used_pages": [u for u, _ in used.values()],
        "count_pages": [c for _, c in used.values()],
    }
