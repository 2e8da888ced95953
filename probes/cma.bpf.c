// SPDX-License-Identifier: GPL-2.0
/*
 * cma: every cma_alloc() call with its latency, outcome, busy retries, the pages
 * migrated and failed while it ran, and the first pfn that failed isolation; a
 * log2 latency histogram per (area, request size, outcome) in the kernel and one
 * record per call streamed through a ring buffer (rare events; a full buffer is
 * counted in drops[DROP_CMA_RINGBUF_FULL]). cma_release counted per area.
 *
 * Tracepoints, by presence (collectors/cma.py turns the format files into -D):
 *   cma:cma_alloc_start/finish/busy_retry, cma:cma_release (names on all events):
 *     since v5.13, Linux kernel commit 7bc1aec5e287 ("mm: cma: add trace events for
 *     CMA alloc perf testing") and 3aab8ae7aace ("mm: cma: add the CMA instance
 *     name to cma trace events"); HAVE_CMA_ERRORNO when cma_alloc_finish has
 *     `errorno` (Wenchao Hao, "cma:tracing: Print alloc result in
 *     trace_cma_alloc_finish", ~v6.3); CMA_START_COUNT is `count` or, from ~v6.18,
 *     `request_count`.
 *   cma:cma_alloc + cma:cma_release (v4.1..v5.12): no start event, so the start
 *     and the latency come from a kprobe on cma_alloc() (HAVE_KPROBE_CMA_ALLOC).
 *   migrate:mm_migrate_pages, page_isolation:test_pages_isolated (same task).
 * With HAVE_KPROBE_CMA_ALLOC the call is bracketed by kprobe/kretprobe on the
 * allocator's common path (cma_call_entry below), which also
 * sees the early returns that fire no finish event (6.1: a request larger than the
 * area fires start but no finish); otherwise by the start/finish tracepoints.
 *
 * Phases (CMA_PHASE_* of events.h): kprobe/kretprobe pairs on the functions a call
 * goes through (cma_phase_enter_NAME / cma_phase_exit_NAME, attached by
 * collectors/cma.py to the symbols this kernel has). Only the task of a call in flight
 * counts: it keeps a stack of the phase functions it is in (struct cma_phase_stack);
 * a return pops its frame and adds the frame's self time (its time less that of the
 * frames nested in it) to the phase, and the time at depth 0 goes to
 * CMA_PHASE_UNATTRIBUTED, so the phases of a call add up to its latency exactly.
 */
#include "common.h"
#include <linux/sched.h>	/* task_struct: a fatal signal pending at return */

#ifndef MAX_CMA_INFLIGHT
#define MAX_CMA_INFLIGHT 1024
#endif
#ifndef CMA_RINGBUF_PAGES
#define CMA_RINGBUF_PAGES 64
#endif

BPF_HASH(cma_inflight, __u64, struct cma_call, MAX_CMA_INFLIGHT);
BPF_HISTOGRAM(cma_latency, struct cma_hist_key, 4096);
BPF_RINGBUF_OUTPUT(cma_events, CMA_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(cma_release_pages, __u64, MAX_CMA_AREAS + 1);
BPF_PERCPU_ARRAY(cma_release_calls, __u64, MAX_CMA_AREAS + 1);

/* Frames a task can have open at once (the deepest path seen: contig > isolate >
 * migrate_range > migrate, 4); a power of two, indexes are masked with it. */
#define CMA_PHASE_DEPTH 8
/* Per-phase slots of the stack: CMA_NR_PHASES rounded up to a power of two, so that
 * an index is made safe by a mask (6.1's verifier loses the bounds of a compare). */
#define CMA_PHASE_SLOTS 16
#define PH(p) ((p) & (CMA_PHASE_SLOTS - 1))
#if CMA_NR_PHASES > CMA_PHASE_SLOTS
#error "CMA_PHASE_SLOTS must hold every CMA_PHASE_*"
#endif

/* Where the task of one call in flight is (BPF-only: Python reads the event). */
struct cma_phase_stack {
	__u64 mark_ns;			/* when the task last came back to depth 0 */
	__u64 start_ns[CMA_PHASE_DEPTH];
	__u64 child_ns[CMA_PHASE_DEPTH];	/* time of the frames nested in this one */
	__u64 ns[CMA_PHASE_SLOTS];
	__u64 failed_ns[CMA_PHASE_SLOTS];
	__u64 attempt_ns[CMA_PHASE_SLOTS];	/* in the alloc_contig_range() attempt open */
	__u32 entries[CMA_PHASE_SLOTS];
	__u32 lost[CMA_PHASE_SLOTS];
	__u32 depth;
	__u32 overflow;			/* entries beyond CMA_PHASE_DEPTH, not framed */
	__u32 attempts_open;		/* CMA_PHASE_CONTIG frames on the stack */
	__u8 phase[CMA_PHASE_DEPTH];
};

BPF_HASH(cma_stacks, __u64, struct cma_phase_stack, MAX_CMA_INFLIGHT);
BPF_ARRAY(cma_stack_zero, struct cma_phase_stack, 1);	/* never written: all zero */

/* floor(log2(v)) without loops (as bcc's tools do) */
static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 hi = v >> 32;

	return hi ? log2_u32(hi) + 32 : log2_u32((__u32)v);
}

