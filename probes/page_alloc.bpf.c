// SPDX-License-Identifier: GPL-2.0
/*
 * page_alloc: pages allocated per (node, zone, order, gfp, requested migratetype,
 * CMA area), aggregated in the kernel; failed allocations counted apart.
 *
 * Tracepoints: kmem:mm_page_alloc (TP_PROTO(struct page *page, unsigned int order,
 * gfp_t gfp_flags, int migratetype), unchanged since before v4.9), counted by one of
 * two programs with the same body, chosen by the collector by presence:
 *   page_alloc_btf: a BTF-typed raw tracepoint (tp_btf; prog type TRACING, attach
 *     type BPF_TRACE_RAW_TP on the btf_trace_mm_page_alloc type of vmlinux BTF):
 *     page->flags is one checked load instead of a bpf_probe_read_kernel() call.
 *     Linux kernel commit 9e15db66136a ("bpf: Implement accurate raw_tp context
 *     access via BTF") (in v5.5); needs /sys/kernel/btf/vmlinux.
 *   page_alloc_raw: a plain raw tracepoint (v4.17), where tp_btf does not load.
 * At start-up a third raw-tracepoint program
 * (calib_raw) takes, from cmaprof's own calibrating thread only, the struct page * of
 * each order-0 __GFP_MOVABLE allocation; the collector makes those with page faults
 * and reads their pfns from /proc/self/pagemap (calibration of vmemmap; see
 * collectors/page_alloc.py). No classic tracepoint is used: nothing perf, ftrace or
 * another BPF tool attaches to kmem:mm_page_alloc can disturb it or be disturbed.
 * Kernels: 4.17 and later (tested: 6.1 guest, 6.18 host).
 *
 * The hot path: no hash lookup. Each CPU owns CUBE_SLOTS slots of one array; the
 * key (gfp, order, migratetype, node, zone, CMA area) hashes to a slot, and up to
 * CUBE_PROBES neighbours are tried; a key that finds none is counted in the per-CPU
 * hash `page_alloc` (PA_STAT_OVERFLOW says how many events went there: never lost,
 * only slower). The pfn is computed only when the CMA ranges or the pfn-span zone
 * source need it, by a shift for a power-of-two struct page (the kernel's own
 * __page_to_pfn() of SPARSEMEM_VMEMMAP, include/asm-generic/memory_model.h, is the
 * pointer difference (page - vmemmap), which compiles to that shift for 64 bytes).
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
 * By process and stack (record --by; PA_BY_COMM, PA_BY_TGID, PA_BY_STACK, compiled
 * out when 0, so the default path is unchanged): each event the cube counted is also
 * added to the per-CPU hash page_alloc_by, keyed by the cube key and the current
 * task's comm and/or tgid and/or the kernel stack id (bpf_get_stackid() into
 * pa_stacks, flags 0: -EEXIST (bucket held by another stack), -ENOMEM, -EFAULT kept
 * in the key as the negative errno). bpf_get_stackid() works on both programs: tp_btf
 * (TRACING) and raw_tp share raw_tp_prog_func_proto()'s bpf_get_stackid_proto_raw_tp
 * (kernel/trace/bpf_trace.c; the caller's regs from perf_fetch_caller_regs(), so the
 * stack starts in the tracepoint's caller, __alloc_pages and up). An event that finds
 * page_alloc_by full is counted in PA_STAT_BY_OVERFLOW_ALLOCS/_PAGES: the cube's totals
 * are page_alloc_by's plus those, exactly.
 *
 * Options (-D): CUBE_SLOTS, CUBE_PROBES, CUBE_CPUS (events.h), MAX_KEYS (the
 * overflow hash), MAX_FAIL_KEYS, CALIB_PAIRS,
 * MAX_ZONE_SPANS, MAX_CMA_AREAS; ZONES_PGSHIFT_OVERRIDE etc. to force a layout;
 * PA_BY_COMM, PA_BY_TGID, PA_BY_STACK, PA_BY_ENTRIES, PA_STACK_ENTRIES, PA_STACK_DEPTH.
 */
#include "common.h"

#ifndef ENABLE_BULK
#define ENABLE_BULK 0
#endif
#ifndef MAX_KEYS
#define MAX_KEYS 16384
#endif
#ifndef MAX_FAIL_KEYS
#define MAX_FAIL_KEYS 1024
#endif
#if CUBE_SLOTS & (CUBE_SLOTS - 1)
#error "CUBE_SLOTS must be a power of two"
#endif
#ifndef CALIB_PAIRS
#define CALIB_PAIRS 64	/* a power of two: a ring indexed by calib_count */
#endif
#ifndef PA_BY_COMM
#define PA_BY_COMM 0
#endif
#ifndef PA_BY_TGID
#define PA_BY_TGID 0
#endif
#ifndef PA_BY_STACK
#define PA_BY_STACK 0
#endif
#define PA_BY (PA_BY_COMM || PA_BY_TGID || PA_BY_STACK)

#if ENABLE_BLOCKERS
/* blockers.bpf.c (pasted after this file): the allocation that placed a CMA page. */
static __always_inline void blockers_note_alloc(__u64 pfn, __u8 area, __u32 order, __u64 gfp,
						int mt);
