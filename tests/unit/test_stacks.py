"""Kernel stacks (record --by stack): kallsyms symbolisation, the stacks table, the
comparison with page_owner's stacks, and the --by option's checks."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

import cmaprof.analysis as an
from cmaprof.analysis import blockers as blk
from cmaprof.analysis import stacks as st
from cmaprof.analysis import tables
from cmaprof.collectors import blockers as cblk
from cmaprof.collectors import page_alloc_by as by
from cmaprof.collectors import stacks as cst
from cmaprof.errors import BadInput, EnvironmentProblem
from cmaprof.kernel.page_owner import parse_page_owner_file
from cmaprof.recording import schema
from tests.conftest import DATA

KALLSYMS = """\
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81200000 D some_data
ffffffff812a0000 T __alloc_pages
ffffffff812a0000 T __alias_of_alloc_pages
ffffffff812a0400 t grow_dev_page
ffffffff812a0800 W weak_fn
ffffffffc0100000 t ext4_getblk\t[ext4]
0000000000000000 T hidden_from_non_root
"""

#: 6.1 mm/page_owner.c print_page_owner() text, two records (one migrated).
PAGE_OWNER = """\
Page allocated via order 0, mask 0x1100cca(GFP_HIGHUSER_MOVABLE), pid 300, tgid 300 \
(python3), ts 1000 ns, free_ts 0 ns
PFN 262144 type Movable Block 512 type CMA Flags 0x100000000000014(uptodate|lru)
 post_alloc_hook+0x1b6/0x1e0
 get_page_from_freelist+0x5d6/0x1140
 __alloc_pages+0x1a3/0x330
 __folio_alloc+0x16/0x50
 grow_dev_page+0x4d/0x3b0
 __getblk_gfp+0xe5/0x370
 ext4_getblk+0x9b/0x1c0 [ext4]

Page allocated via order 1, mask 0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), pid 301, \
tgid 301 (python3), ts 2000 ns, free_ts 0 ns
PFN 262146 type Movable Block 512 type CMA Flags 0x10000000000a014(uptodate|lru)
 post_alloc_hook+0x1b6/0x1e0
 __alloc_pages+0x1a3/0x330
 do_anonymous_page+0x70/0x3d0
Page has been migrated, last migrate reason: compaction

