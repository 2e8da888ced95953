"""Column names and dtypes of every table in a recording: the written contract.

Stored tables hold raw kernel values (gfp bits, zone index, migratetype number, CMA
area index); :mod:`cmaprof.recording.reader` decodes them into names with the format
files and /proc files saved in the same recording. Units are in the column names
(``pages`` = base pages, ``_ns`` = nanoseconds). Time in series is relative to the
recording start (CLOCK_MONOTONIC).

``page_alloc`` (final cube; one row per distinct allocation class)
    gfp_flags uint64, node uint16, zone_idx uint8, order uint8, migratetype_id uint8,
    cma_area_idx uint8 (255: not in a CMA area, 254: placement unknown), allocs uint64,
    pages uint64. Imported traces: zone_idx 255 and node 65535 when the zone is unknown.
``page_alloc_fail`` (allocations that returned no page)
    gfp_flags uint64, order uint8, migratetype_id uint8, allocs uint64,
    pages uint64 (pages that were asked for).
``page_alloc_bulk`` (bulk-allocator pages: counted in pgalloc_*, no mm_page_alloc event)
    node uint16, zone_idx uint8, calls uint64, pages uint64.
``cma_alloc`` (one row per cma_alloc() call)
    start_ns int64 (since the recording start), latency_ns int64, area_idx uint8
    (255: unknown), area string (from the event, may be empty), pages_requested uint64,
    align uint32, success bool, outcome_source uint8 (0 errorno, 1 finish page,
    2 returned page, 3 start without finish; 1-3 are inferred), errno int32 (when the
    kernel says), busy_retries uint32, migrate_succeeded uint64, migrate_failed uint64
    (pages), isolate_tests uint32, isolate_failures uint32, first_busy_pfn uint64
    (null: none), pfn uint64 (result or last range tried; null: none), pid uint32,
    tgid uint32, comm string.
``cma_phases`` (per cma_alloc() call and phase seen: where its time went)
    start_ns int64 and pid uint32 (the call's row of ``cma_alloc``), phase_id uint8
    (``CMA_PHASE_*`` of probes/events.h; the last, unattributed, is the rest), entries
    uint32, ns int64 (self time), failed_ns int64 (of it, in alloc_contig_range()
    attempts that failed), lost uint32 (frames closed without their return). The ns
    of a call's rows add up to its latency_ns. Only the phases whose functions were
    attached have rows (metadata ``cma_phases``: attached, missing with the reason).
``cma_latency_hist`` (in-kernel log2 histogram)
    area_idx uint8, size_log2 uint8, success bool, slot uint8 (latency in
    [2**slot, 2**(slot+1)) ns), calls uint64.
``cma_release``
    area_idx uint8, calls uint64, pages uint64.
``migrate`` (migrate_pages() calls)
    reason_id uint32, mode_id uint32, calls, succeeded, failed, thp_succeeded,
    thp_failed, thp_split (pages or THPs, uint64), duration_ns uint64 (sum over
    timed_calls), timed_calls uint64.
``series/page_alloc`` (per interval, deltas)
    t_start_ns int64, t_end_ns int64 + the ``page_alloc`` columns.
``series/vmstat`` (per interval, long form, cumulative kernel values)
    t_ns int64, counter string, value int64.
``series/cma_used`` (per interval, from debugfs)
    t_ns int64, area string, used_pages int64, count_pages int64.
``series/cma_alloc`` (the ``cma_alloc`` rows, appended per interval)
``events/page_alloc`` (``record --events``: one row per streamed allocation; Parquet
at ``events/page_alloc.parquet``, or Arrow IPC chunks ``events/page_alloc/chunk-*.arrow``
while recording and after a kill; rows ordered by CPU, then time)
    t_ns int64 (since the recording start), __cpu uint16, __tgid uint32, pfn uint64,
    gfp_flags uint64, node uint16, zone_idx uint8, order uint8, migratetype_id uint8,
    cma_area_idx uint8 (255: not in a CMA area).
``cma_blockers`` (one row per blocking page seen during a cma_alloc(); also
``series/cma_blockers``, appended per interval) -- see :data:`CMA_BLOCKERS`,
:data:`BLOCKER_STAGES`, :data:`BLOCKER_CAUSES`, :data:`BLOCKER_STATES`.
``cma_failures`` (per area, stage, cause, state: ``pages`` distinct blocking pfns,
``events`` observations, ``calls`` distinct cma_alloc() calls) and
``cma_blockers_origin`` (per cause, state and gfp of the allocation that placed the
page: origin_gfp_flags uint64, null = origin unknown), both computed from
``cma_blockers`` by :mod:`cmaprof.recording.derived` when the recording is written.
``cma_blockers.origin_stack_id`` (``record --by stack``): the placing allocation's kernel
stack in ``stacks`` (map ``blk_stacks``); null when no stack was taken or
``bpf_get_stackid()`` failed, then ``origin_stack_errno`` says why (EEXIST: its hash
bucket held another stack; ENOMEM: the map was full; EFAULT: no stack).
``page_alloc_by`` (``record --by comm,tgid,stack``: the cube also keyed by process
and/or kernel stack, whole recording, read at the end)
    the ``page_alloc`` key columns + tgid uint32 (null: not keyed by tgid), comm string
    (null: not keyed by comm), stack_id int32 (the stack in ``stacks``, map
    ``pa_stacks``; null: not keyed by stack, or ``bpf_get_stackid()`` failed), stack_errno
    int32 (null unless it failed: EEXIST, ENOMEM, EFAULT as positive errno, as
    ``cma_blockers.origin_stack_errno``), allocs uint64, pages uint64. Comm and tgid are
    the current task's (an allocation in interrupt context counts for the task it
    interrupted, as perf's comm does). Events that found the BPF hash full are not here
    but in metadata ``page_alloc.by`` ``overflow_allocs``/``overflow_pages``: its totals
    plus those equal ``page_alloc``'s exactly.
``stacks`` (map, stack_id, level, frame): see :data:`SCHEMAS` ``stacks``.
"""

