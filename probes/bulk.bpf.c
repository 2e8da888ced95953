// SPDX-License-Identifier: GPL-2.0
/*
 * bulk: pages that the bulk allocator's fast path takes from the per-CPU lists,
 * per (node, zone): the kernel counts them in /proc/vmstat pgalloc_<zone> but fires
 * no kmem:mm_page_alloc for them, so without this probe page_alloc falls short of
 * pgalloc_* by exactly these pages (vmalloc, page_pool, sunrpc, xfs/btrfs buffers).
 *
 * Functions, by kallsyms presence (collectors/features.py; no tracepoint exists, so
 * kprobe + kretprobe, attached by collectors/bulk.py to the symbol found):
 *   __alloc_pages_bulk(gfp, preferred_nid, nodemask, nr_pages, page_list, page_array)
 *     v5.13 .. v6.9; BULK_HAS_LIST=1.
 *   alloc_pages_bulk_noprof(gfp, preferred_nid, nodemask, nr_pages, page_list,
 *     page_array): v6.10 .. v6.13 (renamed for memory allocation profiling);
 *     BULK_HAS_LIST=1, told apart from v6.14+ by alloc_pages_bulk_array_mempolicy_noprof
 *     in kallsyms (a NUMA-only function: a !CONFIG_NUMA 6.10..6.13 kernel is taken for
 *     6.14+).
 *   alloc_pages_bulk_noprof(gfp, preferred_nid, nodemask, nr_pages, page_array):
 *     v6.14 and later, Linux kernel commits c8b979530f27 ("mm: alloc_pages_bulk_noprof:
 *     drop page_list argument") and 6bf9b5b40af3 ("mm: alloc_pages_bulk: rename API",
 *     alloc_pages_bulk_array_mempolicy_noprof -> alloc_pages_bulk_mempolicy_noprof);
 *     BULK_HAS_LIST=0.
 * Kernels without CONFIG_KPROBES (no tracefs kprobe_events) cannot run this probe.
 * Arguments come from PT_REGS_PARMn; tested on x86-64 (6.1 guest).
 *
 * How: the entry program counts the array's non-NULL slots in [0, nr_pages) and
 * notes the first NULL one; the return program counts again: the difference is the
 * pages this call placed (list API: the return value, the pages added to the list).
 * They are attributed to the zone and node of the first new page (one call takes all
 * its pcp pages from one zone; PGALLOC is counted for that zone). When the pcp lists
 * cannot serve the first page, or one page is asked for, the call falls back to
 * __alloc_pages() for a single page, which fires mm_page_alloc and counts PGALLOC on
 * its own: page_alloc_raw() passes every order-0 page allocated while a bulk call of
 * the same task is in flight to bulk_note_alloc(), and a call whose first new page is
 * one of those counts one page less.
 *
 * Calls in flight are kept per task (per CPU for the idle tasks) in a stack of
 * BULK_DEPTH frames, as interrupts may nest bulk calls. A frame is identified by the
 * stack pointer at entry, which the return sees BULK_RET_SP_DELTA higher (x86-64: the
 * return address popped), so a skipped entry or return program (another BPF program
 * running on the CPU, kretprobe maxactive exhausted) costs that call only, counted in
 * bulk_stats and drops[DROP_BULK_LOST], and never shifts the other frames.
 *
 * Counts only while config.enabled, in the zone source the collector chose
 * (page->flags, or the pfn-span map). Order-0 pages only (the API has no order).
 *
 * Options (-D): BULK_HAS_LIST, BULK_MAX_SCAN (array slots read per call, a multiple
 * of 64), BULK_MAX_KEYS, BULK_MAX_TASKS, BULK_RET_SP_DELTA.
 */
#include "common.h"

#ifndef BULK_HAS_LIST
#define BULK_HAS_LIST 0
#endif
#ifndef BULK_MAX_SCAN
#define BULK_MAX_SCAN 512
#endif
#ifndef BULK_MAX_KEYS
#define BULK_MAX_KEYS 256
#endif
#ifndef BULK_MAX_TASKS
#define BULK_MAX_TASKS 4096
#endif
#ifndef BULK_RET_SP_DELTA
#define BULK_RET_SP_DELTA 8
#endif
#define BULK_CHUNK 64
#if BULK_MAX_SCAN % BULK_CHUNK
#error "BULK_MAX_SCAN must be a multiple of 64"
#endif
#define BULK_DEPTH 4		/* power of two */
#define BULK_NTP 4		/* power of two */
#define BULK_NO_NULL (1 << 30)