static __always_inline void cma_stack_open(__u64 tid, __u64 now)
{
	__u32 zero = 0;
	struct cma_phase_stack *z = cma_stack_zero.lookup(&zero);
	struct cma_phase_stack *s;

	if (!z)
		return;
	cma_stacks.update(&tid, z);
	s = cma_stacks.lookup(&tid);
	if (s)
		s->mark_ns = now;
}

/* Pop the top frame at `now`: its self time to its phase (and to the attempt open). */
static __always_inline void cma_frame_pop(struct cma_phase_stack *s, __u64 now)
{
	__u32 d = s->depth;
	__u64 dur, self;
	__u8 p;

	if (d == 0 || d > CMA_PHASE_DEPTH)
		return;
	d = (d - 1) & (CMA_PHASE_DEPTH - 1);
	p = s->phase[d];
	dur = now - s->start_ns[d];
	self = dur - s->child_ns[d];
	s->ns[PH(p)] += self;
	if (s->attempts_open)
		s->attempt_ns[PH(p)] += self;
	if (p == CMA_PHASE_CONTIG && s->attempts_open)
		s->attempts_open--;
	if (d > 0)
		s->child_ns[(d - 1) & (CMA_PHASE_DEPTH - 1)] += dur;
	else
		s->mark_ns = now;
	s->depth = d;
}

/* The attempt that just returned: its phases' time counts as failed when it failed. */
static __always_inline void cma_attempt_close(struct cma_phase_stack *s, int failed)
{
	if (s->attempts_open)
		return;	/* a nested attempt (none in the kernels we know) */
#pragma unroll
	for (int i = 0; i < CMA_NR_PHASES; i++) {
		if (failed)
			s->failed_ns[i] += s->attempt_ns[i];
		s->attempt_ns[i] = 0;
	}
}

static __always_inline void cma_phase_enter(__u8 phase)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct cma_phase_stack *s = cma_stacks.lookup(&tid);
	__u64 now;
	__u32 d;

	if (!s)
		return;
	now = bpf_ktime_get_ns();
	d = s->depth;
	if (d >= CMA_PHASE_DEPTH) {
		s->overflow++;
		s->lost[PH(phase)]++;
		return;
	}
	if (d == 0)
		s->ns[CMA_PHASE_UNATTRIBUTED] += now - s->mark_ns;
	d &= CMA_PHASE_DEPTH - 1;
	s->phase[d] = phase;
	s->start_ns[d] = now;
	s->child_ns[d] = 0;
	s->depth = d + 1;
	s->entries[PH(phase)]++;
	if (phase == CMA_PHASE_CONTIG)
		s->attempts_open++;
}

/*
 * The return of a phase function: pop its frame. A frame above it (a return that was
 * not seen: kretprobe instances exhausted) is closed now and counted lost; a return
 * with no frame of its phase (its entry was not framed) only counts lost.
 */
static __always_inline void cma_phase_exit(__u8 phase, int failed)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct cma_phase_stack *s = cma_stacks.lookup(&tid);
	__u64 now;
	__u32 found = 0;

	if (!s)
		return;
	now = bpf_ktime_get_ns();
	if (s->overflow) {	/* the deepest entries were the ones not framed */
		s->overflow--;
		return;
	}