from __future__ import annotations

import pyarrow as pa

from cmaprof.probes import abi

CMA_AREA_NONE = abi.CMA_AREA_NONE
#: cma_area_idx when the CMA placement is not known (an import without CMA ranges).
CMA_AREA_UNKNOWN = 254

PAGE_ALLOC_KEYS = [
    ("gfp_flags", pa.uint64()),
    ("node", pa.uint16()),
    ("zone_idx", pa.uint8()),
    ("order", pa.uint8()),
    ("migratetype_id", pa.uint8()),
    ("cma_area_idx", pa.uint8()),
]
COUNTS = [("allocs", pa.uint64()), ("pages", pa.uint64())]

SCHEMAS: dict[str, pa.Schema] = {
    "page_alloc": pa.schema(PAGE_ALLOC_KEYS + COUNTS),
    "page_alloc_fail": pa.schema(
        [("gfp_flags", pa.uint64()), ("order", pa.uint8()), ("migratetype_id", pa.uint8())] + COUNTS
    ),
    "page_alloc_by": pa.schema(
        PAGE_ALLOC_KEYS
        + [
            ("tgid", pa.uint32()),
            ("comm", pa.string()),
            ("stack_id", pa.int32()),
            ("stack_errno", pa.int32()),
        ]
        + COUNTS
    ),
    "page_alloc_bulk": pa.schema(
        [
            ("node", pa.uint16()),
            ("zone_idx", pa.uint8()),
            ("calls", pa.uint64()),
            ("pages", pa.uint64()),
        ]
    ),
}