struct bulk_slot {
	__u64 sp;		/* stack pointer at entry: the frame's identity */
	__u64 arr;		/* struct page ** */
	__u64 list;		/* struct list_head * (BULK_HAS_LIST) */
	__u64 tp[BULK_NTP];	/* last order-0 pages mm_page_alloc gave this task */
	__s32 nr;
	__s32 pre;		/* non-NULL slots at entry */
	__s32 first_null;	/* first NULL slot at entry, -1: none seen */
	__u32 ntp;
	__u32 counting;		/* config.enabled at entry and scanned */
	__u32 pad;
};

struct bulk_stack {
	__u32 top;		/* ring index of the innermost frame */
	__u32 n;		/* live frames, <= BULK_DEPTH */
	struct bulk_slot s[BULK_DEPTH];
};

struct bulk_chunk {
	__u64 p[BULK_CHUNK];
};

BPF_HASH(bulk_active, __u64, struct bulk_stack, BULK_MAX_TASKS);
BPF_PERCPU_ARRAY(bulk_zero, struct bulk_stack, 1);	/* never written: template */
BPF_PERCPU_ARRAY(bulk_scratch, struct bulk_chunk, 1);
BPF_ARRAY(bulk_inflight, __s64, 1);	/* live frames, all tasks: gates bulk_note_alloc */
BPF_PERCPU_HASH(bulk_pages, struct bulk_key, struct bulk_val, BULK_MAX_KEYS);
BPF_PERCPU_ARRAY(bulk_stats, __u64, BULK_NR_STATS);

static __always_inline void bulk_stat(__u32 i, __u64 v)
{
	__u64 *p = bulk_stats.lookup(&i);

	if (p)
		*p += v;
}

static __always_inline void bulk_inflight_add(__s64 v)
{
	__u32 zero = 0;
	__s64 *p = bulk_inflight.lookup(&zero);

	if (p)
		__sync_fetch_and_add(p, v);
}

static __always_inline __u64 bulk_task_key(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	if (!tid)		/* the idle tasks all have pid 0 */
		return (1ULL << 32) | bpf_get_smp_processor_id();
	return tid;
}

/*
 * Non-NULL entries of arr[0, nr) (at most BULK_MAX_SCAN read) and the first NULL
 * index (-1: none), or -1 when the array cannot be read. Reads exactly the slots
 * asked for (an array may end at a vmalloc guard page). The inner loop stays a loop
 * (unrolled, its 64 loads are hoisted and spill past the 512-byte stack) and is
 * branch-free, as BPF has no conditional move: the empty asm statements keep clang
 * from turning the arithmetic back into jumps, which the verifier would walk apart.
 */
#define BULK_OPAQUE(x) asm volatile("" : "+r"(x))
static __always_inline int bulk_scan(__u64 arr, int nr, int *first_null)
{
	__u32 zero = 0;
	struct bulk_chunk *c = bulk_scratch.lookup(&zero);
	__s64 cnt = 0, fn = BULK_NO_NULL;

	if (!c)
		return -1;
	for (int base = 0; base < BULK_MAX_SCAN; base += BULK_CHUNK) {
		if (base >= nr)
			break;
		__u64 sz = (__u64)(nr - base) * sizeof(__u64);

		if (sz > sizeof(*c))
			sz = sizeof(*c);
		BULK_OPAQUE(sz);
		if (sz > sizeof(*c))	/* never true: the bound, where the verifier sees it */
			return -1;
		if (bpf_probe_read_kernel(c, sz, (void *)(arr + base * 8)))
			return -1;
#pragma nounroll
		for (int j = 0; j < BULK_CHUNK; j++) {
			__u64 p = c->p[j];
			__s64 idx = base + j;
			__s64 d = idx - nr;
			BULK_OPAQUE(d);
			__s64 inr = (__u64)d >> 63;		/* idx < nr */
			__u64 t = p | (0 - p);
			BULK_OPAQUE(t);
			__s64 nz = t >> 63;			/* p != NULL */
			cnt += nz & inr;
			__s64 isnull = (1 - nz) & inr;
			__s64 cand = idx + (1 - isnull) * BULK_NO_NULL;
			__s64 m = cand - fn;
			BULK_OPAQUE(m);
			fn = fn + (m & (m >> 63));		/* min(fn, cand) */
		}
	}
	if (first_null)
		*first_null = fn >= BULK_NO_NULL ? -1 : (int)fn;
	return (int)cnt;
}

