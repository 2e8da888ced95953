"""Collector for probes/blockers.bpf.c: the pages that block cma_alloc(), one row each.

The probe classifies each blocking page in the kernel and streams it through the
``blk_events`` ring buffer; this collector turns the records into rows of the
``cma_blockers`` table (cmaprof/recording/schema.py), writes the per-area origin offsets into
``blk_area_off`` (same area order as the page_alloc probe's ``cma_ranges``) and reports
its own counters, the header layout it was compiled with, and the memory cost of the
origin array in the recording's metadata (``blockers``). With ``record --by stack``
(``-DBLK_BY_STACK=1``) it attaches ``blk_stack_raw`` and, when the recording is
finished, writes the placing allocations' kernel stacks, symbolised, as ``stacks``
(:mod:`cmaprof.collectors.stacks`).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import pyarrow as pa

from cmaprof import probes
from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.errors import BadInput, EnvironmentProblem
from cmaprof.kernel.procfs import CmaArea
from cmaprof.probes import abi
from cmaprof.recording import schema
from cmaprof.recording.metadata import BlockersInfo, Metadata

NONE_PFN = (1 << 64) - 1
#: The stack map of the placing allocations (probes/blockers.bpf.c, BLK_BY_STACK).
STACK_MAP = "blk_stacks"

#: Indexes of the per-CPU ``blk_stats`` array (probes/events.h BLK_STAT_*).
STAT_NAMES = abi.enum("BLK_STAT_")

LAYOUT_FIELDS = (
    "pg_locked",
    "pg_referenced",
    "pg_uptodate",
    "pg_dirty",
    "pg_lru",
    "pg_active",
    "pg_slab",
    "pg_owner_priv_1",
    "pg_reserved",
    "pg_private",
    "pg_writeback",
    "pg_head",
    "pg_reclaim",
    "pg_swapbacked",
    "pg_unevictable",
    "pg_mlocked",
    "bh_dirty",
    "bh_lock",
    "bh_private_start",
)


def _cstr(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


def _pfn(v: int) -> int | None:
    return None if v == NONE_PFN else int(v)


def event_row(e: Any, t0_ns: int, areas: list[CmaArea]) -> dict[str, Any]:
    """One ``cma_blockers`` row from a ``struct blocker_event``.

    :param t0_ns: CLOCK_MONOTONIC at the start of counting (times become relative).
    """
    area = areas[e.area].name if e.area < len(areas) else ""
    known = bool(e.origin_known)
    file_page = e.mapping_kind == abi.BLK_MAPPING_FILE
    return {
        "t_ns": int(e.time_ns) - t0_ns,
        "area_idx": int(e.area),
        "area": area,
        "pfn": int(e.pfn),
        "head_pfn": int(e.head_pfn),
        "stage_id": int(e.stage),
        "cause_id": int(e.cause),
        "state_bits": int(e.state),
        "page_flags": int(e.flags),
        "refcount": int(e.refcount),
        "mapcount": int(e.mapcount),
        "extra_refs": int(e.extra_refs),
        "mapping_kind": int(e.mapping_kind),
        "dev": int(e.dev) if file_page else None,
        "fs_magic": int(e.fs_magic) if file_page else None,
        "ino": int(e.ino) if file_page else None,
        "bh_count": int(e.bh_count),
        "bh_busy": int(e.bh_busy),
        "bh_state_or": int(e.bh_state_or),
        "range_start_pfn": _pfn(e.range_start_pfn),
        "range_end_pfn": _pfn(e.range_end_pfn),
        "cma_start_ns": int(e.cma_start_ns) - t0_ns,
        "cma_pages_requested": int(e.cma_count),
        "tid": int(e.tid),
        "comm": _cstr(e.comm),
        "origin_known": known,
        "origin_gfp": int(e.origin_gfp) if known else None,
        "origin_order": int(e.origin_order) if known else None,
        "origin_migratetype_id": int(e.origin_migratetype) if known else None,
        "origin_pid": int(e.origin_pid) if known else None,
        "origin_comm": _cstr(e.origin_comm) if known else None,
        "origin_t_ns": int(e.origin_time_ns) - t0_ns if known else None,
        **_stack_columns(known and bool(e.origin_stack_taken), int(e.origin_stack_id)),
    }


def _stack_columns(taken: bool, stack_id: int) -> dict[str, int | None]:
    """``origin_stack_id`` and ``origin_stack_errno`` of an origin entry whose
    get_stackid result is ``stack_id`` (when ``taken``)."""
    if not taken:
        return {"origin_stack_id": None, "origin_stack_errno": None}
    if stack_id < 0:
        return {"origin_stack_id": None, "origin_stack_errno": -stack_id}
    return {"origin_stack_id": stack_id, "origin_stack_errno": None}


class BlockersCollector(Collector):
    """Configures blockers.bpf.c and drains its ring buffer into ``cma_blockers`` rows.

    :param bpf: the ``bcc.BPF`` module holding the page_alloc, cma and blockers probes.
    :param cma_areas: CMA areas; those with a range, in order, are ``area_idx`` 0..n-1.
    """

    name = "blockers"

    def __init__(self, bpf: Any, cma_areas: list[CmaArea]) -> None:
        self.bpf = bpf
        self.areas = [a for a in cma_areas if a.end_pfn is not None]
        self.t0_ns = 0
        self.rows: list[dict[str, Any]] = []
        self._flushed = 0
        self._ring = False
        self.defines: dict[str, Any] = {}
        self._stack_fd: int | None = None
        self._stack_count: int | None = None

    @classmethod
    def create(cls, ctx: CollectorContext) -> BlockersCollector:
        out = cls(ctx.bpf, ctx.cma_areas)
        out.defines = ctx.defines
        return out

    def start(self, t0_ns: int) -> None:
        self.open(t0_ns)

    def interval_tables(self, t_range: tuple[int, int]) -> dict[str, pa.Table]:
        rows = self.new_rows_table()
        return {} if rows is None else {"cma_blockers": rows}

    @property
    def by_stack(self) -> bool:
        """``record --by stack``: origins keep the placing allocation's stack id."""
        return bool(self.defines.get("BLK_BY_STACK"))

    def attach(self) -> None:
        """With ``--by stack``, attach ``blk_stack_raw`` to kmem:mm_page_alloc beside
        the page_alloc program (BCC's ``attach_raw_tracepoint`` keeps one program per
        tracepoint name: the link fd is kept here, as collectors/stream.py does)."""
        if not self.by_stack or self._stack_fd is not None:
            return
        from bcc import BPF, lib

        fn = self.bpf.load_func(b"blk_stack_raw", BPF.RAW_TRACEPOINT)
        fd = lib.bpf_attach_raw_tracepoint(fn.fd, b"mm_page_alloc")
        if fd < 0:
            raise EnvironmentProblem(
                "cannot attach blk_stack_raw to raw tracepoint mm_page_alloc (record --by stack)"
            )
        self._stack_fd = fd

    def detach(self) -> None:
        if self._stack_fd is not None:
            os.close(self._stack_fd)
            self._stack_fd = None

    def final_tables(self) -> dict[str, pa.Table]:
        """The raw rows and the two summaries derived from them; with ``--by stack``,
        the stacks of ``blk_stacks`` symbolised (``stacks``)."""
        from cmaprof.recording import derived  # pandas: imported while BCC compiles

        raw = self.table()
        out = {
            "cma_blockers": raw,
            "cma_failures": derived.failures_table(raw.to_pandas()),
            "cma_blockers_origin": derived.origin_table(raw.to_pandas()),
        }
        if self.by_stack:
            from cmaprof.collectors import stacks

            out["stacks"] = stacks.stacks_table(self.bpf, STACK_MAP)
            self._stack_count = len(set(out["stacks"].column("stack_id").to_pylist()))
        return out

    def metadata(self, meta: Metadata, final: bool) -> None:
        if final:
            verified = bool(meta.headers is not None and meta.headers.matches_running_kernel)
            info = self.info(meta.defines or {}, verified)
            meta.blockers = BlockersInfo.from_json(info)

    def configure(self) -> None:
        """Write each area's first index into the origin array (``blk_area_off``) and
        install ``blk_step`` (one failed page per tail call) when the kprobe exists."""
        t = self.bpf["blk_area_off"]
        off = 0
        for i, a in enumerate(self.areas):
            t[t.Key(i)] = ctypes.c_uint64(off)
            off += a.count or 0
        try:
            progs = self.bpf["blk_progs"]  # compiled with HAVE_KPROBE_PUTBACK only
        except KeyError:
            return
        from bcc import BPF

        fn = self.bpf.load_func(b"blk_step", BPF.KPROBE)
        progs[ctypes.c_int(0)] = ctypes.c_int(fn.fd)

    def open(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.bpf["blk_events"].open_ring_buffer(self._on_event)
        self._ring = True

    def _on_event(self, ctx: Any, data: Any, size: int) -> None:
        e = self.bpf["blk_events"].event(data)
        self.rows.append(event_row(e, self.t0_ns, self.areas))

    def poll(self) -> None:
        if self._ring:
            self.bpf.ring_buffer_consume()

    def table(self) -> pa.Table:
        return schema.to_table(
            "cma_blockers", {f.name: [r[f.name] for r in self.rows] for f in schema.CMA_BLOCKERS}
        )

    def new_rows_table(self) -> pa.Table | None:
        """The rows since the last call (for ``series/cma_blockers``), or None."""
        rows = self.rows[self._flushed :]
        self._flushed = len(self.rows)
        if not rows:
            return None
        return schema.to_table(
            "cma_blockers",
            {f.name: [r[f.name] for r in rows] for f in schema.CMA_BLOCKERS},
            series=True,
        )

    def counts(self) -> dict[str, int]:
        """In-kernel event counts per ``stage/cause`` (complete even when the ring
        buffer was full)."""
        t = self.bpf["blk_counts"]
        out = {}
        for stage_id, stage in enumerate(schema.BLOCKER_STAGES):
            for cause_id, cause in enumerate(schema.BLOCKER_CAUSES):
                n = int(sum(t[t.Key(stage_id * len(schema.BLOCKER_CAUSES) + cause_id)]))
                if n:
                    out[f"{stage}/{cause}"] = n
        return out

    def info(self, defines: dict[str, Any], layout_verified: bool) -> dict[str, Any]:
        """Counters, memory cost and the header layout, for metadata.json."""
        t = self.bpf["blk_stats"]
        stats = {name: int(sum(t[t.Key(i)])) for i, name in enumerate(STAT_NAMES)}
        entries = int(defines.get("BLK_ORIGIN_ENTRIES", 1))
        entry_bytes = ctypes.sizeof(self.bpf["blk_origin"].Leaf)
        lay = self.bpf["blk_layout"][self.bpf["blk_layout"].Key(0)]
        layout = {f: int(getattr(lay, f)) for f in LAYOUT_FIELDS} if lay.filled else None
        return {
            "stats": stats,
            "counts": self.counts(),
            "origin_entries": entries,
            "origin_entry_bytes": entry_bytes,
            "origin_bytes": entries * entry_bytes,
            "origin_areas": [a.name for a in self.areas],
            "migrate_stage": bool(defines.get("HAVE_KPROBE_PUTBACK")),
            "test_isolated_stage": bool(defines.get("HAVE_TEST_PAGES_ISOLATED")),
            "layout": layout,
            "layout_verified": layout_verified,
            "max_list": int(
                defines.get("BLK_MAX_LIST", probes.get("blockers").options["BLK_MAX_LIST"])
            ),
            **self._stack_info(defines),
        }

    def _stack_info(self, defines: dict[str, Any]) -> dict[str, Any]:
        """``by`` and, with ``--by stack``, the stack map's size and use."""
        if not self.by_stack:
            return {"by": []}
        entries = int(defines.get("BLK_STACK_ENTRIES", abi.BLK_STACK_ENTRIES))
        depth = int(defines.get("BLK_STACK_DEPTH", abi.BLK_STACK_DEPTH))
        return {
            "by": ["stack"],
            "stack_map": STACK_MAP,
            "stack_entries": entries,
            "stack_depth": depth,
            "stack_map_value_bytes": entries * depth * 8,
            "stacks_stored": self._stack_count,
        }


#: ``record --by`` keys, and what each keys.
BY_KEYS = {
    "comm": "the page_alloc cube by process name",
    "tgid": "the page_alloc cube by process id",
    "stack": "the blockers probe's placing allocations by kernel stack",
}


def by_defines(
    by: list[str], probes_chosen: list[str], unavailable: dict[str, str] | None = None
) -> dict[str, int]:
    """The ``-D`` options of ``record --by KEY,...``: ``stack`` is ``BLK_BY_STACK=1``.

    :param unavailable: probe -> why it is off (metadata ``probes_unavailable``).

    :raises BadInput: an unknown key; ``comm`` or ``tgid`` (the page_alloc cube keyed by
        process is not built yet, issue 17 item 1); ``stack`` without the blockers probe.
    """
    for key in by:
        if key not in BY_KEYS:
            raise BadInput(f"--by {key}: unknown key; known: {', '.join(BY_KEYS)}")
    later = [k for k in by if k in ("comm", "tgid")]
    if later:
        raise BadInput(
            f"--by {','.join(later)}: {BY_KEYS[later[0]]} is not built yet (issue 17 "
            f"item 1); only --by stack works today (the blocking CMA pages' placing "
            f"allocations, by kernel stack): leave {','.join(later)} out"
        )
    if "stack" not in by:
        return {}
    if "blockers" not in probes_chosen:
        why = (unavailable or {}).get("blockers", "not chosen")
        raise BadInput(
            "--by stack keeps the kernel stack of the allocation that placed each CMA "
            f"page, in the blockers probe, which is off here ({why}): record without "
            "--by stack, or with the blockers probe (--probes ...,blockers)"
        )
    return {"BLK_BY_STACK": 1}
