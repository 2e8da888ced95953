// SPDX-License-Identifier: GPL-2.0
/*
 * blockers: the pages that make a cma_alloc() range busy, read from struct page at
 * the moment of failure and classified in the kernel, each with the allocation
 * that last placed it in the CMA area ("who put it there").
 *
 * Where the blocking page is known (6.1 mm/page_alloc.c alloc_contig_range(),
 * mm/page_isolation.c, mm/migrate.c):
 *   migrate       __alloc_contig_migrate_range() gives up on a batch (-EBUSY after
 *                 5 tries, or -ENOMEM) and hands the pages that failed to migrate,
 *                 still on cc->migratepages, to putback_movable_pages(list): a
 *                 kprobe (HAVE_KPROBE_PUTBACK) walks that list (at most
 *                 BLK_MAX_LIST pages (default 32: one batch is <= COMPACT_CLUSTER_MAX = 32); more
 *                 are counted in blk_stats[BLK_STAT_LIST_TRUNCATED]) while
 *                 a cma_alloc() is in flight on this task. These are the pages that
 *                 alloc_contig_dump_pages() prints with dynamic debug on.
 *   test_isolated page_isolation:test_pages_isolated (raw tracepoint, args start_pfn,
 *                 end_pfn, fin_pfn; since v4.5, Linux kernel commit 0f0848e5118a
 *                 ("mm/page_isolation: add new tracepoint, test_pages_isolated")):
 *                 fin_pfn < end_pfn is the first pfn that is neither free nor
 *                 isolated; cma_alloc() then retries at the next aligned position.
 *   isolate       never emitted on CMA pageblocks: has_unmovable_pages() returns
 *                 NULL for a CMA pageblock isolated for MIGRATE_CMA
 *                 (mm/page_isolation.c, since Linux kernel commit 4da2ce250f98
 *                 ("mm: distinguish CMA and MOVABLE isolation in
 *                 has_unmovable_pages()"), v5.10), so isolation of a CMA range fails
 *                 only on a pageblock already isolated by someone else.
 *
 * Classification (head page of a compound page; raw flags kept): buddy page_type
 * -> free; refcount 0 -> free; PG_reserved; PG_slab; page->mapping low bits
 * (PAGE_MAPPING_ANON / _MOVABLE / KSM); a file mapping whose host inode lives on the
 * bdev pseudo file system (s_magic == BDEVFS_MAGIC) -> bdev, with PG_private (buffer
 * heads) -> bdev_buffer_head; other mappings -> file (s_magic and s_dev kept);
 * LRU pages with no mapping -> unknown; anything else referenced -> unmovable_kernel.
 * State bits: locked, dirty, writeback, pinned (references beyond page cache +
 * private + mappings + isolation), buffer heads in use (b_count > 0: what
 * buffer_migrate_folio_norefs(), def_blk_aops' migrate_folio in 6.1, refuses),
 * buffer heads dirty or locked.
 *
 * Origin: mm_page_alloc (page_alloc.bpf.c calls blockers_note_alloc()) writes, for
 * pfns inside a CMA area, the gfp, order, requested migratetype, pid, comm and time
 * into `blk_origin`, one entry per CMA page (BLK_ORIGIN_ENTRIES, computed by the
 * collector from the CMA areas), at the head pfn of the allocation. A lookup checks
 * the aligned heads covering the pfn for every order and takes the newest.
 *
 * Stacks (BLK_BY_STACK, record --by stack): a raw-tracepoint program of its own on
 * kmem:mm_page_alloc (blk_stack_raw, attached by the collector) writes the origin entry
 * of each allocation placed in a CMA area, with the kernel stack id of the allocation
 * (bpf_get_stackid() into blk_stacks; -EEXIST, -ENOMEM and other failures counted in
 * blk_stats and kept in the entry as the negative errno); blockers_note_alloc() then
 * writes nothing, so one program writes each entry whole. Its own program because
 * get_stackid needs the program's context, which page_alloc.bpf.c does not pass on.
 *
 * Kernels: struct page / address_space / inode / buffer_head layouts are those of
 * the headers we compile against (exact in the guest, which uses its own
 * IKHEADERS; unverified on a kernel using another release's headers).
 */
