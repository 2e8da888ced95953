/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Records shared between cmaprof's BPF programs and its Python collectors.
 *
 * The one definition of the probe ABI: probes/abi.py parses this file (constants,
 * struct layouts as numpy dtypes), BCC generates the ctypes mirrors of the structs
 * from the compiled program (table.Key / table.Leaf), and Python restates neither a
 * number nor a layout (tests/unit/test_abi.py checks both). Field names are the
 * column names the collectors write (see cmaprof/recording/schema.py). A family of
 * `#define PREFIX_NAME N` is a vocabulary: Python takes its names from here
 * (PREFIX_ stripped, lower case), so a name here is a name in the recording.
 */
#ifndef CMAPROF_EVENTS_H
#define CMAPROF_EVENTS_H

#ifndef MAX_ZONE_SPANS
#define MAX_ZONE_SPANS 64
#endif
#ifndef MAX_CMA_AREAS
#define MAX_CMA_AREAS 20		/* CONFIG_CMA_AREAS default maximum */
#endif
#define CMA_AREA_NONE 0xff

/* Zone and node come from struct page ->flags, or from the pfn-span map. */
#define ZONE_SOURCE_PAGE_FLAGS 0
#define ZONE_SOURCE_PFN_SPANS 1

/* Runtime settings written by the collector into the `config` array. */
struct cmaprof_config {
	__u64 vmemmap_base;	/* struct page * of pfn 0 (never leaves the collector) */
	__u64 page_struct_size;	/* sizeof(struct page) on the running kernel */
	__u32 enabled;		/* count only while 1: brackets the vmstat snapshots */
	__u32 zone_source;	/* ZONE_SOURCE_* */
	__u32 nr_spans;
	__u32 nr_cma;
	__u32 page_struct_shift;	/* log2(page_struct_size) when a power of two, else 0 */
	__u32 pad;
};

/* A pfn range [start, end) of one (node, zone), from /proc/zoneinfo. */
struct pfn_span {
	__u64 start;
	__u64 end;
	__u16 node;
	__u8 zone;
	__u8 pad[5];
};

/* The page_alloc cube: one entry per distinct allocation class. */
struct page_alloc_key {
	__u64 gfp_flags;	/* raw gfp bits as the tracepoint recorded them */
	__u16 node;
	__u8 zone_idx;		/* enum zone_type index */
	__u8 order;
	__u8 migratetype_id;	/* requested: gfp_migratetype(gfp) */
	__u8 cma_area_idx;	/* index into the recording's CMA areas, or CMA_AREA_NONE */
	__u8 pad[2];
};

struct page_alloc_val {
	__u64 allocs;
	__u64 pages;		/* base pages: allocs << order */
};

/*
 * The cube's fast path (page_alloc.bpf.c): each CPU owns CUBE_SLOTS direct-mapped
 * slots of one array (slot = hash of the key, then up to CUBE_PROBES neighbours);
 * a key that finds no slot is counted in the per-CPU hash `page_alloc` instead.
 * A slot is in use once allocs != 0; slots are never freed while recording.
 */
#ifndef CUBE_SLOTS
#define CUBE_SLOTS 1024		/* per CPU; a power of two */
#endif
#ifndef CUBE_PROBES
#define CUBE_PROBES 4
#endif
#ifndef CUBE_CPUS
#define CUBE_CPUS 64		/* CPU regions; a CPU beyond counts in the hash */
#endif

struct page_alloc_slot {
	struct page_alloc_key key;
	struct page_alloc_val val;
};

/* Indexes of the per-CPU `page_alloc_stats` array (collectors/page_alloc.py). */
#define PA_STAT_OVERFLOW 0	/* events counted in the hash: no free slot for the key */
#define PA_STAT_NO_REGION 1	/* events counted in the hash: CPU id >= CUBE_CPUS */
#define PA_STAT_BY_OVERFLOW_ALLOCS 2	/* record --by: events in the cube, not in page_alloc_by (full) */
#define PA_STAT_BY_OVERFLOW_PAGES 3	/* record --by: their base pages */
#define PA_NR_STATS 4

