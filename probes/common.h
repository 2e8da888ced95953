/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps and helpers shared by every cmaprof probe compiled into one BPF module:
 * the runtime config (counting window, memory-map calibration), the CMA ranges,
 * and the per-CPU drop counters.
 */
#ifndef CMAPROF_COMMON_H
#define CMAPROF_COMMON_H

#include <uapi/linux/ptrace.h>
#include <linux/mm_types.h>

#include "events.h"

BPF_ARRAY(config, struct cmaprof_config, 1);
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

#endif /* CMAPROF_COMMON_H */
