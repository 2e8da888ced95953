// SPDX-License-Identifier: GPL-2.0
/*
 * stream: one record per successful page allocation (`record --events page_alloc`),
 * selected by a filter (zone, gfp bits, order, CMA placement) or sampled 1/N,
 * written to a BPF ring buffer in per-CPU batches of STREAM_BATCH events, so that
 * user space wakes once per batch, never per event.
 *
 * Tracepoints: kmem:mm_page_alloc as tp_btf (stream_btf) where the kernel loads it,
 * else as a raw tracepoint (stream_raw): the same choice and the same reasons as
 * page_alloc_btf/page_alloc_raw (page_alloc.bpf.c, whose helpers this file uses; the
 * page_alloc probe's program runs on the same tracepoint; both read the same
 * counting window from `config`). BPF ring buffer: v5.8. Kernels: 5.8 and later
 * (tested: 6.18 host).
 *
 * Accounting, per CPU (stream_stats, STREAM_*): examined = filtered + sampled_out +
 * unreadable + selected; selected = submitted + dropped + the remainder left in the
 * CPU's batch at the end, which the collector reads from the map after counting
 * stops. A ring-buffer refusal drops a whole batch and counts all its events.
 *
 * Options (-D): STREAM_BATCH (events.h), STREAM_RINGBUF_PAGES (power of two).
 */
#include "common.h"

#ifndef STREAM_RINGBUF_PAGES
#define STREAM_RINGBUF_PAGES 4096
#endif

BPF_RINGBUF_OUTPUT(stream_ring, STREAM_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(stream_batch, struct stream_batch, 1);
BPF_PERCPU_ARRAY(stream_stats, __u64, STREAM_NR_STATS);
BPF_ARRAY(stream_filter, struct stream_filter, 1);

static __always_inline void stream_count(__u32 what, __u64 n)
{
	__u64 *c = stream_stats.lookup(&what);

	if (c)
		*c += n;
}

static __always_inline int stream_keep(struct stream_filter *f, struct stream_event *e)
{
	__u64 gfp = e->gfp_flags;

	if (f->zone_mask && !(f->zone_mask & (1U << (e->zone_idx & 31))))
		return 0;
	if ((gfp & f->gfp_all) != f->gfp_all || (gfp & f->gfp_none))
		return 0;
	if (e->order < f->order_min || e->order > f->order_max)
		return 0;
	if (f->cma == STREAM_CMA_IN && e->cma_area_idx == CMA_AREA_NONE)
		return 0;
	if (f->cma == STREAM_CMA_OUT && e->cma_area_idx != CMA_AREA_NONE)
		return 0;
	return 1;
}

/* One allocation; page may be a BTF-typed pointer (direct: tp_btf), see pa_count(). */
static __always_inline int stream_one(__u64 page, __u32 order, __u32 gfp, __u8 mt, int direct)
{
	struct cmaprof_config *cfg = get_config();
	__u32 zero = 0;
	struct stream_filter *f;
	struct stream_batch *b;
	struct stream_event *e;
	__u32 idx;

	if (!cfg || !cfg->enabled || !page)
		return 0;
	f = stream_filter.lookup(&zero);
	b = stream_batch.lookup(&zero);
	if (!f || !b)
		return 0;
	stream_count(STREAM_STAT_EXAMINED, 1);

	idx = b->n;
	if (idx >= STREAM_BATCH)	/* cannot happen; keeps the verifier's bound */
		idx = 0;
	e = &b->ev[idx];
	e->pfn = pa_page_to_pfn(cfg, direct ? pa_untyped(page) : page);
	e->order = (__u8)order;
	e->gfp_flags = gfp;
	e->migratetype_id = mt;
	if (direct && cfg->zone_source == ZONE_SOURCE_PAGE_FLAGS) {
		__u64 flags = *(volatile __u64 *)page;	/* BTF-typed: a checked load */

		e->zone_idx = (flags >> CM_ZONES_PGSHIFT) & CM_ZONES_MASK;
		e->node = (flags >> CM_NODES_PGSHIFT) & CM_NODES_MASK;
	} else if (page_node_zone(cfg, direct ? pa_untyped(page) : page, e->pfn, &e->node,
				  &e->zone_idx)) {
		stream_count(STREAM_STAT_UNREADABLE, 1);
		return 0;
	}
	e->cma_area_idx = cfg->nr_cma ? cma_lookup(cfg, e->pfn) : CMA_AREA_NONE;
	if (!stream_keep(f, e)) {
		stream_count(STREAM_STAT_FILTERED, 1);
		return 0;
	}
	if (f->sample > 1) {
		__u32 k = STREAM_STAT_SAMPLED_OUT;
		__u64 *matched = stream_stats.lookup(&k);
		__u32 s = STREAM_STAT_SELECTED;
		__u64 *selected = stream_stats.lookup(&s);

		/* matched so far = sampled_out + selected: keep the 1st, (N+1)th, ... */
		if (!matched || !selected)
			return 0;
		if ((*matched + *selected) % f->sample) {
			(*matched)++;
			return 0;
		}
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	stream_count(STREAM_STAT_SELECTED, 1);
	b->cpu = bpf_get_smp_processor_id();
	b->n = idx + 1;
	if (b->n < STREAM_BATCH)
		return 0;

	if (stream_ring.ringbuf_output(b, sizeof(*b), 0) == 0) {
		stream_count(STREAM_STAT_SUBMITTED, STREAM_BATCH);
		stream_count(STREAM_STAT_BATCHES, 1);
	} else {
		stream_count(STREAM_STAT_DROPPED, STREAM_BATCH);
		stream_count(STREAM_STAT_DROPPED_BATCHES, 1);
	}
	b->n = 0;
	b->seq++;
	return 0;
}

/* kmem:mm_page_alloc as tp_btf (see page_alloc_btf), and as a plain raw tracepoint. */
int stream_btf(unsigned long long *ctx)
{
	return stream_one(ctx[0], (__u32)ctx[1], (__u32)(gfp_t)ctx[2], (__u8)ctx[3], 1);
}

int stream_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return stream_one(ctx->args[0], (__u32)ctx->args[1], (__u32)(gfp_t)ctx->args[2],
			  (__u8)ctx->args[3], 0);
}