/*
 * record --by comm,tgid,stack (page_alloc.bpf.c, PA_BY_COMM/PA_BY_TGID/PA_BY_STACK):
 * the cube also keyed by process and/or kernel stack, in the per-CPU hash
 * page_alloc_by (PA_BY_ENTRIES keys; an event that finds it full is counted in
 * PA_STAT_BY_OVERFLOW_*). A key part not asked for is 0. stack_id: the id in the
 * stack map pa_stacks (PA_STACK_ENTRIES stacks of at most PA_STACK_DEPTH frames,
 * innermost first), or bpf_get_stackid()'s negative errno.
 */
#ifndef PA_BY_ENTRIES
#define PA_BY_ENTRIES 16384
#endif
#ifndef PA_STACK_ENTRIES
#define PA_STACK_ENTRIES 16384
#endif
#ifndef PA_STACK_DEPTH
#define PA_STACK_DEPTH 32
#endif

struct page_alloc_by_key {
	struct page_alloc_key cube;
	__u32 tgid;
	__s32 stack_id;
	char comm[16];
};

/* A value of pa_stacks: return addresses, innermost first, 0 after the last. */
struct pa_stack {
	__u64 ip[PA_STACK_DEPTH];
};

/* Failed allocations (page == NULL), counted apart. */
struct page_alloc_fail_key {
	__u64 gfp_flags;
	__u8 order;
	__u8 migratetype_id;
	__u8 pad[6];
};

/* Per-CPU counters of things that were not counted; indexes of `drops`. */
#define DROP_PAGE_ALLOC_CUBE_FULL 0	/* page_alloc cube had no room for a new key */
#define DROP_PAGE_ALLOC_FAIL_TABLE_FULL 1	/* failure table had no room for a new key */
#define DROP_PAGE_READ_FAILED 2	/* bpf_probe_read_kernel of page->flags failed */
#define DROP_PFN_OUTSIDE_SPANS 3		/* pfn outside every zone span (span mode) */
#define DROP_BULK_TABLE_FULL 4	/* bulk table had no room */
#define NR_DROPS 16		/* room to grow; DROP_* indexes never change */

/* Start-up calibration: the struct page * of one of cmaprof's own page faults. */
struct calib_pair {
	__u64 page;		/* kernel address: used in the collector only */
	__u64 flags;		/* page->flags word */
	__u64 gfp;		/* the allocation's gfp_t */
};

/* Constants of the headers the program was compiled against. */
struct layout_info {
	__u64 zones_pgshift;
	__u64 zones_mask;
	__u64 nodes_pgshift;
	__u64 nodes_mask;
	__u64 page_struct_size;
	__u64 gfp_movable;	/* __GFP_MOVABLE */
};


/* ---- cma: one record per cma_alloc() call, streamed; histograms in maps ---- */
#define CMA_NAME_LEN 32

/* How the outcome of a call is known. */
#define CMA_OUTCOME_ERRORNO 0	/* cma_alloc_finish's errorno field (>= 6.3) */
#define CMA_OUTCOME_PAGE 1	/* inferred: finish event's page is NULL or not */
#define CMA_OUTCOME_RETVAL 2	/* inferred: cma_alloc()'s returned page (kretprobe) */
#define CMA_OUTCOME_NO_FINISH 3	/* inferred failure: start without finish */
#define CMA_OUTCOME_FATAL_SIGNAL 4	/* inferred -EINTR: failed, no errorno, SIGKILL pending at return */

/*
 * The fields of a call in flight, and the first fields of the streamed event (a
 * macro, not a nested struct, and kernel type names (u64, not __u64): BCC turns
 * only flat structs of the types it knows into Python types).
 */