#include <linux/fs.h>
#include <linux/buffer_head.h>

#include "common.h"

#if !ENABLE_CMA
#error "the blockers probe needs the cma probe (the cma_alloc() call in flight)"
#endif

#ifndef BLK_ORIGIN_ENTRIES
#define BLK_ORIGIN_ENTRIES 1
#endif
#ifndef BLK_MAX_LIST
#define BLK_MAX_LIST 32
#endif
#ifndef BLK_BY_STACK
#define BLK_BY_STACK 0
#endif
#ifndef BLK_RINGBUF_PAGES
#define BLK_RINGBUF_PAGES 256
#endif
#define BLK_MAX_BH 8		/* buffer heads per page: 4 KiB page / 512-byte blocks */
#define BLK_NR_ORDERS 12	/* >= MAX_ORDER of every kernel so far */
#ifndef BDEVFS_MAGIC
#define BDEVFS_MAGIC 0x62646576
#endif

/*
 * page->mapping low bits. Until ~v6.16: PAGE_MAPPING_ANON 0x1, PAGE_MAPPING_MOVABLE 0x2
 * (non-LRU movable pages), both = KSM. The movable-ops rework (~v6.17: "mm: rename
 * PAGE_MAPPING_* to FOLIO_MAPPING_*", seen in 7.3's page-flags.h) keeps 0x1 anon and
 * 0x1|0x2 KSM, and marks movable-ops pages by the PG_movable_ops page flag on an
 * offline or zsmalloc page type instead (page_has_movable_ops()).
 */
#if defined(FOLIO_MAPPING_ANON)
#define BLK_MAPPING_ANON_BIT FOLIO_MAPPING_ANON
#define BLK_MAPPING_KSM_BIT FOLIO_MAPPING_ANON_KSM
#define BLK_HAVE_MOVABLE_OPS_FLAG 1
#elif defined(PAGE_MAPPING_ANON)
#define BLK_MAPPING_ANON_BIT PAGE_MAPPING_ANON
#define BLK_MAPPING_KSM_BIT PAGE_MAPPING_MOVABLE
#define BLK_MAPPING_MOVABLE_BIT PAGE_MAPPING_MOVABLE
#define BLK_HAVE_MOVABLE_OPS_FLAG 0
#else
#define BLK_MAPPING_ANON_BIT 0x1
#define BLK_MAPPING_KSM_BIT 0x2
#define BLK_MAPPING_MOVABLE_BIT 0x2
#define BLK_HAVE_MOVABLE_OPS_FLAG 0
#endif

/*
 * Free (buddy) and slab pages, three schemes, told apart by what the headers define:
 *  - PAGE_TYPE_BASE defined (v4.18 .. v6.11): page_type is inverted bits, a type is set
 *    when (page_type & (PAGE_TYPE_BASE | PG_x)) == PAGE_TYPE_BASE; PG_slab is a page
 *    *flag* bit, unless it is a macro too (v6.10 .. v6.11: "mm: free up PG_slab" made
 *    slab a page type).
 *  - otherwise (v6.12+, "mm: support only one page_type per page"): the top byte of
 *    page_type is enum pagetype, (page_type >> 24) == PGTY_buddy / PGTY_slab.
 */