CMA_ALLOC = pa.schema(
    [
        ("start_ns", pa.int64()),
        ("latency_ns", pa.int64()),
        ("area_idx", pa.uint8()),
        ("area", pa.string()),
        ("pages_requested", pa.uint64()),
        ("align", pa.uint32()),
        ("success", pa.bool_()),
        ("outcome_source", pa.uint8()),
        ("errno", pa.int32()),
        ("busy_retries", pa.uint32()),
        ("migrate_succeeded", pa.uint64()),
        ("migrate_failed", pa.uint64()),
        ("isolate_tests", pa.uint32()),
        ("isolate_failures", pa.uint32()),
        ("first_busy_pfn", pa.uint64()),
        ("pfn", pa.uint64()),
        ("pid", pa.uint32()),
        ("tgid", pa.uint32()),
        ("comm", pa.string()),
    ]
)
SCHEMAS["cma_alloc"] = CMA_ALLOC
#: Where the time of each cma_alloc() call went (probes/events.h CMA_PHASE_*).
CMA_PHASES = pa.schema(
    [
        ("start_ns", pa.int64()),
        ("pid", pa.uint32()),
        ("phase_id", pa.uint8()),
        ("entries", pa.uint32()),
        ("ns", pa.int64()),
        ("failed_ns", pa.int64()),
        ("lost", pa.uint32()),
    ]
)
SCHEMAS["cma_phases"] = CMA_PHASES
SCHEMAS["cma_latency_hist"] = pa.schema(
    [
        ("area_idx", pa.uint8()),
        ("size_log2", pa.uint8()),
        ("success", pa.bool_()),
        ("slot", pa.uint8()),
        ("calls", pa.uint64()),
    ]
)
SCHEMAS["cma_release"] = pa.schema(
    [("area_idx", pa.uint8()), ("calls", pa.uint64()), ("pages", pa.uint64())]
)
#: Counters of struct migrate_val (probes/events.h), in order.
MIGRATE_COUNTS = (
    "calls",
    "succeeded",
    "failed",
    "thp_succeeded",
    "thp_failed",
    "thp_split",
    "duration_ns",
    "timed_calls",
)
SCHEMAS["migrate"] = pa.schema(
    [("reason_id", pa.uint32()), ("mode_id", pa.uint32())]
    + [(c, pa.uint64()) for c in MIGRATE_COUNTS]
)

SERIES_SCHEMAS: dict[str, pa.Schema] = {
    "page_alloc": pa.schema(
        [("t_start_ns", pa.int64()), ("t_end_ns", pa.int64())] + PAGE_ALLOC_KEYS + COUNTS
    ),
    "vmstat": pa.schema([("t_ns", pa.int64()), ("counter", pa.string()), ("value", pa.int64())]),
    "cma_used": pa.schema(
        [
            ("t_ns", pa.int64()),
            ("area", pa.string()),
            ("used_pages", pa.int64()),
            ("count_pages", pa.int64()),
        ]
    ),
    "cma_alloc": CMA_ALLOC,
    "cma_phases": CMA_PHASES,
}

#: Per-event tables (collectors/stream.py writes them, analysis/stream.py reads them).
EVENT_SCHEMAS: dict[str, pa.Schema] = {
    "page_alloc": pa.schema(
        [
            ("t_ns", pa.int64()),
            ("__cpu", pa.uint16()),
            ("__tgid", pa.uint32()),
            ("pfn", pa.uint64()),
        ]
        + PAGE_ALLOC_KEYS
    ),
}


