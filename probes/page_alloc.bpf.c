// SPDX-License-Identifier: GPL-2.0
/*
 * page_alloc: pages allocated per (node, zone, order, gfp, requested migratetype,
 * CMA area), aggregated in the kernel; failed allocations counted apart.
 *
 * Tracepoints: kmem:mm_page_alloc as a raw tracepoint (TP_PROTO(struct page *page,
 * unsigned int order, gfp_t gfp_flags, int migratetype), unchanged since before
 * v4.9; raw tracepoints need v4.17). At start-up a second raw-tracepoint program
 * (calib_raw) takes, from cmaprof's own calibrating thread only, the struct page * of
 * each order-0 __GFP_MOVABLE allocation; the collector makes those with page faults
 * and reads their pfns from /proc/self/pagemap (calibration of vmemmap; see
 * collectors/page_alloc.py). No classic tracepoint is used: nothing perf, ftrace or
 * another BPF tool attaches to kmem:mm_page_alloc can disturb it or be disturbed.
 * Kernels: 4.17 and later (tested: 6.1 guest, 6.18 host).
 *
 * Zone and node are read from page->flags (the first word of struct page on
 * every kernel; a memdesc_flags_t wrapping it since 6.18) with the shifts of the
 * headers we are compiled against (CM_ZONES_PGSHIFT etc., common.h); the collector
 * validates them on the running kernel and switches to the pfn-span map
 * (ZONE_SOURCE_PFN_SPANS) when they are wrong.
 *
 * With the bulk probe compiled in (ENABLE_BULK), every successful allocation is
 * also shown to bulk_note_alloc() (bulk.bpf.c), which tells the bulk allocator's
 * traced fallback pages from its untraced fast-path pages.
 *
 * Options (-D): MAX_KEYS (cube size), MAX_FAIL_KEYS, CALIB_PAIRS,
 * MAX_ZONE_SPANS, MAX_CMA_AREAS; ZONES_PGSHIFT_OVERRIDE etc. to force a layout.
 */
#include "common.h"

#ifndef MAX_KEYS
#define MAX_KEYS 16384
#endif
#ifndef MAX_FAIL_KEYS
#define MAX_FAIL_KEYS 1024
#endif
#ifndef CALIB_PAIRS
#define CALIB_PAIRS 64	/* a power of two: a ring indexed by calib_count */
#endif

#if ENABLE_BLOCKERS
/* blockers.bpf.c (pasted after this file): the allocation that placed a CMA page. */
static __always_inline void blockers_note_alloc(__u64 pfn, __u8 area, __u32 order, __u64 gfp,
						int mt);
#endif

BPF_PERCPU_HASH(page_alloc, struct page_alloc_key, struct page_alloc_val, MAX_KEYS);
BPF_PERCPU_HASH(page_alloc_fail, struct page_alloc_fail_key, struct page_alloc_val,
		MAX_FAIL_KEYS);
BPF_ARRAY(calib_tid, __u32, 1);	/* the calibrating thread; 0: calibrate nothing */
BPF_ARRAY(calib_pairs, struct calib_pair, CALIB_PAIRS);
BPF_ARRAY(calib_count, __u64, 1);
BPF_ARRAY(layout, struct layout_info, 1);

/*
 * Calibration: the struct page * (and its flags word) of each order-0 movable
 * allocation made by the calibrating thread, i.e. the pages its anonymous write
 * faults get. The collector reads calib_count before and after each fault and keeps
 * a pair only when exactly one such allocation happened in between.
 */
int calib_raw(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u32 *tid = calib_tid.lookup(&zero);
	__u64 *n = calib_count.lookup(&zero);
	struct layout_info *l = layout.lookup(&zero);
	struct calib_pair pair = {};
	__u64 page = ctx->args[0];
	__u32 idx;

	if (!tid || !n || !*tid || (__u32)bpf_get_current_pid_tgid() != *tid)
		return 0;
	if (!page || (__u32)ctx->args[1] != 0 || !((gfp_t)ctx->args[2] & __GFP_MOVABLE))
		return 0;
	if (l && !l->page_struct_size) {
		l->zones_pgshift = CM_ZONES_PGSHIFT;
		l->zones_mask = CM_ZONES_MASK;
		l->nodes_pgshift = CM_NODES_PGSHIFT;
		l->nodes_mask = CM_NODES_MASK;
		l->page_struct_size = sizeof(struct page);
	}
	pair.page = page;
	pair.gfp = (__u64)(gfp_t)ctx->args[2];
	bpf_probe_read_kernel(&pair.flags, sizeof(pair.flags), (void *)page);
	idx = __sync_fetch_and_add(n, 1) & (CALIB_PAIRS - 1);
	calib_pairs.update(&idx, &pair);
	return 0;
}

/* The aggregate: one per-CPU hash update per allocation. */
int page_alloc_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct cmaprof_config *cfg = get_config();
	struct page_alloc_val zero_val = {};
	struct page *page = (struct page *)ctx->args[0];
	__u32 order = (__u32)ctx->args[1];
	__u64 gfp = (__u64)(gfp_t)ctx->args[2];
	int mt = (int)ctx->args[3];
	struct page_alloc_val *v;

	if (!cfg || !cfg->enabled)
		return 0;

	if (!page) {
		struct page_alloc_fail_key fk = {};

		fk.gfp_flags = gfp;
		fk.order = order;
		fk.migratetype_id = mt;
		v = page_alloc_fail.lookup_or_try_init(&fk, &zero_val);
		if (!v) {
			count_drop(DROP_PAGE_ALLOC_FAIL_TABLE_FULL);
			return 0;
		}
		v->allocs++;
		v->pages += 1ULL << order;
		return 0;
	}

#if ENABLE_BULK
	/* A page of the bulk allocator's __alloc_pages() fallback: counted here, not there. */
	bulk_note_alloc((__u64)page, order);
#endif

	struct page_alloc_key key = {};
	__u64 pfn = 0;

	key.gfp_flags = gfp;
	key.order = order;
	key.migratetype_id = mt;
	pfn = page_to_pfn_cal(cfg, (__u64)page);

	if (cfg->zone_source == ZONE_SOURCE_PAGE_FLAGS) {
		__u64 flags = 0;

		if (bpf_probe_read_kernel(&flags, sizeof(flags), (void *)page)) {
			count_drop(DROP_PAGE_READ_FAILED);
			return 0;
		}
		key.zone_idx = (flags >> CM_ZONES_PGSHIFT) & CM_ZONES_MASK;
		key.node = (flags >> CM_NODES_PGSHIFT) & CM_NODES_MASK;
	} else if (span_lookup(cfg, pfn, &key.node, &key.zone_idx)) {
		count_drop(DROP_PFN_OUTSIDE_SPANS);
		return 0;
	}
	key.cma_area_idx = cfg->nr_cma ? cma_lookup(cfg, pfn) : CMA_AREA_NONE;
#if ENABLE_BLOCKERS
	if (key.cma_area_idx != CMA_AREA_NONE)
		blockers_note_alloc(pfn, key.cma_area_idx, order, gfp, mt);
#endif

	v = page_alloc.lookup_or_try_init(&key, &zero_val);
	if (!v) {
		count_drop(DROP_PAGE_ALLOC_CUBE_FULL);
		return 0;
	}
	v->allocs++;
	v->pages += 1ULL << order;
	return 0;
}
