/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps and helpers shared by every cmaprof probe compiled into one BPF module:
 * the runtime config (counting window, memory-map calibration), the CMA ranges,
 * the zone pfn spans, the per-CPU drop counters, and the zone/node layout of
 * page->flags.
 */
#ifndef CMAPROF_COMMON_H
#define CMAPROF_COMMON_H

#include <uapi/linux/ptrace.h>
#if CMAPROF_HEADERS_CACHED
/*
 * The mm headers' constants that page_alloc, stream and migrate use, from an earlier
 * compile against the same headers (collectors/bccload.py keeps them per kernel,
 * headers, BCC, source and flags): parsing mm_types.h and mmzone.h is most of a
 * compile. The collector validates the layout at start-up either way.
 */
#include <linux/types.h>
#define __GFP_MOVABLE ((gfp_t)CMAPROF_GFP_MOVABLE)
#define CM_PAGE_STRUCT_SIZE CMAPROF_PAGE_STRUCT_SIZE
#else
#include <linux/mm_types.h>
#include <linux/mmzone.h>
#ifndef ZONES_PGSHIFT	/* older trees define the page->flags layout in mm.h only */
#include <linux/mm.h>	/* (a large header: skipped where mmzone.h suffices) */
#endif
#define CM_PAGE_STRUCT_SIZE sizeof(struct page)
#endif

#include "events.h"

/*
 * Zone and node fields of page->flags (the first word of struct page on every
 * kernel; a memdesc_flags_t wrapping it since 6.18), with the shifts of the headers
 * we are compiled against; collectors/page_alloc.py validates them on the running
 * kernel and switches to the pfn-span map when they are wrong.
 */
#ifdef ZONES_PGSHIFT_OVERRIDE
#define CM_ZONES_PGSHIFT ZONES_PGSHIFT_OVERRIDE
#define CM_ZONES_MASK ZONES_MASK_OVERRIDE
#define CM_NODES_PGSHIFT NODES_PGSHIFT_OVERRIDE
#define CM_NODES_MASK NODES_MASK_OVERRIDE
#else
#define CM_ZONES_PGSHIFT ZONES_PGSHIFT
#define CM_ZONES_MASK ZONES_MASK
#define CM_NODES_PGSHIFT NODES_PGSHIFT
#define CM_NODES_MASK NODES_MASK
#endif

BPF_ARRAY(config, struct cmaprof_config, 1);
BPF_ARRAY(zone_spans, struct pfn_span, MAX_ZONE_SPANS);
BPF_ARRAY(cma_ranges, struct pfn_span, MAX_CMA_AREAS);
BPF_PERCPU_ARRAY(drops, __u64, NR_DROPS);

static __always_inline struct cmaprof_config *get_config(void)
{
	__u32 zero = 0;

	return config.lookup(&zero);
}

static __always_inline void count_drop(int what)
{
	__u64 *d = drops.lookup(&what);

	if (d)
		(*d)++;
}

/* Index of the CMA area holding pfn, or CMA_AREA_NONE. */
static __always_inline __u8 cma_lookup(struct cmaprof_config *cfg, __u64 pfn)
{
#pragma unroll
	for (__u32 i = 0; i < MAX_CMA_AREAS; i++) {
		if (i >= cfg->nr_cma)
			break;
		__u32 idx = i;
		struct pfn_span *sp = cma_ranges.lookup(&idx);

		if (sp && pfn >= sp->start && pfn < sp->end)
			return (__u8)i;
	}
	return CMA_AREA_NONE;
}

/* pfn of a struct page *, from the calibrated memory-map base; -1 if unknown. */
static __always_inline __u64 page_to_pfn_cal(struct cmaprof_config *cfg, __u64 page)
{
	if (!page || !cfg->page_struct_size || page < cfg->vmemmap_base)
		return (__u64)-1;
	return (page - cfg->vmemmap_base) / cfg->page_struct_size;
}

/* Node and zone of the span holding pfn (ZONE_SOURCE_PFN_SPANS); -1 if none does. */
static __always_inline int span_lookup(struct cmaprof_config *cfg, __u64 pfn, __u16 *node,
				       __u8 *zone)
{
#pragma unroll
	for (__u32 i = 0; i < MAX_ZONE_SPANS; i++) {
		if (i >= cfg->nr_spans)
			break;
		__u32 idx = i;
		struct pfn_span *sp = zone_spans.lookup(&idx);

		if (sp && pfn >= sp->start && pfn < sp->end) {
			*node = sp->node;
			*zone = sp->zone;
			return 0;
		}
	}
	return -1;
}

/*
 * Node and zone of an allocated page, as the page_alloc probe computes them: from
 * page->flags, or from the pfn-span map (cfg->zone_source). 0, or the DROP_* cause.
 */
static __always_inline int page_node_zone(struct cmaprof_config *cfg, __u64 page, __u64 pfn,
					  __u16 *node, __u8 *zone)
{
	if (cfg->zone_source == ZONE_SOURCE_PAGE_FLAGS) {
		__u64 flags = 0;

		if (bpf_probe_read_kernel(&flags, sizeof(flags), (void *)page))
			return DROP_PAGE_READ_FAILED;
		*zone = (flags >> CM_ZONES_PGSHIFT) & CM_ZONES_MASK;
		*node = (flags >> CM_NODES_PGSHIFT) & CM_NODES_MASK;
		return 0;
	}
	if (span_lookup(cfg, pfn, node, zone))
		return DROP_PFN_OUTSIDE_SPANS;
	return 0;
}

#endif /* CMAPROF_COMMON_H */