/* 1 + depth below the top of the frame entered at sp, 0 when no live frame has it. */
static __always_inline __u32 bulk_find(struct bulk_stack *st, __u64 sp)
{
	__u32 n = st->n, top = st->top;

#pragma unroll
	for (__u32 k = 0; k < BULK_DEPTH; k++) {
		if (k >= n)
			break;
		if (st->s[(top - k) & (BULK_DEPTH - 1)].sp == sp)
			return k + 1;
	}
	return 0;
}

/* Frames whose return program never ran: their pages are lost. */
static __always_inline void bulk_stale(__u32 k, int enabled)
{
	if (!k)
		return;
	bulk_stat(BULK_STAT_STALE_ENTRIES, k);
	if (enabled)
		count_drop(DROP_BULK_LOST);
}

static __always_inline void bulk_lost(__u32 stat)
{
	bulk_stat(stat, 1);
	count_drop(DROP_BULK_LOST);
}

int bulk_entry(struct pt_regs *ctx)
{
	struct cmaprof_config *cfg = get_config();
	int enabled = cfg && cfg->enabled;
	__u64 key = bulk_task_key();
	__u64 sp = PT_REGS_SP(ctx);
	int nr = (int)PT_REGS_PARM4(ctx);
#if BULK_HAS_LIST
	__u64 list = PT_REGS_PARM5(ctx);
	__u64 arr = PT_REGS_PARM6(ctx);
#else
	__u64 list = 0;
	__u64 arr = PT_REGS_PARM5(ctx);
#endif
	struct bulk_stack *st;
	struct bulk_slot *s;
	__u32 zero = 0, k, top;

	bulk_stat(BULK_STAT_ENTRIES, 1);
	st = bulk_active.lookup(&key);
	if (!st) {
		struct bulk_stack *z = bulk_zero.lookup(&zero);

		if (!z)
			return 0;
		bulk_active.insert(&key, z);
		st = bulk_active.lookup(&key);
		if (!st) {
			if (enabled)
				bulk_lost(BULK_STAT_NO_TASK_SLOT);
			return 0;
		}
	}
	/* A live frame never shares its stack address with a new call: stale ones do. */
	k = bulk_find(st, sp);
	if (k) {
		bulk_stale(k, enabled);
		st->n -= k;
		st->top = (st->top - k) & (BULK_DEPTH - 1);
		bulk_inflight_add(-(__s64)k);
	}
	if (st->n >= BULK_DEPTH) {
		bulk_stale(1, enabled);	/* the outermost frame is overwritten */
	} else {
		st->n++;
		bulk_inflight_add(1);
	}
	top = (st->top + 1) & (BULK_DEPTH - 1);
	st->top = top;
	s = &st->s[top];
	__builtin_memset(s, 0, sizeof(*s));
	s->sp = sp;
	s->arr = arr;
	s->list = list;
	s->nr = nr;
	s->first_null = -1;
	if (!enabled || nr <= 0)
		return 0;
	if (arr) {
		int fn = -1;
		int pre = bulk_scan(arr, nr, &fn);

		if (pre < 0) {
			bulk_lost(BULK_STAT_READ_FAILURES);
			return 0;
		}
		s->pre = pre;
		s->first_null = fn;
		if (pre)
			bulk_stat(BULK_STAT_PREPOPULATED_CALLS, 1);
		if (nr > BULK_MAX_SCAN)	/* pages placed beyond are missed */
			bulk_lost(BULK_STAT_SCAN_OVERFLOW_CALLS);
	}
	s->counting = 1;
	return 0;
}

/* Node and zone of a struct page *, from the zone source the collector chose. */
static __always_inline int bulk_page_zone(struct cmaprof_config *cfg, __u64 page,
					  struct bulk_key *bk)
{
	if (cfg->zone_source == ZONE_SOURCE_PAGE_FLAGS) {
		__u64 flags = 0;

		if (bpf_probe_read_kernel(&flags, sizeof(flags), (void *)page)) {
			bulk_lost(BULK_STAT_READ_FAILURES);
			return -1;
		}
		bk->zone_idx = (flags >> CM_ZONES_PGSHIFT) & CM_ZONES_MASK;
		bk->node = (flags >> CM_NODES_PGSHIFT) & CM_NODES_MASK;
		return 0;
	}
	if (span_lookup(cfg, page_to_pfn_cal(cfg, page), &bk->node, &bk->zone_idx)) {
		bulk_lost(BULK_STAT_NO_SPAN);
		return -1;
	}
	return 0;
}