#define CMA_CALL_FIELDS							\
	u64 start_ns;							\
	u64 count;		/* pages requested */			\
	u64 base_pfn;		/* area base (struct cma's first field), or -1 */ \
	u64 pfn;		/* result's first pfn, or the last range tried */ \
	u64 first_busy_pfn;	/* fin_pfn of the first failed isolation test */ \
	u64 last_retry_pfn;	/* pfn of the last cma_alloc_busy_retry */	\
	u64 migrate_succeeded; /* pages, mm_migrate_pages during the call */	\
	u64 migrate_failed;						\
	u32 align;							\
	u32 busy_retries;						\
	u32 isolate_tests;						\
	u32 isolate_failures;						\
	s32 err;		/* errno when the kernel says so */	\
	u8 have_finish;						\
	u8 page_ok;		/* finish/returned page non-NULL */	\
	u8 pad0[2];							\
	char name[CMA_NAME_LEN];

struct cma_call {
	CMA_CALL_FIELDS
};

/*
 * Phases of a call: where its task spent the call's time (probes/cma.bpf.c keeps a
 * stack of the phase functions it is in; a phase's time is its self time, the time of
 * the phases nested in it subtracted). Functions by presence, chosen by
 * collectors/cma.py PHASE_SYMBOLS; the names are the `phase` column of `cma_phases`.
 * CMA_PHASE_UNATTRIBUTED is not a function: the call's time in none of the others, so
 * the phases of a call add up to its latency exactly. Codes never change; append only.
 */
#define CMA_PHASE_SEARCH 0	/* bitmap_find_next_zero_area_off(): range search */
#define CMA_PHASE_CONTIG 1	/* alloc_contig_range() outside the phases below */
#define CMA_PHASE_ISOLATE 2	/* start_isolate_page_range() */
#define CMA_PHASE_DRAIN 3	/* drain_all_pages() (pcp), lru_cache_disable() (lru) */
#define CMA_PHASE_MIGRATE_RANGE 4	/* __alloc_contig_migrate_range() outside its parts */
#define CMA_PHASE_COLLECT 5	/* isolate_migratepages_range(): pages off the LRU */
#define CMA_PHASE_RECLAIM 6	/* reclaim_clean_pages_from_list() */
#define CMA_PHASE_MIGRATE 7	/* migrate_pages() */
#define CMA_PHASE_TEST 8	/* test_pages_isolated() */
#define CMA_PHASE_TAKE 9	/* isolate_freepages_range(): taking the range */
#define CMA_PHASE_UNDO 10	/* undo_isolate_page_range() */
#define CMA_PHASE_SLEEP 11	/* msleep(): busy-retry sleeps, where a kernel has them */
#define CMA_PHASE_UNATTRIBUTED 12	/* the rest of the call */
#define CMA_NR_PHASES 13

struct cma_event {
	CMA_CALL_FIELDS
	u64 latency_ns;
	u32 pid;
	u32 tgid;
	u8 outcome_source;	/* CMA_OUTCOME_* */
	u8 success;
	u8 area;		/* CMA area index or CMA_AREA_NONE */
	u8 pad1[5];
	char comm[16];
	/* per phase (CMA_PHASE_*): they add up to latency_ns */
	u64 phase_ns[CMA_NR_PHASES];	/* self time */
	u64 phase_failed_ns[CMA_NR_PHASES];	/* of it, in alloc_contig_range() attempts that failed */
	u32 phase_entries[CMA_NR_PHASES];	/* times the task entered the phase */
	u32 phase_lost[CMA_NR_PHASES];	/* frames closed without their return, returns without a frame */
};

struct cma_hist_key {
	__u8 area;
	__u8 size_log2;		/* log2(pages requested) */
	__u8 success;
	__u8 pad;
	__u32 slot;		/* log2(latency_ns) */
};

/* ---- migrate: mm_migrate_pages by reason and mode ---- */
struct migrate_key {
	__u32 reason;
	__u32 mode;
};

