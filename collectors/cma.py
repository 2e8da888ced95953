"""Collector for probes/cma.bpf.c: cma_alloc() calls streamed, histograms, releases,
and the CMA counters (vmstat, sysfs, debugfs) around the recording.
"""

from __future__ import annotations

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

    @classmethod
    def create(cls, ctx: CollectorContext) -> CmaCollector:
        return cls(ctx.bpf, ctx.cma_areas, ctx.call_symbol)

    def start(self, t0_ns: int) -> None:
        self.open(t0_ns)

    def interval_tables(self, t_range: tuple[int, int]) -> dict[str, pa.Table]:
        calls = self.new_rows_table()
        return {} if calls is None else {"cma_alloc": calls}

    def final_tables(self) -> dict[str, pa.Table]:
        return {
            "cma_alloc": self.calls_table(),
            "cma_latency_hist": self.hist_table(),
            "cma_release": self.release_table(),
        }

    def attach(self) -> None:
        """Bracket every call with a kprobe/kretprobe on :attr:`call_symbol` (compiled in
        with ``HAVE_KPROBE_CMA_ALLOC``); without one the tracepoints bracket the calls."""
        if self.call_symbol is None:
            return
        self.bpf.attach_kprobe(event=self.call_symbol, fn_name="cma_call_entry")
        self.bpf.attach_kretprobe(event=self.call_symbol, fn_name="cma_call_return")

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