#if defined(PAGE_TYPE_BASE)
#define BLK_IS_BUDDY(pt) (((pt) & (PAGE_TYPE_BASE | PG_buddy)) == PAGE_TYPE_BASE)
#if defined(PG_slab)
#define BLK_IS_SLAB(pt, fl) (((pt) & (PAGE_TYPE_BASE | PG_slab)) == PAGE_TYPE_BASE)
#define BLK_PG_SLAB_BIT 0xff	/* not a page flag: page->flags never shows it */
#else
#define BLK_IS_SLAB(pt, fl) ((fl) & (1UL << PG_slab))
#define BLK_PG_SLAB_BIT PG_slab
#endif
#else
#define BLK_IS_BUDDY(pt) (((pt) >> 24) == PGTY_buddy)
#define BLK_IS_SLAB(pt, fl) (((pt) >> 24) == PGTY_slab)
#define BLK_PG_SLAB_BIT 0xff
#endif

BPF_ARRAY(blk_origin, struct blk_origin, BLK_ORIGIN_ENTRIES);
BPF_ARRAY(blk_area_off, __u64, MAX_CMA_AREAS);	/* first blk_origin index of each area */
BPF_ARRAY(blk_layout, struct blk_layout, 1);
BPF_PERCPU_ARRAY(blk_stats, __u64, BLK_NR_STATS);
BPF_PERCPU_ARRAY(blk_counts, __u64, BLK_NR_STAGES * BLK_NR_CAUSES);
BPF_PERCPU_ARRAY(blk_scratch, struct blocker_event, 1);
BPF_RINGBUF_OUTPUT(blk_events, BLK_RINGBUF_PAGES);

static __always_inline void blk_stat(int what)
{
	__u64 *v = blk_stats.lookup(&what);

	if (v)
		(*v)++;
}

/* Index of pfn in blk_origin, or -1. */
static __always_inline __s64 blk_origin_index(__u64 pfn, __u8 area)
{
	__u32 a = area;
	struct pfn_span *sp = cma_ranges.lookup(&a);
	__u64 *off = blk_area_off.lookup(&a);
	__u64 idx;

	if (!sp || !off || pfn < sp->start || pfn >= sp->end)
		return -1;
	idx = *off + (pfn - sp->start);
	if (idx >= BLK_ORIGIN_ENTRIES)
		return -1;
	return idx;
}

/* The origin entry of pfn, or NULL (counted) when pfn has none. */
static __always_inline struct blk_origin *blk_origin_entry(__u64 pfn, __u8 area)
{
	__s64 idx = blk_origin_index(pfn, area);
	__u32 i;

	if (idx < 0) {
		blk_stat(BLK_STAT_ORIGIN_OUT_OF_RANGE);
		return NULL;
	}
	i = idx;
	return blk_origin.lookup(&i);
}

static __always_inline void blk_write_origin(struct blk_origin *o, __u32 order, __u64 gfp,
					     int mt)
{
	o->time_ns = bpf_ktime_get_ns();
	o->gfp = gfp;
	o->pid = bpf_get_current_pid_tgid();
	o->order = order;
	o->migratetype = mt;
	o->valid = 1;
	o->stack_taken = 0;
	o->stack_id = 0;
	bpf_get_current_comm(&o->comm, sizeof(o->comm));
	blk_stat(BLK_STAT_ORIGIN_WRITES);
}

/*
 * Called by page_alloc_raw() (page_alloc.bpf.c) for every allocation placed in a CMA
 * area; with BLK_BY_STACK, blk_stack_raw() writes the entry instead.
 */
static __always_inline void blockers_note_alloc(__u64 pfn, __u8 area, __u32 order, __u64 gfp,
						int mt)
{
#if !BLK_BY_STACK
	struct blk_origin *o = blk_origin_entry(pfn, area);

	if (o)
		blk_write_origin(o, order, gfp, mt);
#endif
}

#if BLK_BY_STACK
BPF_TABLE("stacktrace", int, struct blk_stack, blk_stacks, BLK_STACK_ENTRIES);

/* kmem:mm_page_alloc TP_PROTO(struct page *page, unsigned int order, gfp_t gfp_flags,
 * int migratetype): the origin entry and the kernel stack of a CMA placement. */