"""


@pytest.fixture(scope="module")
def syms():
    return cst.parse_kallsyms(KALLSYMS)


def test_kallsyms_code_symbols_first_alias_modules(syms):
    assert "some_data" not in syms.names and "hidden_from_non_root" not in syms.names
    assert syms.frame(0xFFFFFFFF812A0010) == "__alloc_pages+0x10"  # the first alias
    assert syms.frame(0xFFFFFFFF812A04A5) == "grow_dev_page+0xa5"
    assert syms.frame(0xFFFFFFFF812A0800) == "weak_fn+0x0"
    assert syms.frame(0xFFFFFFFFC010009B) == "ext4_getblk+0x9b [ext4]"
    assert syms.frame(0x1000) == cst.UNKNOWN_FRAME
    assert syms.frame(0) == cst.UNKNOWN_FRAME


def test_no_readable_address_is_an_environment_problem(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text("0000000000000000 T _text\n0000000000000000 t foo\n")
    with pytest.raises(EnvironmentProblem, match="kptr_restrict"):
        cst.read_kallsyms(p)


def test_stack_map_to_table_holds_text_not_addresses(syms):
    items = [
        (SimpleNamespace(value=7), SimpleNamespace(ip=[0xFFFFFFFF812A0010, 0xFFFFFFFF812A04A5, 0])),
        (SimpleNamespace(value=3), SimpleNamespace(ip=[0xFFFFFFFFC010009B, 0, 0xFFFFFFFF812A0010])),
    ]
    raw = cst.read_stack_map(SimpleNamespace(items=lambda: items))
    assert raw == {7: [0xFFFFFFFF812A0010, 0xFFFFFFFF812A04A5], 3: [0xFFFFFFFFC010009B]}
    t = cst.frames_table("blk_stacks", cst.symbolise(raw, syms))
    assert t.schema == schema.SCHEMAS["stacks"]
    rows = t.to_pylist()
    assert rows == [
        {"map": "blk_stacks", "stack_id": 3, "level": 0, "frame": "ext4_getblk+0x9b [ext4]"},
        {"map": "blk_stacks", "stack_id": 7, "level": 0, "frame": "__alloc_pages+0x10"},
        {"map": "blk_stacks", "stack_id": 7, "level": 1, "frame": "grow_dev_page+0xa5"},
    ]
    assert "ffff" not in str(rows)


OURS = (
    "bpf_prog_6deef7357e7b4530_blk_stack_raw+0x2a [bpf]",
    "bpf_trace_run4+0x10d",
    "__alloc_pages+0x2b7",
    "__folio_alloc+0x16",
    "grow_dev_page+0x4d",
    "__getblk_gfp+0xe5",
    "ext4_getblk+0x9b [ext4]",
    "ext4_bread+0x10 [ext4]",
)


def test_trim_and_short():
    assert st.trim(OURS)[0] == "__alloc_pages+0x2b7"
    assert st.function("ext4_getblk+0x9b [ext4]") == "ext4_getblk"
    assert st.short(OURS, 3) == "__alloc_pages < __folio_alloc < grow_dev_page"
    assert st.trim(OURS[:2]) == ()


def test_same_callers_compares_call_sites_after_the_allocator():
    owner = parse_page_owner_file(PAGE_OWNER)[0]["stack"]
    assert owner[2] == "__alloc_pages+0x1a3"  # the size after / dropped
    assert st.same_callers(OURS, owner)  # page_owner stops at 16 frames: the overlap
    other_site = list(OURS)
    other_site[4] = "grow_dev_page+0x60"
    assert not st.same_callers(other_site, owner)
    assert not st.same_callers(OURS[:4], owner)  # one frame in common: too few
    assert not st.same_callers(OURS, ["post_alloc_hook+0x1", "do_anonymous_page+0x70"])
    assert not st.same_callers((), owner)


def test_page_owner_file_records():
    recs = parse_page_owner_file(PAGE_OWNER)
    assert [r["pfn"] for r in recs] == [262144, 262146]
    assert [r["order"] for r in recs] == [0, 1]
    assert recs[0]["stack"][-1] == "ext4_getblk+0x9b [ext4]"
    assert [r["migrated"] for r in recs] == [False, True]
    assert recs[0]["buffer_head"] and not recs[1]["buffer_head"]


def test_compare_with_page_owner_matches_the_allocation_head():
    ours = pd.DataFrame(
        {
            "pfn": [262144, 262147, 262150],
            "cause": ["bdev_buffer_head", "anon", "anon"],
            "origin_known": [True, True, True],
            "origin_gfp": [0x1100CCA, 0x140CCA, 0x140CCA],
            "origin_order": [0, 1, 0],
            "origin_stack": [OURS, OURS, None],
            "origin_stack_text": ["a", "b", "no stack: EEXIST"],
        }
    )
    both = blk.compare_with_page_owner(ours, parse_page_owner_file(PAGE_OWNER))
    assert both["pfn"].tolist() == [262144, 262147]  # 262147 is the tail of 262146's order 1
    assert both["head_pfn"].tolist() == [262144, 262146]
    assert both["same_allocation"].tolist() == [True, False]  # the second was migrated
    assert both["same_stack"].tolist() == [True, False]


def test_event_row_stack_columns():
    assert cblk._stack_columns(False, 0) == {"origin_stack_id": None, "origin_stack_errno": None}
    assert cblk._stack_columns(True, 0) == {"origin_stack_id": 0, "origin_stack_errno": None}
    assert cblk._stack_columns(True, -17) == {"origin_stack_id": None, "origin_stack_errno": 17}


def test_by_option_checks():
    assert by.by_defines([], ["page_alloc"]) == {}
    assert by.by_defines(["stack"], ["page_alloc", "cma", "blockers"]) == {
        "PA_BY_STACK": 1,
        "BLK_BY_STACK": 1,
    }
    # without the blockers probe, --by stack keys the page_alloc cube only
    assert by.by_defines(["stack"], ["page_alloc"]) == {"PA_BY_STACK": 1}
    assert by.by_defines(["stack"], ["page_alloc"], 64) == {
        "PA_BY_STACK": 1,
        "PA_BY_ENTRIES": 64,
        "PA_STACK_ENTRIES": 64,
    }
    with pytest.raises(BadInput, match="--by-entries sizes the tables of --by: give --by"):
        by.by_defines([], ["page_alloc"], 64)
    with pytest.raises(BadInput, match="--by-entries 0: give 1 to"):
        by.by_defines(["comm"], ["page_alloc"], 0)
    assert by.by_defines(["comm", "tgid"], ["page_alloc"]) == {"PA_BY_COMM": 1, "PA_BY_TGID": 1}
    with pytest.raises(BadInput, match="--by pid: unknown key; known: comm, tgid, stack"):
        by.by_defines(["pid"], ["blockers"])
    assert by.parse_by(" comm, stack,,comm ") == ["comm", "stack"]
    assert by.keys_of({"PA_BY_STACK": 1, "PA_BY_COMM": 1, "PA_BY_TGID": 0}) == ["comm", "stack"]


def test_recording_without_stacks_reads_with_null_stack_columns():
    rec = an.load(DATA / "recordings" / "guest-6.1-blockers")
    df = rec.df_cma_blockers()
    assert df["origin_stack_id"].isna().all() and df["origin_stack_errno"].isna().all()
    assert df["origin_stack_text"].isna().all()
    assert rec.df_blocker_stacks().empty
    assert blk.table_blocker_stacks(rec) == ""


# ---- a real 6.1 guest run: record --by stack and the kernel's page_owner ----------------

STACKS_REC = DATA / "recordings" / "guest-6.1-blockers-stacks"
OWNER = DATA / "page_owner" / "guest-6.1-blockers-stacks.txt"


@pytest.fixture(scope="module")
def grec():
    return an.load(STACKS_REC)


def test_every_origin_has_a_stored_stack(grec):
    meta = grec.meta["blockers"]
    assert meta["by"] == ["stack"] and meta["stack_map"] == "blk_stacks"
    stats = meta["stats"]
    assert stats["stack_ids"] == stats["origin_writes"] > 0
    assert stats["stack_eexist"] == stats["stack_enomem"] == stats["stack_other_err"] == 0
    df = grec.df_cma_blockers()
    known = df[df["origin_known"]]
    assert len(known) > 0 and known["origin_stack_id"].notna().all()
    stored = st.stack_frames(grec, "blk_stacks")
    assert len(stored) == meta["stacks_stored"]
    assert set(known["origin_stack_id"].astype(int)) <= set(stored)
    # the tracing glue comes first and is trimmed; the allocator fired the tracepoint
    some = stored[int(known["origin_stack_id"].iloc[0])]
    assert st.is_glue(some[0]) and st.trim(some)[0].startswith("__alloc_pages+0x")


def test_buffer_head_pages_were_placed_through_getblk(grec):
    by = grec.df_blocker_stacks()
    assert set(by["cause"]) == {"bdev_buffer_head"}
    assert int(by["pages"].sum()) == grec.df_cma_blockers()["pfn"].nunique()
    for s in by["stack"]:
        names = [st.function(f) for f in s]
        assert "__getblk_gfp" in names and "pagecache_get_page" in names, s
        assert any(n.startswith(("ext4_", "__ext4_", "jbd2_")) for n in names), s
    assert by["origin_gfp_text"].str.contains("__GFP_MOVABLE").all()


def test_stacks_equal_page_owner_for_every_blocking_page(grec):
    both = blk.compare_with_page_owner(
        grec.df_cma_blockers(), parse_page_owner_file(OWNER.read_text())
    )
    assert len(both) == grec.df_cma_blockers()["pfn"].nunique() == 32
    assert both["same_allocation"].all() and both["same_stack"].all()


def test_report_section_names_the_stack(grec):
    text = tables.table_report(grec)
    sec = text[text.index("Who placed the blocking pages, by kernel stack") :]
    sec = sec[: sec.index("\n\n")]
    assert "__getblk_gfp" in sec and "ext4_" in sec
    assert max(len(line) for line in sec.splitlines()) <= 80
    assert "0 without (EEXIST 0, ENOMEM 0, other 0)" in sec
    j = tables.report_tables(grec)["cma_blocker_stacks"]
    assert j["stack"].str.contains("__getblk_gfp").all()


def test_the_output_scan_covers_the_stacks_table():
    from tests.unit.test_redact import RECORDINGS

    assert STACKS_REC in RECORDINGS  # test_scan_every_output scans its every file
    frames = pq.read_table(STACKS_REC / "tables" / "stacks.parquet").column("frame")
    assert all("+0x" in f or f == "?" for f in frames.to_pylist())