struct migrate_val {
	__u64 calls;
	__u64 succeeded;	/* pages (THP counted in base pages on >= 5.10) */
	__u64 failed;
	__u64 thp_succeeded;
	__u64 thp_failed;
	__u64 thp_split;
	__u64 duration_ns;	/* sum, from mm_migrate_pages_start on the same task */
	__u64 timed_calls;	/* calls with a start event */
};

#define DROP_CMA_RINGBUF_FULL 5	/* cma event ring buffer full */
#define DROP_CMA_INFLIGHT_FULL 6	/* too many concurrent cma_alloc calls */
#define DROP_MIGRATE_TABLE_FULL 7

/* ---- bulk: bulk-allocator fast-path pages (pgalloc_* without mm_page_alloc) ---- */
#define DROP_BULK_LOST 8	/* a bulk call's pages not counted: see bulk_stats */

struct bulk_key {
	__u16 node;
	__u8 zone_idx;		/* enum zone_type index */
	__u8 pad[5];
};

struct bulk_val {
	__u64 calls;		/* bulk calls that placed untraced pages */
	__u64 pages;		/* untraced pages (order 0) */
};

/* Indexes of the per-CPU `bulk_stats` array (collectors/bulk.py STAT_NAMES). */
#define BULK_STAT_CALLS 0	/* returns matched to their entry while counting */
#define BULK_STAT_COUNTED_CALLS 1	/* of which placed untraced pages */
#define BULK_STAT_PAGES 2	/* untraced pages counted */
#define BULK_STAT_FALLBACK_CALLS 3	/* calls whose new page came from __alloc_pages() */
#define BULK_STAT_LIST_CALLS 4	/* calls with a page_list (kernels before 6.14) */
#define BULK_STAT_PREPOPULATED_CALLS 5	/* array calls with non-NULL slots at entry */
#define BULK_STAT_SCAN_OVERFLOW_CALLS 6	/* nr_pages > BULK_MAX_SCAN: pages beyond missed */
#define BULK_STAT_UNMATCHED_RETURNS 7	/* return without its entry (entry program skipped) */
#define BULK_STAT_STALE_ENTRIES 8	/* entries whose return never ran (dropped later) */
#define BULK_STAT_READ_FAILURES 9	/* array, list head or page flags unreadable */
#define BULK_STAT_NO_TASK_SLOT 10	/* bulk_active full: call not followed */
#define BULK_STAT_NEGATIVE_CALLS 11	/* fewer filled slots at return than at entry */
#define BULK_STAT_NO_SPAN 12	/* page outside every zone span (span mode) */
#define BULK_STAT_ENTRIES 13	/* entry programs run (counting or not) */
#define BULK_NR_STATS 16

/* ---- stream: one record per mm_page_alloc, batched per CPU (record --events) ---- */
#ifndef STREAM_BATCH
#define STREAM_BATCH 256	/* events per ring-buffer record */
#endif

/* 32 bytes; collectors/stream.py reads it with abi.dtype("stream_event"). */
struct stream_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 pfn;
	__u32 gfp_flags;	/* gfp_t is an unsigned int on every kernel */
	__u32 tgid;
	__u16 node;
	__u8 zone_idx;
	__u8 order;
	__u8 migratetype_id;	/* requested */
	__u8 cma_area_idx;	/* CMA area index or CMA_AREA_NONE */
	__u8 pad[2];
};

/* What the ring buffer carries: a CPU's full batch (or, at the end, its remainder). */
struct stream_batch {
	__u32 cpu;
	__u32 n;		/* events used in ev[] */
	__u64 seq;		/* per-CPU batch number: a gap is a dropped batch */
	struct stream_event ev[STREAM_BATCH];
};