int blk_stack_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct cmaprof_config *cfg = get_config();
	__u64 page = ctx->args[0];
	__u64 pfn;
	__u8 area;
	struct blk_origin *o;
	int id;

	if (!cfg || !cfg->enabled || !page || !cfg->nr_cma)
		return 0;
	pfn = page_to_pfn_cal(cfg, page);
	if (pfn == (__u64)-1)
		return 0;
	area = cma_lookup(cfg, pfn);
	if (area == CMA_AREA_NONE)
		return 0;
	o = blk_origin_entry(pfn, area);
	if (!o)
		return 0;
	blk_write_origin(o, (__u32)ctx->args[1], (__u64)(gfp_t)ctx->args[2], (int)ctx->args[3]);
	id = blk_stacks.get_stackid(ctx, 0);
	o->stack_taken = 1;
	o->stack_id = id;
	if (id >= 0)
		blk_stat(BLK_STAT_STACK_IDS);
	else if (id == -EEXIST)
		blk_stat(BLK_STAT_STACK_EEXIST);
	else if (id == -ENOMEM)
		blk_stat(BLK_STAT_STACK_ENOMEM);
	else
		blk_stat(BLK_STAT_STACK_OTHER_ERR);
	return 0;
}
#endif

/* The newest allocation whose (head pfn, order) covers pfn. */
static __always_inline void blk_find_origin(struct blocker_event *e)
{
	__u64 best = 0;

#pragma unroll
	for (__u32 o = 0; o < BLK_NR_ORDERS; o++) {
		__u64 head = e->pfn & ~((1ULL << o) - 1);
		__s64 idx = blk_origin_index(head, e->area);
		__u32 i;
		struct blk_origin *r;

		if (idx < 0)
			continue;
		i = idx;
		r = blk_origin.lookup(&i);
		if (!r || !r->valid || r->order != o || r->time_ns < best)
			continue;
		best = r->time_ns;
		e->origin_known = 1;
		e->origin_time_ns = r->time_ns;
		e->origin_gfp = r->gfp;
		e->origin_pid = r->pid;
		e->origin_order = r->order;
		e->origin_migratetype = r->migratetype;
		e->origin_stack_taken = r->stack_taken;
		e->origin_stack_id = r->stack_id;
		__builtin_memcpy(e->origin_comm, r->comm, sizeof(e->origin_comm));
	}
}

static __always_inline void blk_fill_layout(void)
{
	__u32 zero = 0;
	struct blk_layout *l = blk_layout.lookup(&zero);

	if (!l || l->filled)
		return;
	l->pg_locked = PG_locked;
	l->pg_referenced = PG_referenced;
	l->pg_uptodate = PG_uptodate;
	l->pg_dirty = PG_dirty;
	l->pg_lru = PG_lru;
	l->pg_active = PG_active;
	l->pg_slab = BLK_PG_SLAB_BIT;
	l->pg_owner_priv_1 = PG_owner_priv_1;
	l->pg_reserved = PG_reserved;
	l->pg_private = PG_private;
	l->pg_writeback = PG_writeback;
	l->pg_head = PG_head;
	l->pg_reclaim = PG_reclaim;
	l->pg_swapbacked = PG_swapbacked;
	l->pg_unevictable = PG_unevictable;
	l->pg_mlocked = PG_mlocked;
	l->bh_dirty = BH_Dirty;
	l->bh_lock = BH_Lock;
	l->bh_private_start = BH_PrivateStart;
	l->page_struct_size = sizeof(struct page);
	l->filled = 1;
}

#define BLK_READ(dst, base, type, field)					\
	bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)((base) + offsetof(type, field)))