#pragma unroll
	for (__u32 i = 0; i < CMA_PHASE_DEPTH; i++) {
		if (i < s->depth && s->phase[(s->depth - 1 - i) & (CMA_PHASE_DEPTH - 1)] == phase) {
			found = i + 1;
			break;
		}
	}
	if (!found) {
		s->lost[PH(phase)]++;
		return;
	}
#pragma unroll
	for (__u32 i = 0; i < CMA_PHASE_DEPTH; i++) {
		if (i + 1 >= found)
			break;
		__u8 p = s->phase[(s->depth - 1) & (CMA_PHASE_DEPTH - 1)];

		s->lost[PH(p)]++;
		cma_frame_pop(s, now);
	}
	cma_frame_pop(s, now);
	if (phase == CMA_PHASE_CONTIG)
		cma_attempt_close(s, failed);
}

/* The call returns at `now`: close what is open, the time since the last frame to
 * unattributed. The caller copies the phases into its event, then deletes the entry. */
static __always_inline struct cma_phase_stack *cma_stack_close(__u64 tid, __u64 now)
{
	struct cma_phase_stack *s = cma_stacks.lookup(&tid);

	if (!s)
		return 0;
#pragma unroll
	for (__u32 i = 0; i < CMA_PHASE_DEPTH; i++) {
		if (s->depth == 0)
			break;
		__u8 p = s->phase[(s->depth - 1) & (CMA_PHASE_DEPTH - 1)];

		s->lost[PH(p)]++;
		cma_frame_pop(s, now);
	}
	s->ns[CMA_PHASE_UNATTRIBUTED] += now - s->mark_ns;
	return s;
}

static __always_inline struct cma_call *cma_begin(__u64 count, __u32 align, __u64 base_pfn)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct cma_call c = {};

	c.start_ns = bpf_ktime_get_ns();
	c.count = count;
	c.align = align;
	c.base_pfn = base_pfn;
	c.pfn = (__u64)-1;
	c.first_busy_pfn = (__u64)-1;
	c.last_retry_pfn = (__u64)-1;
	if (cma_inflight.update(&tid, &c)) {
		count_drop(DROP_CMA_INFLIGHT_FULL);
		return 0;
	}
	cma_stack_open(tid, c.start_ns);
	return cma_inflight.lookup(&tid);
}

static __always_inline void cma_end(struct cmaprof_config *cfg, struct cma_call *c,
				    __u8 source, __u8 success)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct cma_hist_key hk = {};
	struct cma_event *e;
	struct cma_phase_stack *s;
	__u64 now = bpf_ktime_get_ns();
	__u64 lat = now - c->start_ns;
	__u64 where = c->base_pfn != (__u64)-1 ? c->base_pfn : c->pfn;
	__u8 area = where != (__u64)-1 ? cma_lookup(cfg, where) : CMA_AREA_NONE;

	hk.area = area;
	hk.size_log2 = log2_u64(c->count);
	hk.success = success;
	hk.slot = log2_u64(lat);
	cma_latency.increment(hk);

	s = cma_stack_close(tid, now);
	e = cma_events.ringbuf_reserve(sizeof(*e));
	if (!e) {
		count_drop(DROP_CMA_RINGBUF_FULL);
	} else {
#pragma unroll
		for (int i = 0; i < CMA_NR_PHASES; i++) {	/* no stack: all zero */
			e->phase_ns[i] = s ? s->ns[i] : 0;
			e->phase_failed_ns[i] = s ? s->failed_ns[i] : 0;
			e->phase_entries[i] = s ? s->entries[i] : 0;
			e->phase_lost[i] = s ? s->lost[i] : 0;
		}
		__builtin_memcpy(e, c, sizeof(*c));	/* same leading fields */
		e->latency_ns = lat;
		e->pid = (__u32)tid;
		e->tgid = tid >> 32;
		e->outcome_source = source;
		e->success = success;
		e->area = area;
		bpf_get_current_comm(&e->comm, sizeof(e->comm));
		cma_events.ringbuf_submit(e, 0);
	}
	if (s)
		cma_stacks.delete(&tid);
	cma_inflight.delete(&tid);
}

static __always_inline struct cma_call *cma_current(void)
{
	__u64 tid = bpf_get_current_pid_tgid();

	return cma_inflight.lookup(&tid);
}