/* Which events are streamed (the --events FILTER); written by the collector. */
struct stream_filter {
	__u64 gfp_all;		/* bits that must all be set (0: no condition) */
	__u64 gfp_none;		/* bits that must all be clear */
	__u32 zone_mask;	/* bit (1 << zone index) per zone kept; 0: every zone */
	__u32 sample;		/* keep every Nth matching event per CPU; 0 or 1: all */
	__u8 order_min;
	__u8 order_max;
	__u8 cma;		/* STREAM_CMA_* */
	__u8 pad[5];
};
#define STREAM_CMA_ANY 0
#define STREAM_CMA_IN 1		/* only pages inside a CMA area */
#define STREAM_CMA_OUT 2

/* Indexes of the per-CPU `stream_stats` array (collectors/stream.py STAT_NAMES). */
#define STREAM_STAT_EXAMINED 0	/* successful allocations while counting */
#define STREAM_STAT_FILTERED 1	/* rejected by the filter */
#define STREAM_STAT_SAMPLED_OUT 2	/* matched, skipped by 1/N sampling */
#define STREAM_STAT_SELECTED 3	/* to be written: = submitted + dropped + pending */
#define STREAM_STAT_SUBMITTED 4	/* events in batches the ring buffer accepted */
#define STREAM_STAT_DROPPED 5	/* events in batches the ring buffer refused (full) */
#define STREAM_STAT_BATCHES 6	/* batches accepted */
#define STREAM_STAT_DROPPED_BATCHES 7
#define STREAM_STAT_UNREADABLE 8	/* zone unknown (page unreadable, pfn outside spans) */
#define STREAM_NR_STATS 16

/* ---- blockers: pages that block cma_alloc(), and who placed them (blockers.bpf.c) ---- */
/* Stages (cmaprof/recording/schema.py BLOCKER_STAGES) */
#define BLK_STAGE_ISOLATE 0		/* pageblock isolation (not reachable for CMA on 6.1) */
#define BLK_STAGE_MIGRATE 1		/* failed to migrate: putback_movable_pages() */
#define BLK_STAGE_TEST_ISOLATED 2	/* test_pages_isolated() fin_pfn */
#define BLK_NR_STAGES 3
/* Causes (cmaprof/recording/schema.py BLOCKER_CAUSES, same order) */
#define BLK_CAUSE_UNKNOWN 0
#define BLK_CAUSE_FREE 1
#define BLK_CAUSE_RESERVED 2
#define BLK_CAUSE_SLAB 3
#define BLK_CAUSE_UNMOVABLE_KERNEL 4
#define BLK_CAUSE_MOVABLE_KERNEL 5
#define BLK_CAUSE_ANON 6
#define BLK_CAUSE_FILE 7
#define BLK_CAUSE_BDEV 8
#define BLK_CAUSE_BDEV_BUFFER_HEAD 9
#define BLK_NR_CAUSES 10
/*
 * State bits (cmaprof/recording/schema.py BLOCKER_STATES), in priority order: the `state`
 * column names the first one set, in the order of these lines.
 */
#define BLK_STATE_WRITEBACK 0x4
#define BLK_STATE_PINNED 0x8
#define BLK_STATE_BH_BUSY 0x10
#define BLK_STATE_LOCKED 0x1
#define BLK_STATE_DIRTY 0x2
#define BLK_STATE_BH_DIRTY_OR_LOCKED 0x20
/* page->mapping kinds */
#define BLK_MAPPING_NONE 0
#define BLK_MAPPING_ANON 1
#define BLK_MAPPING_MOVABLE 2
#define BLK_MAPPING_KSM 3
#define BLK_MAPPING_FILE 4
/* Indexes of the per-CPU blk_stats array (collectors/blockers.py STAT_NAMES) */
#define BLK_STAT_EVENTS 0
#define BLK_STAT_RINGBUF_FULL 1
#define BLK_STAT_LIST_TRUNCATED 2
#define BLK_STAT_ORIGIN_WRITES 3
#define BLK_STAT_ORIGIN_OUT_OF_RANGE 4
#define BLK_STAT_READ_FAILURES 5
#define BLK_STAT_STACK_IDS 6		/* origins given a stack id (record --by stack) */
#define BLK_STAT_STACK_EEXIST 7	/* get_stackid -EEXIST: hash bucket held by another stack */
#define BLK_STAT_STACK_ENOMEM 8	/* get_stackid -ENOMEM: every stack map entry in use */
#define BLK_STAT_STACK_OTHER_ERR 9	/* get_stackid failed otherwise (-EFAULT: no stack) */
#define BLK_NR_STATS 16

