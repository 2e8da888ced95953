"""Collector for probes/page_alloc.bpf.c: calibrate, validate, attach, read the cube.

Start-up, before anything is counted:

1. *Calibration.* For a moment ``kmem:mm_page_alloc`` is taken twice, as a raw
   tracepoint (``struct page *``) and as a classic one (the record's ``pfn``), and the
   two halves of each call are paired per CPU. The consensus of ``page - pfn * size``
   gives the base of the memory map (vmemmap; randomised under KASLR and not in
   kallsyms without KALLSYMS_ALL), so the main program turns a ``struct page *``
   into a pfn without reading any kernel symbol. The address stays in the BPF
   config map; it is never written to the recording.
2. *Validation.* The zone and node that ``page->flags`` gives with the shifts of the
   compile-time headers (which may belong to another kernel version) are compared
   with ``/proc/zoneinfo`` on every calibration pfn whose zone span is unambiguous.
   Any disagreement switches the program to the pfn-span map and says so in the
   recording (``zone_source``).
"""

from __future__ import annotations

import collections
import mmap
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from cmaprof.analysis import schema
from cmaprof.collectors.procfs import CmaArea, Zone, populated_spans, unambiguous_zone
from cmaprof.errors import EnvironmentProblem

ZONE_SOURCE_PAGE_FLAGS = 0
ZONE_SOURCE_PFN_SPANS = 1
KEY_FIELDS = [f for f, _ in schema.PAGE_ALLOC_KEYS]
MAX_ZONE_SPANS = 64  # events.h
MAX_CMA_AREAS = 20  # events.h


@dataclass
class Calibration:
    """What start-up learnt about the running kernel (no addresses)."""

    pairs: int = 0
    page_struct_size: int = 0
    agreeing_pairs: int = 0
    layout: dict[str, int] = field(default_factory=dict)
    zone_source: str = "page_flags"
    zone_checks: int = 0
    zone_mismatches: int = 0
    zone_reason: str = ""
    vmemmap_base: int = 0  # kernel address: kept in memory only

    def as_metadata(self) -> dict[str, Any]:
        return {
            "calibration_pairs": self.pairs,
            "calibration_agreeing_pairs": self.agreeing_pairs,
            "page_struct_size": self.page_struct_size,
            "header_layout": self.layout,
            "zone_source": self.zone_source,
            "zone_checks": self.zone_checks,
            "zone_mismatches": self.zone_mismatches,
            "zone_source_reason": self.zone_reason,
        }


def _touch_pages(nbytes: int) -> None:
    """Allocate and touch ``nbytes`` of anonymous memory: allocations to calibrate on."""
    m = mmap.mmap(-1, nbytes)
    try:
        for off in range(0, nbytes, mmap.PAGESIZE):
            m[off] = 1
    finally:
        m.close()


def _sum_percpu(leaves: Any, fields: list[str]) -> list[int]:
    return [sum(getattr(leaf, f) for leaf in leaves) for f in fields]