#if HAVE_KPROBE_CMA_ALLOC
/*
 * Entry and return of the allocator's common path, attached by collectors/cma.py to the
 * first of features.CMA_CALL_SYMBOLS the kernel has: __cma_alloc_frozen() (7.x: the
 * frozen-page API, which hugetlb calls through cma_alloc_frozen_compound() without
 * passing cma_alloc()), __cma_alloc() (v6.11..6.x: shared by cma_alloc() and
 * cma_alloc_folio()), else cma_alloc(). All take (struct cma *, unsigned long count,
 * unsigned int align, ...) and return the first struct page * or NULL.
 */
int cma_call_entry(struct pt_regs *ctx, void *cma, unsigned long count, unsigned int align)
{
	struct cmaprof_config *cfg = get_config();
	__u64 base_pfn = (__u64)-1;

	if (!cfg || !cfg->enabled)
		return 0;
	/* struct cma (mm/cma.h) starts with `unsigned long base_pfn` in every kernel */
	bpf_probe_read_kernel(&base_pfn, sizeof(base_pfn), cma);
	cma_begin(count, align, base_pfn);
	return 0;
}

/* fatal_signal_pending(current): SIGKILL in the task's own pending set (complete_signal()
 * adds it to every thread of a group that is being killed) */
static __always_inline int fatal_signal_now(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	unsigned long sig0 = 0;

	bpf_probe_read_kernel(&sig0, sizeof(sig0), &t->pending.signal.sig[0]);
	return (sig0 >> (SIGKILL - 1)) & 1;
}

int cma_call_return(struct pt_regs *ctx)
{
	struct cmaprof_config *cfg = get_config();
	struct cma_call *c = cma_current();
	__u64 page = PT_REGS_RC(ctx);

	if (!cfg || !c)
		return 0;
	c->page_ok = page != 0;
	if (page && c->pfn == (__u64)-1)
		c->pfn = page_to_pfn_cal(cfg, page);
#if HAVE_CMA_ERRORNO
	if (c->have_finish) {
		cma_end(cfg, c, CMA_OUTCOME_ERRORNO, c->err == 0 && page);
		return 0;
	}
#endif
	if (!page && fatal_signal_now()) {
		/* no errorno on this kernel: a failed call with SIGKILL pending ended in
		 * __alloc_contig_migrate_range()'s fatal_signal_pending() check: -EINTR
		 * (mm/page_alloc.c on 6.1; the finish event's errorno says so itself
		 * where it exists) */
		c->err = -EINTR;
		cma_end(cfg, c, CMA_OUTCOME_FATAL_SIGNAL, 0);
		return 0;
	}
	cma_end(cfg, c, CMA_OUTCOME_RETVAL, page != 0);
	return 0;
}
#endif

/*
 * The phase programs: one entry/return pair per phase, attached by collectors/cma.py
 * (PHASE_SYMBOLS) to each function of that phase the kernel has; the names follow the
 * CMA_PHASE_* vocabulary. (Map calls stay in the functions above: BCC rewrites them
 * only outside macros.)
 */
#define CMA_PHASE_PROGRAMS(name, id)					\
int cma_phase_enter_##name(struct pt_regs *ctx)			\
{									\
	cma_phase_enter(id);						\
	return 0;							\
}									\
int cma_phase_exit_##name(struct pt_regs *ctx)				\
{									\
	cma_phase_exit(id, 0);						\
	return 0;							\
}

CMA_PHASE_PROGRAMS(search, CMA_PHASE_SEARCH)
CMA_PHASE_PROGRAMS(isolate, CMA_PHASE_ISOLATE)
CMA_PHASE_PROGRAMS(drain, CMA_PHASE_DRAIN)
CMA_PHASE_PROGRAMS(migrate_range, CMA_PHASE_MIGRATE_RANGE)
CMA_PHASE_PROGRAMS(collect, CMA_PHASE_COLLECT)
CMA_PHASE_PROGRAMS(reclaim, CMA_PHASE_RECLAIM)
CMA_PHASE_PROGRAMS(migrate, CMA_PHASE_MIGRATE)
CMA_PHASE_PROGRAMS(test, CMA_PHASE_TEST)
CMA_PHASE_PROGRAMS(take, CMA_PHASE_TAKE)
CMA_PHASE_PROGRAMS(undo, CMA_PHASE_UNDO)
CMA_PHASE_PROGRAMS(sleep, CMA_PHASE_SLEEP)

