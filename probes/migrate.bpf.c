// SPDX-License-Identifier: GPL-2.0
/*
 * migrate: migrate_pages() calls by (reason, mode): pages succeeded and failed,
 * THP counts, and time from mm_migrate_pages_start to mm_migrate_pages on the
 * same task. Inside a cma_alloc() call (cma.bpf.c compiled in the same module)
 * the pages are also added to that call's record.
 *
 * Tracepoints: migrate:mm_migrate_pages (fields by presence: thp_succeeded,
 * thp_failed, thp_split since ~v5.10, Anshuman Khandual "mm/vmstat: Add events
 * for THP migration without split"); migrate:mm_migrate_pages_start since v5.13
 * (Linux kernel commit 7bc1aec5e287); without it no durations.
 *
 * Both are classic tracepoints (the arguments of mm_migrate_pages changed with the
 * THP fields, so the format file, not TP_PROTO, says where they are), and both
 * programs always return 1: perf_trace_run_bpf_submit() (kernel/events/core.c)
 * passes the event on to perf only when every BPF program on the tracepoint returns
 * non-zero, so 0 would hide it from every perf user (perf stat -e
 * migrate:mm_migrate_pages counted 0 beside cmaprof). With no perf user on the CPU
 * it returns right after the program either way: returning 1 costs nothing then.
 */
#include <linux/migrate_mode.h>

#include "common.h"

#ifndef MAX_MIGRATE_KEYS
#define MAX_MIGRATE_KEYS 256
#endif

BPF_PERCPU_HASH(migrate_stats, struct migrate_key, struct migrate_val, MAX_MIGRATE_KEYS);
#if HAVE_MIGRATE_START
BPF_HASH(migrate_start_ns, __u64, __u64, 4096);

TRACEPOINT_PROBE(migrate, mm_migrate_pages_start)
{
	struct cmaprof_config *cfg = get_config();
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 now = bpf_ktime_get_ns();

	if (cfg && cfg->enabled)
		migrate_start_ns.update(&tid, &now);
	return 1;
}
#endif

TRACEPOINT_PROBE(migrate, mm_migrate_pages)
{
	struct cmaprof_config *cfg = get_config();
	struct migrate_key key = {};
	struct migrate_val init = {};
	struct migrate_val *v;

	if (!cfg || !cfg->enabled)
		return 1;
	key.reason = args->reason;
	key.mode = args->mode;
	v = migrate_stats.lookup_or_try_init(&key, &init);
	if (!v) {
		count_drop(DROP_MIGRATE_TABLE_FULL);
		return 1;
	}
	v->calls += 1;
	v->succeeded += args->succeeded;
	v->failed += args->failed;
#if HAVE_THP_FIELDS
	v->thp_succeeded += args->thp_succeeded;
	v->thp_failed += args->thp_failed;
	v->thp_split += args->thp_split;
#endif
#if HAVE_MIGRATE_START
	{
		__u64 tid = bpf_get_current_pid_tgid();
		__u64 *t0 = migrate_start_ns.lookup(&tid);

		if (t0) {
			v->duration_ns += bpf_ktime_get_ns() - *t0;
			v->timed_calls += 1;
			migrate_start_ns.delete(&tid);
		}
	}
#endif
#if ENABLE_CMA
	{
		struct cma_call *c = cma_current();

		if (c) {
			c->migrate_succeeded += args->succeeded;
			c->migrate_failed += args->failed;
		}
	}
#endif
	return 1;
}