/* Classify the page at e->pfn; isolated: the caller took an extra reference. */
static __always_inline void blk_classify(struct cmaprof_config *cfg, struct blocker_event *e,
					 int isolated)
{
	__u64 page = cfg->vmemmap_base + e->pfn * cfg->page_struct_size;
	__u64 head = page, chead = 0, mapping = 0, flags = 0, priv = 0;
	int refcount = 0, mapcount = 0, expected;
	unsigned int ptype = 0, hptype = 0;

	/* free in the buddy allocator: page_type on the page itself (not its head) */
	if (BLK_READ(ptype, page, struct page, page_type)) {
		blk_stat(BLK_STAT_READ_FAILURES);
		e->cause = BLK_CAUSE_UNKNOWN;
		return;
	}
	/*
	 * A tail page's link to its head shares the first word after flags with lru.next
	 * on every kernel (mm_types.h: FOLIO_MATCH(compound_head, lru), since 7.x
	 * FOLIO_MATCH(compound_info, lru)). Bit 0 set: a tail page. The rest is the head's
	 * address, or (7.3 _compound_head(), with HUGETLB_PAGE_OPTIMIZE_VMEMMAP and a
	 * power-of-two struct page) a mask GENMASK(63, order + log2(sizeof(struct page)))
	 * to apply to the page's own address: a mask has its top 40 bits set (the shift is
	 * at most 24 on x86_64), which a vmemmap address never has.
	 */
	bpf_probe_read_kernel(&chead, sizeof(chead), (void *)(page + offsetof(struct page, lru)));
	if (chead & 1) {
		if ((chead >> 24) == 0xffffffffffULL)
			head = page & chead;
		else
			head = chead - 1;
	}
	e->head_pfn = (head - cfg->vmemmap_base) / cfg->page_struct_size;
	BLK_READ(flags, head, struct page, flags);
	BLK_READ(refcount, head, struct page, _refcount);
	BLK_READ(mapcount, head, struct page, _mapcount);
	BLK_READ(mapping, head, struct page, mapping);
	BLK_READ(priv, head, struct page, private);
	BLK_READ(hptype, head, struct page, page_type);
	e->flags = flags;
	e->refcount = refcount;
	e->mapcount = mapcount + 1;	/* _mapcount starts at -1 */

	if (flags & (1UL << PG_locked))
		e->state |= BLK_STATE_LOCKED;
	if (flags & (1UL << PG_dirty))
		e->state |= BLK_STATE_DIRTY;
	if (flags & (1UL << PG_writeback))
		e->state |= BLK_STATE_WRITEBACK;

	if (BLK_IS_BUDDY(ptype)) {
		e->cause = BLK_CAUSE_FREE;
		e->mapcount = 0;
		return;
	}
	if (flags & (1UL << PG_reserved)) {
		e->cause = BLK_CAUSE_RESERVED;
		return;
	}
	if (BLK_IS_SLAB(hptype, flags)) {
		e->cause = BLK_CAUSE_SLAB;
		e->mapcount = 0;
		return;
	}
	if (refcount == 0) {
		e->cause = BLK_CAUSE_FREE;	/* per-CPU list or on its way to the buddy */
		return;
	}

	/* references a migration would expect (mm/migrate.c folio_expected_refs()) */
	expected = isolated + (mapcount + 1);
	if (mapping & BLK_MAPPING_ANON_BIT) {
		e->mapping_kind = (mapping & BLK_MAPPING_KSM_BIT) ? BLK_MAPPING_KSM
								  : BLK_MAPPING_ANON;
		e->cause = BLK_CAUSE_ANON;
		/* swap cache: PG_swapcache = PG_owner_priv_1 on a PG_swapbacked page */
		if ((flags & (1UL << PG_swapbacked)) && (flags & (1UL << PG_owner_priv_1)))
			expected += 1;
#if BLK_HAVE_MOVABLE_OPS_FLAG
	} else if ((flags & (1UL << PG_movable_ops)) &&
		   (((hptype >> 24) == PGTY_offline) || ((hptype >> 24) == PGTY_zsmalloc))) {
#else
	} else if (mapping & BLK_MAPPING_MOVABLE_BIT) {
#endif
		e->mapping_kind = BLK_MAPPING_MOVABLE;
		e->cause = BLK_CAUSE_MOVABLE_KERNEL;
		expected = -1;	/* driver-defined references */
	} else if (mapping) {
		__u64 host = 0, sb = 0;
		unsigned long magic = 0;
		unsigned int dev = 0, rdev = 0;
		unsigned long ino = 0;

		e->mapping_kind = BLK_MAPPING_FILE;
		BLK_READ(host, mapping, struct address_space, host);
		if (host) {
			BLK_READ(sb, host, struct inode, i_sb);
			BLK_READ(ino, host, struct inode, i_ino);
			BLK_READ(rdev, host, struct inode, i_rdev);
		}
		if (sb) {
			BLK_READ(magic, sb, struct super_block, s_magic);
			BLK_READ(dev, sb, struct super_block, s_dev);
		}
		e->fs_magic = magic;
		e->dev = dev;
		e->ino = ino;
		expected += 1;	/* the page cache's reference (one page: not a large folio) */
		if (flags & (1UL << PG_private))
			expected += 1;
		if (magic == BDEVFS_MAGIC) {
			e->dev = rdev;	/* the block device itself, not the pseudo fs */
			e->cause = (flags & (1UL << PG_private)) ? BLK_CAUSE_BDEV_BUFFER_HEAD
								 : BLK_CAUSE_BDEV;
		} else {
			e->cause = BLK_CAUSE_FILE;
		}
		/* buffer heads: page->private is the first of a ring of b_this_page */
		if ((flags & (1UL << PG_private)) && priv) {
			__u64 bh = priv;

#pragma unroll
			for (int i = 0; i < BLK_MAX_BH; i++) {
				int count = 0;
				unsigned long st = 0;
				__u64 next = 0;

				BLK_READ(count, bh, struct buffer_head, b_count);
				BLK_READ(st, bh, struct buffer_head, b_state);
				BLK_READ(next, bh, struct buffer_head, b_this_page);
				e->bh_count++;
				if (count > 0)
					e->bh_busy++;
				e->bh_state_or |= st;
				if (!next || next == priv)
					break;
				bh = next;
			}
			if (e->bh_busy)
				e->state |= BLK_STATE_BH_BUSY;
			if (e->bh_state_or & ((1UL << BH_Dirty) | (1UL << BH_Lock)))
				e->state |= BLK_STATE_BH_DIRTY_OR_LOCKED;
		}
	} else if (flags & (1UL << PG_lru)) {
		e->cause = BLK_CAUSE_UNKNOWN;	/* LRU page without a mapping (truncated) */
		expected = -1;
	} else {
		e->cause = BLK_CAUSE_UNMOVABLE_KERNEL;
		expected = -1;
	}
	if (expected >= 0 && !(flags & (1UL << PG_head))) {
		e->extra_refs = refcount - expected;
		if (e->extra_refs > 0)
			e->state |= BLK_STATE_PINNED;
	}
}