/* alloc_contig_range() is one attempt: its return value says whether it failed. */
int cma_phase_enter_contig(struct pt_regs *ctx)
{
	cma_phase_enter(CMA_PHASE_CONTIG);
	return 0;
}

int cma_phase_exit_contig(struct pt_regs *ctx)
{
	cma_phase_exit(CMA_PHASE_CONTIG, (int)PT_REGS_RC(ctx) != 0);
	return 0;
}

/*
 * Every TRACEPOINT_PROBE returns 1: for a classic tracepoint with a BPF program the
 * kernel's perf_trace_run_bpf_submit() (kernel/events/core.c) hands the event on to
 * perf only when the program returns non-zero; 0 would hide it from every perf user.
 */
#if HAVE_CMA_START
TRACEPOINT_PROBE(cma, cma_alloc_start)
{
	struct cmaprof_config *cfg = get_config();
	struct cma_call *c;

	if (!cfg || !cfg->enabled)
		return 1;
#if HAVE_KPROBE_CMA_ALLOC
	c = cma_current();
#else
	c = cma_current();
	if (c) /* the previous call on this task never finished (6.1: request > area) */
		cma_end(cfg, c, CMA_OUTCOME_NO_FINISH, 0);
	c = cma_begin(args->CMA_START_COUNT, args->align, (__u64)-1);
#endif
	if (c)
		TP_DATA_LOC_READ_STR(c->name, name, sizeof(c->name));
	return 1;
}
#endif

#if HAVE_CMA_FINISH
TRACEPOINT_PROBE(cma, cma_alloc_finish)
{
	struct cmaprof_config *cfg = get_config();
	struct cma_call *c = cma_current();

	if (!cfg || !c)
		return 1;
	c->pfn = args->pfn;
	c->page_ok = args->page != 0;
	c->have_finish = 1;
#if HAVE_CMA_ERRORNO
	c->err = args->errorno;
#endif
#if !HAVE_KPROBE_CMA_ALLOC
#if HAVE_CMA_ERRORNO
	cma_end(cfg, c, CMA_OUTCOME_ERRORNO, args->errorno == 0 && args->page != 0);
#else
	cma_end(cfg, c, CMA_OUTCOME_PAGE, args->page != 0);
#endif
#endif
	return 1;
}
#endif

#if HAVE_CMA_BUSY_RETRY
TRACEPOINT_PROBE(cma, cma_alloc_busy_retry)
{
	struct cma_call *c = cma_current();

	if (c) {
		c->busy_retries++;
		c->last_retry_pfn = args->pfn;
	}
	return 1;
}
#endif

#if HAVE_OLD_CMA_ALLOC
/* v4.1..v5.12: one event after the retry loop; page NULL means failure. */
TRACEPOINT_PROBE(cma, cma_alloc)
{
	struct cma_call *c = cma_current();

	if (c) {
		c->pfn = args->pfn;
		c->page_ok = args->page != 0;
		c->have_finish = 1;
	}
	return 1;
}
#endif

#if HAVE_TEST_PAGES_ISOLATED
TRACEPOINT_PROBE(page_isolation, test_pages_isolated)
{
	struct cma_call *c = cma_current();

	if (!c)
		return 1;
	c->isolate_tests++;
	if (args->fin_pfn < args->end_pfn) {
		c->isolate_failures++;
		if (c->first_busy_pfn == (__u64)-1)
			c->first_busy_pfn = args->fin_pfn;
	}
	return 1;
}
#endif

#if HAVE_CMA_RELEASE
TRACEPOINT_PROBE(cma, cma_release)
{
	struct cmaprof_config *cfg = get_config();
	__u32 idx;
	__u64 *v;

	if (!cfg || !cfg->enabled)
		return 1;
	idx = cma_lookup(cfg, args->pfn);
	if (idx == CMA_AREA_NONE)
		idx = MAX_CMA_AREAS;
	v = cma_release_pages.lookup(&idx);
	if (v)
		*v += args->count;
	v = cma_release_calls.lookup(&idx);
	if (v)
		*v += 1;
	return 1;
}
#endif