class PageAllocCollector:
    """Loads page_alloc.bpf.c and turns its maps into Arrow tables.

    :param zones: parsed /proc/zoneinfo of the running kernel.
    :param cma_areas: CMA areas whose ranges are known; index = ``cma_area_idx``.
    """

    name = "page_alloc"

    def __init__(self, bpf: Any, zones: list[Zone], cma_areas: list[CmaArea]) -> None:
        self.bpf = bpf
        self.zones = zones
        self.cma_areas = [a for a in cma_areas if a.end_pfn is not None]
        self.calibration = Calibration()
        self.attached = False

    def calibrate(self, timeout_s: float = 5.0) -> Calibration:
        """Pair struct page pointers with pfns, then validate page->flags zones."""
        b = self.bpf
        b.attach_raw_tracepoint(tp=b"mm_page_alloc", fn_name=b"calib_raw")
        try:
            b.attach_tracepoint(tp=b"kmem:mm_page_alloc", fn_name=b"calib_tp")
            try:
                deadline = time.monotonic() + timeout_s
                want = 64
                while time.monotonic() < deadline:
                    _touch_pages(4 << 20)
                    if sum(b["calib_count"][b["calib_count"].Key(0)]) >= want:
                        break
            finally:
                b.detach_tracepoint(tp=b"kmem:mm_page_alloc")
        finally:
            b.detach_raw_tracepoint(tp=b"mm_page_alloc")

        counts = list(b["calib_count"][b["calib_count"].Key(0)])
        pairs: list[tuple[int, int, int]] = []
        table = b["calib_pairs"]
        for i in range(max(counts, default=0)):
            for cpu, leaf in enumerate(table[table.Key(i)]):
                if i < counts[cpu]:
                    pairs.append((leaf.pfn, leaf.page, leaf.flags))
        lay = b["layout"][b["layout"].Key(0)]
        cal = self.calibration
        cal.layout = {
            "zones_pgshift": lay.zones_pgshift,
            "zones_mask": lay.zones_mask,
            "nodes_pgshift": lay.nodes_pgshift,
            "nodes_mask": lay.nodes_mask,
            "header_page_struct_size": lay.page_struct_size,
        }
        cal.pairs = len(pairs)
        if len(pairs) < 8:
            raise EnvironmentProblem(
                f"calibration saw only {len(pairs)} kmem:mm_page_alloc events in {timeout_s:.0f} s "
                f"(tracepoint disabled or filtered?); cannot map struct page to pfn"
            )
        size = self._struct_page_size(pairs)
        bases = collections.Counter(page - pfn * size for pfn, page, _ in pairs)
        base, agree = bases.most_common(1)[0]
        if agree < 0.9 * len(pairs):
            raise EnvironmentProblem(
                f"calibration inconsistent: only {agree} of {len(pairs)} (page, pfn) pairs agree "
                f"on the memory map base; report this with `cmaprof doctor` output"
            )
        cal.page_struct_size, cal.vmemmap_base, cal.agreeing_pairs = size, base, agree
        self._validate_zones(pairs)
        return cal

    @staticmethod
    def _struct_page_size(pairs: list[tuple[int, int, int]]) -> int:
        """sizeof(struct page) on the running kernel, from pointer and pfn differences."""
        votes: collections.Counter[int] = collections.Counter()
        ref = pairs[0]
        for pfn, page, _ in pairs[1:]:
            dpfn = pfn - ref[0]
            if dpfn and (page - ref[1]) % dpfn == 0:
                votes[(page - ref[1]) // dpfn] += 1
        if not votes:
            raise EnvironmentProblem("calibration: all sampled allocations had the same pfn")
        size, _ = votes.most_common(1)[0]
        if size <= 0 or size > 4096:
            raise EnvironmentProblem(f"calibration: implausible sizeof(struct page) = {size}")
        return size

    def _validate_zones(self, pairs: list[tuple[int, int, int]]) -> None:
        cal, lay = self.calibration, self.calibration.layout
        checks = mismatches = 0
        example = ""
        for pfn, _, flags in pairs:
            z = unambiguous_zone(self.zones, pfn)
            if z is None:
                continue
            checks += 1
            zone = (flags >> lay["zones_pgshift"]) & lay["zones_mask"]
            node = (flags >> lay["nodes_pgshift"]) & lay["nodes_mask"]
            if (zone, node) != (z.idx, z.node):
                mismatches += 1
                example = example or (
                    f"pfn {pfn:#x}: page->flags says node {node} zone {zone}, "
                    f"zoneinfo says node {z.node} zone {z.idx} ({z.name})"
                )
        cal.zone_checks, cal.zone_mismatches = checks, mismatches
        if mismatches:
            cal.zone_source = "pfn_spans"
            cal.zone_reason = (
                f"page->flags zone/node (shifts from the compile-time headers: "
                f"ZONES_PGSHIFT={lay['zones_pgshift']}, "
                f"NODES_PGSHIFT={lay['nodes_pgshift']}) disagreed with "
                f"/proc/zoneinfo on {mismatches} of {checks} pfns, e.g. {example}; "
                f"using the pfn-span map (first matching span wins where "
                f"spans overlap)"
            )
        elif checks == 0:
            cal.zone_reason = "no sampled pfn had an unambiguous zone span; page->flags unvalidated"
        else:
            cal.zone_reason = f"page->flags agreed with /proc/zoneinfo on {checks} of {checks} pfns"

    def configure(self) -> None:
        """Write the config, zone spans and CMA ranges into the program's maps."""
        b, cal = self.bpf, self.calibration
        spans = populated_spans(self.zones)
        if len(spans) > MAX_ZONE_SPANS:
            raise EnvironmentProblem(f"{len(spans)} zone spans exceed MAX_ZONE_SPANS")
        st = b["zone_spans"]
        for i, z in enumerate(spans):
            leaf = st.Leaf()
            leaf.start, leaf.end, leaf.node, leaf.zone = z.start_pfn, z.end_pfn, z.node, z.idx
            st[st.Key(i)] = leaf
        if len(self.cma_areas) > MAX_CMA_AREAS:
            raise EnvironmentProblem(f"{len(self.cma_areas)} CMA areas exceed MAX_CMA_AREAS")
        ct = b["cma_ranges"]
        for i, a in enumerate(self.cma_areas):
            leaf = ct.Leaf()
            leaf.start, leaf.end = a.base_pfn, a.end_pfn
            ct[ct.Key(i)] = leaf
        cfg = b["config"].Leaf()
        cfg.vmemmap_base = cal.vmemmap_base
        cfg.page_struct_size = cal.page_struct_size
        cfg.enabled = 0
        cfg.zone_source = (
            ZONE_SOURCE_PFN_SPANS if cal.zone_source == "pfn_spans" else ZONE_SOURCE_PAGE_FLAGS
        )
        cfg.nr_spans = len(spans)
        cfg.nr_cma = len(self.cma_areas)
        b["config"][b["config"].Key(0)] = cfg

    def attach(self) -> None:
        self.bpf.attach_raw_tracepoint(tp=b"mm_page_alloc", fn_name=b"page_alloc_raw")
        self.attached = True

    def set_enabled(self, on: bool) -> None:
        cfg_t = self.bpf["config"]
        cfg = cfg_t[cfg_t.Key(0)]
        cfg.enabled = 1 if on else 0
        cfg_t[cfg_t.Key(0)] = cfg

    def detach(self) -> None:
        if self.attached:
            self.bpf.detach_raw_tracepoint(tp=b"mm_page_alloc")
            self.attached = False

    def close(self) -> None:
        self.detach()

    # -- reading ----------------------------------------------------------------
    def read_cube(self) -> dict[tuple, tuple[int, int]]:
        """The cumulative cube: key tuple (in KEY_FIELDS order) -> (allocs, pages)."""
        out: dict[tuple, tuple[int, int]] = {}
        for k, leaves in self.bpf["page_alloc"].items():
            key = tuple(
                getattr(k, f)
                for f in ("gfp_flags", "node", "zone", "order", "migratetype", "cma_area")
            )
            allocs, pages = _sum_percpu(leaves, ["allocs", "pages"])
            out[key] = (allocs, pages)
        return out

    def read_fail(self) -> pa.Table:
        rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["page_alloc_fail"]}
        for k, leaves in self.bpf["page_alloc_fail"].items():
            allocs, pages = _sum_percpu(leaves, ["allocs", "pages"])
            for col, val in (
                ("gfp_flags", k.gfp_flags),
                ("order", k.order),
                ("migratetype_id", k.migratetype),
                ("allocs", allocs),
                ("pages", pages),
            ):
                rows[col].append(val)
        return schema.to_table("page_alloc_fail", rows)


def cube_to_table(
    cube: dict[tuple, tuple[int, int]], t_range: tuple[int, int] | None = None
) -> pa.Table:
    """Arrow table of a cube (final table, or a series part when ``t_range`` is given)."""
    rows: dict[str, list] = {f: [] for f in KEY_FIELDS + ["allocs", "pages"]}
    for key, (allocs, pages) in sorted(cube.items()):
        for f, v in zip(KEY_FIELDS, key):
            rows[f].append(v)
        rows["allocs"].append(allocs)
        rows["pages"].append(pages)
    if t_range is None:
        return schema.to_table("page_alloc", rows)
    n = len(rows["allocs"])
    rows["t_start_ns"] = [t_range[0]] * n
    rows["t_end_ns"] = [t_range[1]] * n
    return schema.to_table("page_alloc", rows, series=True)


def cube_delta(
    now: dict[tuple, tuple[int, int]], before: dict[tuple, tuple[int, int]]
) -> dict[tuple, tuple[int, int]]:
    """Entries of ``now`` that grew since ``before``, as differences."""
    out = {}
    for key, (a, p) in now.items():
        a0, p0 = before.get(key, (0, 0))
        if a != a0 or p != p0:
            out[key] = (a - a0, p - p0)
    return out