# ---- blockers: pages that block cma_alloc() (probes/blockers.bpf.c) ----
#: Where the page was seen (probes/events.h BLK_STAGE_*, same order):
#: ``isolate`` pageblock isolation (not reachable for CMA pageblocks on 6.1),
#: ``migrate`` failed to migrate (putback_movable_pages() inside alloc_contig_range()),
#: ``test_isolated`` first pfn neither free nor isolated (test_pages_isolated fin_pfn).
BLOCKER_STAGES = abi.enum("BLK_STAGE_")
#: What the page is (probes/events.h BLK_CAUSE_*, same order): the stable vocabulary.
#:   unknown            LRU page without a mapping (truncated), or unreadable
#:   free               buddy page, or refcount 0 (per-CPU list, being freed): a race
#:   reserved           PG_reserved (bootmem, holes)
#:   slab               PG_slab
#:   unmovable_kernel   referenced, no mapping, not LRU (page tables, vmalloc, ...)
#:   movable_kernel     non-LRU movable (PAGE_MAPPING_MOVABLE: zsmalloc, balloon)
#:   anon               anonymous (or KSM) page
#:   file               page cache of a regular file system (fs_magic, dev kept)
#:   bdev               block-device page cache (host inode on bdevfs) without buffers
#:   bdev_buffer_head   block-device page cache with buffer heads (PG_private):
#:                      sb_bread()/__getblk() metadata
BLOCKER_CAUSES = abi.enum("BLK_CAUSE_")
#: Why it cannot move, by priority (the ``state`` column names the first bit set):
#: writeback, pinned (refcount above page cache + private + mappings + isolation),
#: bh_busy (a buffer head with b_count > 0: buffer_migrate_folio_norefs() refuses),
#: locked, dirty, bh_dirty_or_locked (probes/events.h BLK_STATE_*, in that order).
BLOCKER_STATES = abi.bits("BLK_STATE_")
#: No state bit set.
BLOCKER_STATE_NONE = "none"
CMA_BLOCKERS = pa.schema(
    [
        ("t_ns", pa.int64()),
        ("area_idx", pa.uint8()),
        ("area", pa.string()),
        ("pfn", pa.uint64()),
        ("head_pfn", pa.uint64()),
        ("stage_id", pa.uint8()),
        ("cause_id", pa.uint8()),
        ("state_bits", pa.uint8()),
        ("page_flags", pa.uint64()),
        ("refcount", pa.int32()),
        ("mapcount", pa.int32()),
        ("extra_refs", pa.int32()),
        ("mapping_kind", pa.uint8()),
        ("dev", pa.uint32()),
        ("fs_magic", pa.uint64()),
        ("ino", pa.uint64()),
        ("bh_count", pa.uint8()),
        ("bh_busy", pa.uint8()),
        ("bh_state_or", pa.uint32()),
        ("range_start_pfn", pa.uint64()),
        ("range_end_pfn", pa.uint64()),
        ("cma_start_ns", pa.int64()),
        ("cma_pages_requested", pa.uint64()),
        ("tid", pa.uint32()),
        ("comm", pa.string()),
        ("origin_known", pa.bool_()),
        ("origin_gfp", pa.uint64()),
        ("origin_order", pa.uint8()),
        ("origin_migratetype_id", pa.uint8()),
        ("origin_pid", pa.uint32()),
        ("origin_comm", pa.string()),
        ("origin_t_ns", pa.int64()),
        ("origin_stack_id", pa.int32()),
        ("origin_stack_errno", pa.int32()),
    ]
)
SCHEMAS["cma_blockers"] = CMA_BLOCKERS
#: Nullable columns added to a table within format version 1: the reader gives nulls
#: where a recording from before them has none.
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "cma_blockers": ("origin_stack_id", "origin_stack_errno"),
}
SERIES_SCHEMAS["cma_blockers"] = CMA_BLOCKERS
SCHEMAS["cma_failures"] = pa.schema(
    [
        ("area", pa.string()),
        ("stage", pa.string()),
        ("cause", pa.string()),
        ("state", pa.string()),
        ("pages", pa.uint64()),
        ("events", pa.uint64()),
        ("calls", pa.uint64()),
    ]
)
SCHEMAS["cma_blockers_origin"] = pa.schema(
    [
        ("cause", pa.string()),
        ("state", pa.string()),
        ("origin_known", pa.bool_()),
        ("origin_gfp_flags", pa.uint64()),
        ("pages", pa.uint64()),
        ("events", pa.uint64()),
    ]
)

#: Kernel stacks of a BPF stack map (collectors/stacks.py), one row per frame:
#: ``map`` the stack map (``blk_stacks``: the placing allocations of CMA pages,
#: ``cma_blockers.origin_stack_id``; ``pa_stacks``: ``page_alloc_by.stack_id``),
#: ``stack_id`` its id, ``level`` 0 the innermost
#: frame, ``frame`` ``function+0xoff`` (``function+0xoff [module]``; ``?``: no symbol),
#: symbolised from /proc/kallsyms when the recording was finished.
SCHEMAS["stacks"] = pa.schema(
    [
        ("map", pa.string()),
        ("stack_id", pa.int32()),
        ("level", pa.uint16()),
        ("frame", pa.string()),
    ]
)


def to_table(name: str, rows: dict[str, list], series: bool = False) -> pa.Table:
    """Build the Arrow table ``name`` from column lists, with the declared dtypes."""
    schema = (SERIES_SCHEMAS if series else SCHEMAS)[name]
    return pa.table(
        {f.name: pa.array(rows.get(f.name, []), type=f.type) for f in schema}, schema=schema
    )