#endif

/* The cube: CUBE_CPUS regions of CUBE_SLOTS slots (mmapped by the collector), and
 * the per-CPU hash for keys that find no slot. */
BPF_F_TABLE("array", __u32, struct page_alloc_slot, page_alloc_slots, CUBE_CPUS * CUBE_SLOTS,
	    BPF_F_MMAPABLE);
BPF_PERCPU_ARRAY(page_alloc_stats, __u64, PA_NR_STATS);
BPF_PERCPU_ARRAY(pa_scratch, __u64, 1);
BPF_PERCPU_HASH(page_alloc, struct page_alloc_key, struct page_alloc_val, MAX_KEYS);
BPF_PERCPU_HASH(page_alloc_fail, struct page_alloc_fail_key, struct page_alloc_val,
		MAX_FAIL_KEYS);
BPF_ARRAY(calib_tid, __u32, 1);	/* the calibrating thread; 0: calibrate nothing */
BPF_ARRAY(calib_pairs, struct calib_pair, CALIB_PAIRS);
BPF_ARRAY(calib_count, __u64, 1);
BPF_ARRAY(layout, struct layout_info, 1);

static __always_inline void pa_stat(__u32 what)
{
	__u64 *c = page_alloc_stats.lookup(&what);

	if (c)
		(*c)++;
}

#if PA_BY
BPF_PERCPU_HASH(page_alloc_by, struct page_alloc_by_key, struct page_alloc_val, PA_BY_ENTRIES);
#if PA_BY_STACK
BPF_TABLE("stacktrace", int, struct pa_stack, pa_stacks, PA_STACK_ENTRIES);
#endif

static __always_inline void pa_stat_add(__u32 what, __u64 n)
{
	__u64 *c = page_alloc_stats.lookup(&what);

	if (c)
		*c += n;
}

/* One event the cube counted, by process and/or stack (record --by). */
static __always_inline void pa_by_add(void *ctx, struct page_alloc_key *k, __u32 order)
{
	struct page_alloc_by_key bk = {};
	struct page_alloc_val zero_val = {};
	struct page_alloc_val *v;

	bk.cube = *k;
#if PA_BY_TGID
	bk.tgid = bpf_get_current_pid_tgid() >> 32;
#endif
#if PA_BY_COMM
	bpf_get_current_comm(bk.comm, sizeof(bk.comm));
#endif
#if PA_BY_STACK
	bk.stack_id = pa_stacks.get_stackid(ctx, 0);
#endif
	v = page_alloc_by.lookup_or_try_init(&bk, &zero_val);
	if (!v) {
		pa_stat_add(PA_STAT_BY_OVERFLOW_ALLOCS, 1);
		pa_stat_add(PA_STAT_BY_OVERFLOW_PAGES, 1ULL << order);
		return;
	}
	v->allocs++;
	v->pages += 1ULL << order;
}
#endif

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
		l->page_struct_size = CM_PAGE_STRUCT_SIZE;
		l->gfp_movable = __GFP_MOVABLE;
	}
	pair.page = page;
	pair.gfp = (__u64)(gfp_t)ctx->args[2];
	bpf_probe_read_kernel(&pair.flags, sizeof(pair.flags), (void *)page);
	idx = __sync_fetch_and_add(n, 1) & (CALIB_PAIRS - 1);
	calib_pairs.update(&idx, &pair);
	return 0;
}

/* pfn of a struct page *: a shift for a power-of-two struct page (64 bytes on every
 * common config), as the kernel's own pointer difference compiles; -1 if unknown. */
static __always_inline __u64 pa_page_to_pfn(struct cmaprof_config *cfg, __u64 page)
{
	if (!page || !cfg->page_struct_size || page < cfg->vmemmap_base)
		return (__u64)-1;
	if (cfg->page_struct_shift)
		return (page - cfg->vmemmap_base) >> (cfg->page_struct_shift & 63);
	return (page - cfg->vmemmap_base) / cfg->page_struct_size;
}

/*
 * The value of a BTF-typed pointer as a plain number: the verifier forbids shifts and
 * most arithmetic on a typed pointer, and a value read back from map memory is
 * untyped. A store and a load in this CPU's scratch word (volatile: kept by clang).
 * Root only (a pointer stored in a map), as every cmaprof program.
 */
static __always_inline __u64 pa_untyped(__u64 typed)
{
	__u32 zero = 0;
	__u64 *w = pa_scratch.lookup(&zero);

	if (!w)
		return 0;
	*(volatile __u64 *)w = typed;
	return *(volatile __u64 *)w;
}

union pa_key {
	struct page_alloc_key k;
	__u64 w[2];
};

/* One event into the cube: the CPU's slots first, the overflow hash when none is
 * free for this key. Only this program writes the slots, each CPU its own, so they
 * need no atomics where the kernel keeps a raw-tracepoint program from re-entering on
 * a CPU (a skipped run is counted in recursion_misses: lost, and reported); where it
 * does not, an interrupt's allocation amid this update can lose one increment, as
 * with the per-CPU hash's plain increments before. The key is written before allocs,
 * which marks the slot in use for the reader. */
