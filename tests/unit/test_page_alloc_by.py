"""``record --by comm,tgid,stack``: the page_alloc cube by process and kernel stack.

On a recording made on the 6.18 host (``host-6.18-by``: ``cmaprof record --by
comm,tgid,stack -- cmaprof workload anon:16``, 16 MiB written through
MADV_POPULATE_WRITE = 4096 order-0 pages), and on synthetic map contents for the
columns' nulls. The live test (tests/live/test_by.py) checks the counts against perf.
"""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest

from cmaprof.analysis import load
from cmaprof.analysis import stacks as st
from cmaprof.collectors import page_alloc_by as by
from cmaprof.collectors.record import merge_tables
from cmaprof.recording import schema
from tests.conftest import DATA

REC = DATA / "recordings" / "host-6.18-by"


@pytest.fixture(scope="module")
def rec():
    return load(REC)


def test_by_totals_plus_overflow_equal_the_cube(rec):
    by_df, cube = rec.df_page_alloc_by(), rec.df_page_alloc()
    info = rec.meta.page_alloc.by
    assert info.by_keys == ["comm", "tgid", "stack"]
    assert info.entries_used == len(by_df) == 100 and info.max_entries == 16384
    assert int(by_df["pages"].sum()) + info.overflow_pages == int(cube["pages"].sum()) == 69990
    assert int(by_df["allocs"].sum()) + info.overflow_allocs == int(cube["allocs"].sum())
    # per cube key too: the by rows of a key add up to the cube's row
    keys = [f for f, _ in schema.PAGE_ALLOC_KEYS]
    per_key = by_df.groupby(keys)["pages"].sum()
    assert per_key.to_dict() == cube.set_index(keys)["pages"].to_dict()


def test_workloads_pages_and_stack(rec):
    info = rec.meta.page_alloc.by
    by_df = rec.df_page_alloc_by()
    assert info.workload_tgid != info.self_tgid
    mine = by_df[by_df["tgid"] == info.workload_tgid]
    assert set(mine["comm"]) == {"cmaprof"}
    top = mine.sort_values("pages").iloc[-1]
    assert int(top["pages"]) == 16 * 256  # anon:16, order 0, one row: one stack
    assert top["gfp"] == "GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP" and top["zone"] == "Normal"
    frames = st.trim(st.stack_frames(rec, by.STACK_MAP)[int(top["stack_id"])])
    names = [st.function(f) for f in frames]
    assert names[0] == "__alloc_frozen_pages_noprof"
    assert names.index("do_anonymous_page") < names.index("handle_mm_fault")
    assert "madvise_do_behavior" in names  # MADV_POPULATE_WRITE, as the workload does
    # cmaprof's own start-up is its own tgid, apart from the workload
    assert int(by_df.loc[by_df["tgid"] == info.self_tgid, "pages"].sum()) > 0


def test_columns_keyed_and_stacks_stored(rec):
    t = rec.table("page_alloc_by")
    assert t.schema == schema.SCHEMAS["page_alloc_by"]
    df = t.to_pandas()
    assert df["comm"].notna().all() and df["tgid"].notna().all()
    # a stack id or the errno of the failed bpf_get_stackid(), never both, never neither;
    # this recording has one -EEXIST (its hash bucket held another stack: flags 0)
    assert (df["stack_id"].isna() == df["stack_errno"].notna()).all()
    assert df["stack_errno"].dropna().astype(int).tolist() == [17]
    stacks = rec.table("stacks").to_pandas()
    assert set(stacks["map"]) == {by.STACK_MAP}
    assert set(df["stack_id"].dropna().astype(int)) <= set(stacks["stack_id"])
    assert rec.meta.page_alloc.by.stacks_stored == stacks["stack_id"].nunique()


def _key(tgid: int, stack_id: int, comm: bytes) -> SimpleNamespace:
    cube = SimpleNamespace(
        gfp_flags=0xCC0, node=0, zone_idx=2, order=1, migratetype_id=0, cma_area_idx=255
    )
    return SimpleNamespace(cube=cube, tgid=tgid, stack_id=stack_id, comm=comm.ljust(16, b"\0"))


def test_rows_null_where_not_keyed_and_errno_of_a_failed_stackid():
    leaves = [SimpleNamespace(allocs=2, pages=4), SimpleNamespace(allocs=1, pages=2)]
    items = [(_key(0, -17, b"kswapd0"), leaves), (_key(0, 5, b"bash"), leaves[:1])]
    rows = by.by_rows(items, ["comm", "stack"])
    assert rows["tgid"] == [None, None]  # not keyed by tgid: null, not 0
    assert rows["comm"] == ["kswapd0", "bash"]
    assert rows["stack_id"] == [None, 5] and rows["stack_errno"] == [17, None]
    assert rows["allocs"] == [3, 2] and rows["pages"] == [6, 4]  # summed over CPUs
    rows = by.by_rows(items, ["tgid"])
    assert rows["comm"] == [None, None] and rows["tgid"] == [0, 0]
    assert rows["stack_id"] == [None, None] and rows["stack_errno"] == [None, None]
    schema.to_table("page_alloc_by", rows)  # the declared dtypes take them


def test_info_counts_overflow_from_the_stats():
    table = schema.to_table("page_alloc_by", {})
    stats = {"by_overflow_allocs": 3, "by_overflow_pages": 10}
    info = by.by_info({"PA_BY_COMM": 1, "PA_BY_ENTRIES": 8}, table, stats, None, {})
    assert info["by_keys"] == ["comm"] and info["max_entries"] == 8
    assert (info["overflow_allocs"], info["overflow_pages"]) == (3, 10)
    assert "stack_map" not in info  # only with --by stack


def test_stacks_of_both_maps_are_one_table():
    a = pa.table({"map": ["pa_stacks"], "stack_id": pa.array([1], pa.int32())})
    b = pa.table({"map": ["blk_stacks"], "stack_id": pa.array([1], pa.int32())})
    out = merge_tables([{"stacks": a, "page_alloc": a}, {"stacks": b}])
    assert out["stacks"].column("map").to_pylist() == ["pa_stacks", "blk_stacks"]
    assert out["page_alloc"] is a