/* Classify e->pfn, count it, find its origin and stream it. */
static __always_inline void blk_emit(struct cmaprof_config *cfg, struct cma_call *c,
				     __u64 pfn, __u8 stage, __u64 start_pfn, __u64 end_pfn,
				     int isolated)
{
	__u32 zero = 0;
	struct blocker_event *e = blk_scratch.lookup(&zero);
	struct blocker_event *out;
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 ci;
	__u64 *cnt;

	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	blk_fill_layout();
	e->time_ns = bpf_ktime_get_ns();
	e->pfn = pfn;
	e->head_pfn = pfn;
	e->stage = stage;
	e->range_start_pfn = start_pfn;
	e->range_end_pfn = end_pfn;
	e->cma_start_ns = c->start_ns;
	e->cma_count = c->count;
	e->tid = (__u32)tid;
	e->area = cma_lookup(cfg, pfn);
	e->extra_refs = 0;
	blk_classify(cfg, e, isolated);
	if (e->area != CMA_AREA_NONE)
		blk_find_origin(e);
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	blk_stat(BLK_STAT_EVENTS);
	ci = (__u32)stage * BLK_NR_CAUSES + e->cause;
	cnt = blk_counts.lookup(&ci);
	if (cnt)
		(*cnt)++;
	out = blk_events.ringbuf_reserve(sizeof(*out));
	if (!out) {
		blk_stat(BLK_STAT_RINGBUF_FULL);
		return;
	}
	__builtin_memcpy(out, e, sizeof(*out));
	blk_events.ringbuf_submit(out, 0);
}