static __always_inline int pa_cube_add(union pa_key *key, __u32 order)
{
	struct page_alloc_val zero_val = {};
	struct page_alloc_val *v;
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 h;

	if (cpu < CUBE_CPUS) {
		h = (key->w[0] ^ (key->w[1] * 0x9e3779b97f4a7c15ULL)) * 0x9e3779b97f4a7c15ULL;
		h >>= 32;
#pragma unroll
		for (__u32 i = 0; i < CUBE_PROBES; i++) {
			__u32 idx = cpu * CUBE_SLOTS + ((h + i) & (CUBE_SLOTS - 1));
			struct page_alloc_slot *s = page_alloc_slots.lookup(&idx);
			union pa_key *sk;

			if (!s)
				break;
			sk = (union pa_key *)&s->key;
			if (s->val.allocs) {
				if (sk->w[0] != key->w[0] || sk->w[1] != key->w[1])
					continue;
				s->val.allocs++;
				s->val.pages += 1ULL << order;
				return 1;
			}
			sk->w[0] = key->w[0];
			sk->w[1] = key->w[1];
			asm volatile("" ::: "memory");	/* key before allocs */
			s->val.pages += 1ULL << order;
			s->val.allocs = 1;
			return 1;
		}
		pa_stat(PA_STAT_OVERFLOW);
	} else {
		pa_stat(PA_STAT_NO_REGION);
	}
	v = page_alloc.lookup_or_try_init(&key->k, &zero_val);
	if (!v) {
		count_drop(DROP_PAGE_ALLOC_CUBE_FULL);
		return 0;
	}
	v->allocs++;
	v->pages += 1ULL << order;
	return 1;
}

/*
 * The aggregate. flags: page->flags when the caller could read it directly (tp_btf),
 * else read here (raw_tp); only what the cube needs is computed: the pfn only for the
 * CMA ranges or the pfn-span zone source.
 */
static __always_inline int pa_count(void *ctx, __u64 page, __u32 order, __u64 gfp, int mt,
				    int direct)
{
	struct cmaprof_config *cfg = get_config();
	union pa_key key = {};
	__u64 pfn = (__u64)-1;
	__u64 page_nr = page;	/* the address as a number (page itself may be typed) */

	if (!cfg || !cfg->enabled)
		return 0;

	if (!page) {
		struct page_alloc_fail_key fk = {};
		struct page_alloc_val zero_val = {};
		struct page_alloc_val *v;

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

	if (direct && (ENABLE_BULK || cfg->nr_cma || cfg->zone_source != ZONE_SOURCE_PAGE_FLAGS))
		page_nr = pa_untyped(page);
#if ENABLE_BULK
	/* A page of the bulk allocator's __alloc_pages() fallback: counted here, not there. */
	bulk_note_alloc(page_nr, order);
#endif

	key.k.gfp_flags = gfp;
	key.k.order = order;
	key.k.migratetype_id = mt;
	if (cfg->nr_cma || cfg->zone_source != ZONE_SOURCE_PAGE_FLAGS)
		pfn = pa_page_to_pfn(cfg, page_nr);

	if (cfg->zone_source == ZONE_SOURCE_PAGE_FLAGS) {
		__u64 flags = 0;

		if (direct) {
			flags = *(volatile __u64 *)page;	/* BTF-typed: a checked load */
		} else if (bpf_probe_read_kernel(&flags, sizeof(flags), (void *)page)) {
			count_drop(DROP_PAGE_READ_FAILED);
			return 0;
		}
		key.k.zone_idx = (flags >> CM_ZONES_PGSHIFT) & CM_ZONES_MASK;
		key.k.node = (flags >> CM_NODES_PGSHIFT) & CM_NODES_MASK;
	} else if (span_lookup(cfg, pfn, &key.k.node, &key.k.zone_idx)) {
		count_drop(DROP_PFN_OUTSIDE_SPANS);
		return 0;
	}
	key.k.cma_area_idx = cfg->nr_cma ? cma_lookup(cfg, pfn) : CMA_AREA_NONE;
#if ENABLE_BLOCKERS
	if (key.k.cma_area_idx != CMA_AREA_NONE)
		blockers_note_alloc(pfn, key.k.cma_area_idx, order, gfp, mt);
#endif
#if PA_BY
	if (pa_cube_add(&key, order))
		pa_by_add(ctx, &key.k, order);
#else
	pa_cube_add(&key, order);
#endif
	return 0;
}

/* kmem:mm_page_alloc as a BTF-typed raw tracepoint (tp_btf): page is a typed pointer. */
int page_alloc_btf(unsigned long long *ctx)
{
	return pa_count(ctx, ctx[0], (__u32)ctx[1], (__u64)(gfp_t)ctx[2], (int)ctx[3], 1);
}

/* The same as a plain raw tracepoint, where tp_btf cannot load (no BTF, before v5.5). */
int page_alloc_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return pa_count(ctx, ctx->args[0], (__u32)ctx->args[1], (__u64)(gfp_t)ctx->args[2],
			(int)ctx->args[3], 0);
}