int bulk_return(struct pt_regs *ctx)
{
	struct cmaprof_config *cfg = get_config();
	int enabled = cfg && cfg->enabled;
	__u64 key = bulk_task_key();
	__u64 sp = PT_REGS_SP(ctx) - BULK_RET_SP_DELTA;
	struct bulk_stack *st = bulk_active.lookup(&key);
	struct bulk_slot *s;
	struct bulk_key bk = {};
	struct bulk_val *v;
	__u64 tp[BULK_NTP];
	__u64 arr, list, newp = 0;
	__s64 nnew = 0;
	__u32 k, ntp, counting;
	int nr, pre, first_null;

	k = st ? bulk_find(st, sp) : 0;
	if (!k) {
		if (enabled)
			bulk_lost(BULK_STAT_UNMATCHED_RETURNS);
		return 0;
	}
	bulk_stale(k - 1, enabled);
	s = &st->s[(st->top - (k - 1)) & (BULK_DEPTH - 1)];
	arr = s->arr;
	list = s->list;
	nr = s->nr;
	pre = s->pre;
	first_null = s->first_null;
	ntp = s->ntp;
	counting = s->counting;
#pragma unroll
	for (int j = 0; j < BULK_NTP; j++)
		tp[j] = s->tp[j];
	st->n -= k;
	st->top = (st->top - k) & (BULK_DEPTH - 1);
	bulk_inflight_add(-(__s64)k);
	if (!st->n)
		bulk_active.delete(&key);

	if (!counting || !enabled)
		return 0;
	bulk_stat(BULK_STAT_CALLS, 1);
	if (arr) {
		int post = bulk_scan(arr, nr, 0);

		if (post < 0) {
			bulk_lost(BULK_STAT_READ_FAILURES);
			return 0;
		}
		nnew = post - pre;
		if (nnew < 0) {
			bulk_stat(BULK_STAT_NEGATIVE_CALLS, 1);
			return 0;
		}
		if (nnew > 0 && first_null >= 0 &&
		    bpf_probe_read_kernel(&newp, sizeof(newp),
					  (void *)(arr + (__u64)first_null * 8))) {
			bulk_lost(BULK_STAT_READ_FAILURES);
			return 0;
		}
	} else if (list) {
		__u64 first = 0;

		bulk_stat(BULK_STAT_LIST_CALLS, 1);
		nnew = (__s64)PT_REGS_RC(ctx);
		if (nnew > 0) {
			/* list_add() puts each page at the head: list->next is the last one. */
			if (bpf_probe_read_kernel(&first, sizeof(first), (void *)list)) {
				bulk_lost(BULK_STAT_READ_FAILURES);
				return 0;
			}
			newp = first - offsetof(struct page, lru);
		}
	}
	if (nnew <= 0)
		return 0;
	if (!newp) {
		bulk_lost(BULK_STAT_READ_FAILURES);
		return 0;
	}
#pragma unroll
	for (__u32 j = 0; j < BULK_NTP; j++) {
		if (j < ntp && tp[j] == newp) {
			/* The __alloc_pages() fallback: traced and counted by page_alloc. */
			bulk_stat(BULK_STAT_FALLBACK_CALLS, 1);
			nnew -= 1;
			break;
		}
	}
	if (nnew <= 0)
		return 0;
	if (bulk_page_zone(cfg, newp, &bk))
		return 0;
	v = bulk_pages.lookup(&bk);
	if (!v) {
		struct bulk_val init = {};

		bulk_pages.insert(&bk, &init);
		v = bulk_pages.lookup(&bk);
		if (!v) {
			count_drop(DROP_BULK_TABLE_FULL);
			return 0;
		}
	}
	v->calls++;
	v->pages += nnew;
	bulk_stat(BULK_STAT_COUNTED_CALLS, 1);
	bulk_stat(BULK_STAT_PAGES, nnew);
	return 0;
}

/*
 * Called by page_alloc_raw() (page_alloc.bpf.c) for each page it counts: remember the
 * order-0 pages given to a task while one of its bulk calls is in flight.
 */
static __always_inline void bulk_note_alloc(__u64 page, __u32 order)
{
	__u32 zero = 0;
	__s64 *inflight;
	struct bulk_stack *st;
	struct bulk_slot *s;
	__u64 key;

	if (order)
		return;
	inflight = bulk_inflight.lookup(&zero);
	if (!inflight || !*inflight)
		return;
	key = bulk_task_key();
	st = bulk_active.lookup(&key);
	if (!st || !st->n)
		return;
	s = &st->s[st->top & (BULK_DEPTH - 1)];
	s->tp[s->ntp & (BULK_NTP - 1)] = page;
	s->ntp++;
}