#if HAVE_KPROBE_PUTBACK
/*
 * mm/migrate.c putback_movable_pages(struct list_head *l): the pages that failed. The
 * kprobe copies up to BLK_MAX_LIST page pointers, then blk_step() classifies one page
 * per tail call (blk_progs[0], set by the collector): no loop around the classifier,
 * which 6.1's verifier would reject (a rotated loop is a "back-edge" there) and which
 * unrolled would be thousands of instructions.
 */
struct blk_list_state {
	__u64 page[BLK_MAX_LIST];
	__u32 n;
	__u32 i;
};

BPF_PERCPU_ARRAY(blk_list, struct blk_list_state, 1);
BPF_PROG_ARRAY(blk_progs, 1);

int kprobe__putback_movable_pages(struct pt_regs *ctx, struct list_head *l)
{
	struct cmaprof_config *cfg = get_config();
	struct cma_call *c = cma_current();
	__u32 zero = 0;
	struct blk_list_state *st;
	__u64 node = 0;

	if (!cfg || !c || !cfg->page_struct_size)
		return 0;
	st = blk_list.lookup(&zero);
	if (!st)
		return 0;
	st->n = 0;
	st->i = 0;
	bpf_probe_read_kernel(&node, sizeof(node), (void *)l);	/* l->next */
#pragma unroll
	for (int i = 0; i < BLK_MAX_LIST; i++) {
		if (!node || node == (__u64)l)
			break;
		st->page[i] = node - offsetof(struct page, lru);
		st->n = i + 1;
		if (bpf_probe_read_kernel(&node, sizeof(node), (void *)node))
			node = 0;
	}
	if (node && node != (__u64)l)
		blk_stat(BLK_STAT_LIST_TRUNCATED);
	blk_progs.call(ctx, 0);
	return 0;
}

int blk_step(struct pt_regs *ctx)
{
	struct cmaprof_config *cfg = get_config();
	struct cma_call *c = cma_current();
	__u32 zero = 0;
	struct blk_list_state *st = blk_list.lookup(&zero);
	__u32 idx;
	__u64 pfn;

	if (!cfg || !c || !st)
		return 0;
	idx = st->i;
	if (idx >= st->n || idx >= BLK_MAX_LIST)
		return 0;
	st->i = idx + 1;
	pfn = page_to_pfn_cal(cfg, st->page[idx]);
	if (pfn != (__u64)-1)
		blk_emit(cfg, c, pfn, BLK_STAGE_MIGRATE, (__u64)-1, (__u64)-1, 1);
	blk_progs.call(ctx, 0);
	return 0;
}
#endif

#if HAVE_TEST_PAGES_ISOLATED
/* TP_PROTO(unsigned long start_pfn, unsigned long end_pfn, unsigned long fin_pfn) */
RAW_TRACEPOINT_PROBE(test_pages_isolated)
{
	struct cmaprof_config *cfg = get_config();
	struct cma_call *c = cma_current();
	__u64 start = ctx->args[0], end = ctx->args[1], fin = ctx->args[2];

	if (!cfg || !c || !cfg->page_struct_size || fin >= end)
		return 0;
	blk_emit(cfg, c, fin, BLK_STAGE_TEST_ISOLATED, start, end, 0);
	return 0;
}
#endif