/*
 * record --by stack: the kernel stack of each allocation placed in a CMA area, in the
 * stack map blk_stacks (BLK_STACK_ENTRIES stacks of at most BLK_STACK_DEPTH frames,
 * innermost first); the origin entry keeps its id, or the get_stackid error.
 */
#ifndef BLK_STACK_ENTRIES
#define BLK_STACK_ENTRIES 16384
#endif
#ifndef BLK_STACK_DEPTH
#define BLK_STACK_DEPTH 32
#endif

/* A value of blk_stacks: return addresses, innermost first, 0 after the last. */
struct blk_stack {
	__u64 ip[BLK_STACK_DEPTH];
};

/* The allocation that last placed a CMA page: one per CMA page (blk_origin). */
struct blk_origin {
	__u64 time_ns;		/* bpf_ktime_get_ns() */
	__u32 gfp;
	__u32 pid;
	__u8 order;
	__u8 migratetype;	/* requested */
	__u8 valid;
	__u8 stack_taken;	/* 1: stack_id is the result of get_stackid (--by stack) */
	__s32 stack_id;		/* blk_stacks id, or the negative errno of get_stackid */
	char comm[16];
};

/* Header constants the running program was compiled with (page->flags bits). */
struct blk_layout {
	__u8 filled;
	__u8 pg_locked, pg_referenced, pg_uptodate, pg_dirty, pg_lru, pg_active, pg_slab;
	__u8 pg_owner_priv_1, pg_reserved, pg_private, pg_writeback, pg_head, pg_reclaim;
	__u8 pg_swapbacked, pg_unevictable, pg_mlocked;
	__u8 bh_dirty, bh_lock, bh_private_start;
	__u8 pad[4];
	__u32 page_struct_size;	/* sizeof(struct page) in the headers */
};

/* One blocking page, streamed (flat, kernel type names: see CMA_CALL_FIELDS). */
struct blocker_event {
	u64 time_ns;
	u64 pfn;
	u64 head_pfn;
	u64 flags;		/* raw page->flags of the head page */
	u64 range_start_pfn;	/* test_pages_isolated range, or -1 */
	u64 range_end_pfn;
	u64 cma_start_ns;	/* start_ns of the cma_alloc() call in flight */
	u64 cma_count;		/* its pages requested */
	u64 fs_magic;		/* super_block s_magic of a file page */
	u64 ino;
	u64 origin_time_ns;
	u32 origin_gfp;
	u32 origin_pid;
	u32 dev;		/* kernel dev_t: s_dev, or i_rdev of a block device */
	u32 bh_state_or;	/* OR of the buffer heads' b_state */
	s32 refcount;
	s32 mapcount;
	s32 extra_refs;		/* refcount minus what migration expects; 0 when unknown */
	u32 tid;
	u8 stage;
	u8 cause;
	u8 state;
	u8 area;
	u8 mapping_kind;
	u8 bh_count;
	u8 bh_busy;
	u8 origin_known;
	u8 origin_order;
	u8 origin_migratetype;
	u8 origin_stack_taken;
	u8 pad[1];
	s32 origin_stack_id;	/* blk_stacks id, or negative errno (origin_stack_taken) */
	char origin_comm[16];
	char comm[16];
};

#endif /* CMAPROF_EVENTS_H */
