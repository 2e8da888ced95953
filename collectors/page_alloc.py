"""Collector for probes/page_alloc.bpf.c: calibrate, validate, attach, read the cube.

Start-up, before anything is counted:

1. *Calibration.* cmaprof makes page faults of its own: it maps anonymous memory
   (``MADV_NOHUGEPAGE``, so each write fault allocates one order-0 movable page) and
   writes one page at a time. A raw-tracepoint program on ``kmem:mm_page_alloc``
   filtered on the calibrating thread takes the ``struct page *`` of that allocation;
   ``/proc/self/pagemap`` gives the pfn the page got. A touch counts only when exactly
   one such allocation happened during it, and a pair only when the pfn is the same
   when read again at the end (the page did not migrate). Every pair must give the
   same ``sizeof(struct page)`` (from the pointer and pfn differences) and the same
   base of the memory map (vmemmap; randomised under KASLR and not in kallsyms
   without KALLSYMS_ALL), so the main program turns a ``struct page *`` into a pfn
   without reading any kernel symbol. No classic tracepoint and no other process's
   allocation is involved, so perf, ftrace, trace-cmd or bpftrace on the same
   tracepoint, or heavy allocation on other CPUs, cannot confuse it. The address
   stays in the BPF config map; it is never written to the recording.
2. *Validation.* The zone and node that ``page->flags`` gives with the shifts of the
   compile-time headers (which may belong to another kernel version) are compared
   with ``/proc/zoneinfo`` on every calibration pfn whose zone span is unambiguous.
   Any disagreement switches the program to the pfn-span map and says so in the
   recording (``zone_source``).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa

from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.errors import EnvironmentProblem
from cmaprof.kernel.procfs import CmaArea, Zone, populated_spans, unambiguous_zone
from cmaprof.probes import abi
from cmaprof.recording import schema
from cmaprof.recording.metadata import Metadata, PageAllocInfo

KEY_FIELDS = [f for f, _ in schema.PAGE_ALLOC_KEYS]  # = struct page_alloc_key's fields
#: Indexes of the per-CPU ``page_alloc_stats`` array (probes/events.h PA_STAT_*).
STAT_NAMES = abi.enum("PA_STAT_")
CALIB_PAIRS = 64  # ring size in page_alloc.bpf.c (its CALIB_PAIRS default)
#: Pairs wanted per round, rounds tried, pages mapped per round.
CALIB_WANT = 16
CALIB_ROUNDS = 4
CALIB_PAGES = 512
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN_MASK = (1 << 55) - 1


@dataclass
class Calibration:
    """What start-up learnt about the running kernel (no addresses)."""

    pairs: int = 0
    page_struct_size: int = 0
    agreeing_pairs: int = 0
    rounds: int = 0
    skipped_touches: int = 0
    layout: dict[str, int] = field(default_factory=dict)
    zone_source: str = "page_flags"
    zone_checks: int = 0
    zone_mismatches: int = 0
    zone_reason: str = ""
    size_check: str = ""
    vmemmap_base: int = 0  # kernel address: kept in memory only

    def as_metadata(self) -> dict[str, Any]:
        return {
            "calibration_method": "own page faults + /proc/self/pagemap",
            "calibration_pairs": self.pairs,
            "calibration_agreeing_pairs": self.agreeing_pairs,
            "calibration_rounds": self.rounds,
            "calibration_skipped_touches": self.skipped_touches,
            "page_struct_size": self.page_struct_size,
            "header_layout": self.layout,
            "zone_source": self.zone_source,
            "zone_checks": self.zone_checks,
            "zone_mismatches": self.zone_mismatches,
            "zone_source_reason": self.zone_reason,
            "page_struct_size_check": self.size_check,
        }


class CalibrationMismatch(ValueError):
    """(page, pfn) pairs that do not describe one linear memory map."""


def solve_memmap(pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """The memory map's base address and ``sizeof(struct page)`` from exact pairs.

    :param pairs: (pfn, ``struct page *``) of pages whose pfn is known exactly.
    :returns: (base, size) with ``page == base + pfn * size`` for every pair.
    :raises CalibrationMismatch: fewer than two distinct pfns, or pairs that disagree.
    """
    if len(pairs) < 2:
        raise CalibrationMismatch(f"only {len(pairs)} usable calibration faults")
    ref_pfn, ref_page = pairs[0]
    sizes = set()
    for pfn, page in pairs[1:]:
        dpfn, dpage = pfn - ref_pfn, page - ref_page
        if dpfn == 0:
            if dpage:
                raise CalibrationMismatch(f"pfn {pfn:#x} seen at two struct page addresses")
            continue
        if dpage % dpfn:
            raise CalibrationMismatch(
                f"pfns {ref_pfn:#x} and {pfn:#x} are not a whole number of struct pages apart"
            )
        sizes.add(dpage // dpfn)
    if not sizes:
        raise CalibrationMismatch("all calibration faults got the same pfn")
    if len(sizes) > 1:
        raise CalibrationMismatch(f"pairs give different sizeof(struct page): {sorted(sizes)}")
    size = sizes.pop()
    if size <= 0 or size > 4096 or size % 8:
        raise CalibrationMismatch(f"implausible sizeof(struct page) = {size}")
    return ref_page - ref_pfn * size, size


def _pagemap_pfn(fd: int, vaddr: int) -> int | None:
    """pfn of the page mapped at ``vaddr`` (Documentation/admin-guide/mm/pagemap.rst),
    None when not present."""
    entry = int.from_bytes(os.pread(fd, 8, (vaddr // mmap.PAGESIZE) * 8), "little")
    if not entry & PAGEMAP_PRESENT:
        return None
    pfn = entry & PAGEMAP_PFN_MASK
    if pfn == 0:
        raise EnvironmentProblem(
            "/proc/self/pagemap hides pfns (shown only with CAP_SYS_ADMIN): run "
            "cmaprof record as root, not in a user namespace"
        )
    return pfn


def _sum_percpu(leaves: Any, fields: list[str]) -> list[int]:
    return [sum(getattr(leaf, f) for leaf in leaves) for f in fields]


class PageAllocCollector(Collector):
    """Loads page_alloc.bpf.c and turns its maps into Arrow tables.

    :param zones: parsed /proc/zoneinfo of the running kernel.
    :param cma_areas: CMA areas whose ranges are known; index = ``cma_area_idx``.
    :param err: where the calibration's warning goes (a zone source other than
        page->flags).
    """

    name = "page_alloc"

    def __init__(
        self, bpf: Any, zones: list[Zone], cma_areas: list[CmaArea], err: IO[str] | None = None
    ) -> None:
        self.bpf = bpf
        self.zones = zones
        self.cma_areas = [a for a in cma_areas if a.end_pfn is not None]
        self.calibration = Calibration()
        self.attached = False
        self.err = err
        #: The cube at the end of the last interval, and its growth in that interval.
        self.cube: dict[tuple, tuple[int, int]] = {}
        self.last_delta: dict[tuple, tuple[int, int]] = {}
        #: Which program counts (``page_alloc_btf`` or ``page_alloc_raw``) and why.
        self.program = self.program_reason = ""
        self.headers_cached = False
        self.link_fd: int | None = None
        self.slots: np.ndarray | None = None
        self.slots_per_cpu = abi.CUBE_SLOTS
        self.defines: dict[str, Any] = {}
        #: ``record --by``: the command's pid (set by the recorder), the by metadata
        self.workload_tgid: int | None = None
        self._by_info: dict[str, Any] | None = None

    @classmethod
    def create(cls, ctx: CollectorContext) -> PageAllocCollector:
        c = cls(ctx.bpf, ctx.zones, ctx.cma_areas, ctx.err)
        c.slots_per_cpu = int(ctx.defines.get("CUBE_SLOTS", abi.CUBE_SLOTS))
        c.defines = dict(ctx.defines)
        return c

    def configure(self) -> None:
        """Calibrate (:meth:`calibrate`), then write the maps (:meth:`write_maps`)."""
        cal = self.calibrate()
        if cal.zone_source != "page_flags" and self.err is not None:
            print(f"cmaprof: warning: {cal.zone_reason}", file=self.err)
        self.write_maps()

    def interval_tables(self, t_range: tuple[int, int]) -> dict[str, pa.Table]:
        """The growth of the cube since the last interval (``series/page_alloc``)."""
        cube = self.read_cube()
        self.last_delta = cube_delta(cube, self.cube)
        self.cube = cube
        return {"page_alloc": cube_to_table(self.last_delta, t_range)}

    def final_tables(self) -> dict[str, pa.Table]:
        """The cube as read at the last interval, and the failed allocations; with
        ``record --by``, ``page_alloc_by`` and its stacks (collectors/page_alloc_by.py)."""
        out = {"page_alloc": cube_to_table(self.cube), "page_alloc_fail": self.read_fail()}
        from cmaprof.collectors import page_alloc_by as by

        keys = by.keys_of(self.defines)
        if keys:
            out["page_alloc_by"] = by.by_table(self.bpf, keys)
            n_stacks = None
            if "stack" in keys:
                from cmaprof.collectors import stacks

                out["stacks"] = stacks.stacks_table(self.bpf, by.STACK_MAP)
                n_stacks = len(set(out["stacks"].column("stack_id").to_pylist()))
            tgids = {"self_tgid": os.getpid(), "workload_tgid": self.workload_tgid}
            self._by_info = by.by_info(
                self.defines, out["page_alloc_by"], self.read_stats(), n_stacks, tgids
            )
        return out

    def metadata(self, meta: Metadata, final: bool) -> None:
        info = self.calibration.as_metadata()
        if self.program:
            info.update(program=self.program, program_reason=self.program_reason)
            info["compile"] = (
                "without the mm headers: their constants from an earlier compile against "
                "the same kernel, headers, BCC, source and flags"
                if self.headers_cached
                else "with the kernel headers"
            )
            info["cube_slots"] = {
                "slots_per_cpu": int(self.slots_per_cpu),
                "in_use": int(np.count_nonzero(self.slots["val"]["allocs"]))
                if self.slots is not None
                else 0,
                **self.read_stats(),
            }
        if self._by_info is not None:
            info["by"] = self._by_info
        meta.page_alloc = PageAllocInfo.from_json(info)

    def calibrate(self) -> Calibration:
        """Pair struct page pointers of cmaprof's own faults with their pfns, then
        validate page->flags zones.

        :raises EnvironmentProblem: no round of faults gave pairs that all agree.
        """
        b = self.bpf
        tid_t = b[b"calib_tid"]
        tid_t[tid_t.Key(0)] = tid_t.Leaf(threading.get_native_id())
        b.attach_raw_tracepoint(tp=b"mm_page_alloc", fn_name=b"calib_raw")
        problems: list[str] = []
        try:
            fd = os.open("/proc/self/pagemap", os.O_RDONLY)
            try:
                for _ in range(CALIB_ROUNDS):
                    pairs = self._fault_round(fd)
                    try:
                        base, size = solve_memmap([(pfn, page) for pfn, page, _ in pairs])
                    except CalibrationMismatch as exc:
                        problems.append(f"{exc} ({len(pairs)} pairs)")
                        continue
                    break
                else:
                    raise EnvironmentProblem(
                        f"calibration failed: {CALIB_ROUNDS} rounds of cmaprof's own page "
                        f"faults gave no consistent (struct page, pfn) pairs: "
                        f"{'; '.join(problems)}; report this with `cmaprof doctor` output"
                    )
            finally:
                os.close(fd)
        finally:
            b.detach_raw_tracepoint(tp=b"mm_page_alloc")
            tid_t[tid_t.Key(0)] = tid_t.Leaf(0)

        lay = b[b"layout"][b[b"layout"].Key(0)]
        cal = self.calibration
        cal.layout = {
            "zones_pgshift": lay.zones_pgshift,
            "zones_mask": lay.zones_mask,
            "nodes_pgshift": lay.nodes_pgshift,
            "nodes_mask": lay.nodes_mask,
            "header_page_struct_size": lay.page_struct_size,
        }
        self._remember_layout(lay)
        cal.rounds = len(problems) + 1
        cal.pairs = cal.agreeing_pairs = len(pairs)
        cal.page_struct_size, cal.vmemmap_base = size, base
        header = lay.page_struct_size
        cal.size_check = (
            f"measured {size} bytes = sizeof(struct page) of the compile-time headers"
            if size == header
            else f"measured {size} bytes, compile-time headers say {header} (headers of "
            f"another kernel build); the measured size is used"
        )
        self._validate_zones(pairs)
        return cal

    def _remember_layout(self, lay: Any) -> None:
        """After a full compile, keep its mm constants for a header-free compile next
        time (collectors/bccload.py); say in the metadata which compile this was."""
        from cmaprof.collectors import bccload

        key = getattr(self.bpf, "cmaprof_layout_key", None)
        self.headers_cached = bool(getattr(self.bpf, "cmaprof_headers_cached", False))
        if key and not self.headers_cached:
            bccload.remember_layout(key, {f: getattr(lay, f) for f in bccload.LAYOUT_FIELDS})

    def _fault_round(self, fd: int) -> list[tuple[int, int, int]]:
        """Write-fault fresh anonymous pages one at a time; (pfn, page, flags) of each
        fault during which exactly one calibration allocation happened, and whose
        pfn had not changed when read again after the last fault."""
        b = self.bpf
        count_t, pairs_t = b[b"calib_count"], b[b"calib_pairs"]
        k0 = count_t.Key(0)
        m = mmap.mmap(-1, CALIB_PAGES * mmap.PAGESIZE)
        try:
            if hasattr(mmap, "MADV_NOHUGEPAGE"):
                try:
                    m.madvise(mmap.MADV_NOHUGEPAGE)
                except OSError:  # kernel without CONFIG_TRANSPARENT_HUGEPAGE: no THP
                    pass
            view = ctypes.c_char.from_buffer(m)
            addr = ctypes.addressof(view)
            del view
            found: list[tuple[int, int, int, int]] = []
            for i in range(CALIB_PAGES):
                off = i * mmap.PAGESIZE
                n0 = count_t[k0].value
                m[off] = 1
                n1 = count_t[k0].value
                if n1 - n0 != 1:
                    self.calibration.skipped_touches += 1
                    continue
                leaf = pairs_t[pairs_t.Key(n0 % CALIB_PAIRS)]
                pfn = _pagemap_pfn(fd, addr + off)
                if pfn is not None:
                    found.append((off, pfn, leaf.page, leaf.flags))
                if len(found) >= CALIB_WANT:
                    break
            return [
                (pfn, page, flags)
                for off, pfn, page, flags in found
                if _pagemap_pfn(fd, addr + off) == pfn
            ]
        finally:
            m.close()

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

    def write_maps(self) -> None:
        """Write the config, zone spans and CMA ranges into the program's maps."""
        b, cal = self.bpf, self.calibration
        spans = populated_spans(self.zones)
        if len(spans) > abi.MAX_ZONE_SPANS:
            raise EnvironmentProblem(f"{len(spans)} zone spans exceed MAX_ZONE_SPANS")
        st = b["zone_spans"]
        for i, z in enumerate(spans):
            leaf = st.Leaf()
            leaf.start, leaf.end, leaf.node, leaf.zone = z.start_pfn, z.end_pfn, z.node, z.idx
            st[st.Key(i)] = leaf
        if len(self.cma_areas) > abi.MAX_CMA_AREAS:
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
            abi.ZONE_SOURCE_PFN_SPANS
            if cal.zone_source == "pfn_spans"
            else abi.ZONE_SOURCE_PAGE_FLAGS
        )
        cfg.nr_spans = len(spans)
        cfg.nr_cma = len(self.cma_areas)
        size = cal.page_struct_size
        cfg.page_struct_shift = size.bit_length() - 1 if size and not size & (size - 1) else 0
        b["config"][b["config"].Key(0)] = cfg

    def attach(self) -> None:
        """Attach ``page_alloc_btf`` as tp_btf where the kernel loads it, else
        ``page_alloc_raw`` as a raw tracepoint (by presence; the reason is kept in the
        metadata as ``program_reason``)."""
        from cmaprof.collectors import bccload

        try:
            if os.environ.get("CMAPROF_TP_BTF", "1") == "0":
                raise bccload.TpBtfUnavailable("CMAPROF_TP_BTF=0 in the environment")
            self.link_fd = bccload.attach_tp_btf(self.bpf, "page_alloc_btf", "mm_page_alloc")
            self.program, self.program_reason = "page_alloc_btf", "tp_btf loaded"
        except bccload.TpBtfUnavailable as exc:
            self.bpf.attach_raw_tracepoint(tp=b"mm_page_alloc", fn_name=b"page_alloc_raw")
            self.program, self.program_reason = "page_alloc_raw", f"raw_tp: {exc}"
        self.attached = True
        self._map_slots()

    def _map_slots(self) -> None:
        """The slot array, mmapped read-only (BPF_F_MMAPABLE): read without a syscall."""
        t = self.bpf["page_alloc_slots"]
        dt = abi.dtype("page_alloc_slot")
        length = -(-t.max_entries * dt.itemsize // mmap.PAGESIZE) * mmap.PAGESIZE
        self._slots_mm = mmap.mmap(t.map_fd, length, mmap.MAP_SHARED, mmap.PROT_READ)
        self.slots = np.frombuffer(self._slots_mm, dtype=dt, count=t.max_entries)

    def set_enabled(self, on: bool) -> None:
        cfg_t = self.bpf["config"]
        cfg = cfg_t[cfg_t.Key(0)]
        cfg.enabled = 1 if on else 0
        cfg_t[cfg_t.Key(0)] = cfg

    def detach(self) -> None:
        if self.attached:
            if self.link_fd is not None:
                os.close(self.link_fd)
                self.link_fd = None
            else:
                self.bpf.detach_raw_tracepoint(tp=b"mm_page_alloc")
            self.attached = False

    def close(self) -> None:
        self.detach()

    # -- reading ----------------------------------------------------------------
    def read_cube(self) -> dict[tuple, tuple[int, int]]:
        """The cumulative cube: key tuple (in KEY_FIELDS order) -> (allocs, pages):
        every CPU's slots in use plus the overflow hash."""
        out = slots_to_cube(self.slots) if self.slots is not None else {}
        for k, leaves in self.bpf["page_alloc"].items():
            key = tuple(getattr(k, f) for f in KEY_FIELDS)
            allocs, pages = _sum_percpu(leaves, ["allocs", "pages"])
            a0, p0 = out.get(key, (0, 0))
            out[key] = (a0 + allocs, p0 + pages)
        return out

    def read_stats(self) -> dict[str, int]:
        """Events the overflow hash counted, by reason (``PA_STAT_*``)."""
        t = self.bpf["page_alloc_stats"]
        return {name: int(sum(t[t.Key(i)])) for i, name in enumerate(STAT_NAMES)}

    def read_fail(self) -> pa.Table:
        rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["page_alloc_fail"]}
        for k, leaves in self.bpf["page_alloc_fail"].items():
            allocs, pages = _sum_percpu(leaves, ["allocs", "pages"])
            for col in ("gfp_flags", "order", "migratetype_id"):
                rows[col].append(getattr(k, col))
            rows["allocs"].append(allocs)
            rows["pages"].append(pages)
        return schema.to_table("page_alloc_fail", rows)


def slots_to_cube(slots: np.ndarray) -> dict[tuple, tuple[int, int]]:
    """The cube held by slot records (``struct page_alloc_slot``, any CPU's): key
    tuple (in KEY_FIELDS order) -> (allocs, pages), summed over CPUs; empty slots
    (allocs 0) skipped."""
    used = slots[slots["val"]["allocs"] != 0]
    out: dict[tuple, tuple[int, int]] = {}
    keys = used["key"]
    cols = [keys[f].tolist() for f in KEY_FIELDS]
    for key, a, p in zip(zip(*cols), used["val"]["allocs"].tolist(), used["val"]["pages"].tolist()):
        a0, p0 = out.get(key, (0, 0))
        out[key] = (a0 + a, p0 + p)
    return out


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
