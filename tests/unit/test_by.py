"""Who allocates (record --by comm|tgid|stack, issue 17): df_top_by, the report and
compare on the hand-made recording of tests/unit/by_fixture.py (counts chosen so the
tables can be checked by hand; see its docstring)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from cmaprof.analysis import by, by_text, load, page_alloc, stacks, tables
from cmaprof.analysis.compare import load_side
from cmaprof.analysis.compare.by_stack import df_compare_by_stack
from cmaprof.errors import BadInput
from tests.conftest import DATA, run_cli
from tests.unit import by_fixture as fx


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory):
    return fx.make(tmp_path_factory.mktemp("by"))


@pytest.fixture(scope="module")
def rec(rec_path):
    return load(rec_path)


def _rows(df, cls):
    g = df[df["class"] == cls]
    return list(zip(g["who"], g["pages"], g["share"].round(4), strict=True))


def test_stack_label_skips_the_allocator():
    assert by.stack_label(fx.STACKS[1]) == "do_anonymous_page"
    assert by.stack_label(fx.STACKS[3]) == "pte_alloc_one"  # alloc_pages_noprof skipped
    six_one = ("__alloc_pages+0x1a0", "folio_alloc+0x17", "__filemap_get_folio+0x1b4")
    assert by.stack_label(six_one) == "__filemap_get_folio"
    assert by.stack_label(("__alloc_pages+0x1a0",)) == "__alloc_pages"


def test_stack_label_on_the_real_6_1_stacks():
    real = load(DATA / "recordings" / "guest-6.1-blockers-stacks")
    labels = {by.stack_label(f) for f in stacks.df_stacks(real)["frames"]}
    assert labels and not labels & by.ALLOCATOR_FUNCTIONS
    assert "__filemap_get_folio" in labels


def test_top_comm_per_gfp_self_excluded(rec):
    df = by.df_top_by(rec, "comm", "gfp")
    assert _rows(df, fx.A_TEXT) == [
        ("memhog (workload)", 700, 0.7),
        ("sh", 100, 0.1),
        (by.OVERFLOW, 200, 0.2),
    ]
    assert _rows(df, fx.B_TEXT) == [("memhog (workload)", 40, 1.0)]
    a = df[df["class"] == fx.A_TEXT]
    assert set(a["class_pages"]) == {1000} and set(a["self_pages"]) == {100}
    assert list(a["rank"].astype(object).where(a["rank"].notna(), None)) == [1, 2, None]
    assert set(df[df["class"] == fx.B_TEXT]["self_pages"]) == {60}


def test_top_comm_self_included_and_other(rec):
    df = by.df_top_by(rec, "comm", "gfp", top=1, exclude_self=False)
    assert _rows(df, fx.A_TEXT) == [
        ("memhog (workload)", 700, 0.6364),
        (f"{by.OTHER} 2 more", 200, 0.1818),  # cmaprof 100 + sh 100
        (by.OVERFLOW, 200, 0.1818),
    ]
    assert _rows(df, fx.B_TEXT) == [(by.SELF, 60, 0.6), (f"{by.OTHER} 1 more", 40, 0.4)]


@pytest.mark.parametrize("key", ["comm", "tgid", "stack"])
@pytest.mark.parametrize("per", ["all", "gfp", "zone", "cma"])
def test_every_class_adds_up_to_page_alloc(rec, key, per):
    cube = rec.df_page_alloc()
    cube = cube.assign(cls=by.class_of(cube, per)).dropna(subset=["cls"])
    want = cube.groupby("cls")["pages"].sum().to_dict()
    for exclude in (False, True):
        df = by.df_top_by(rec, key, per, top=2, exclude_self=exclude)
        got = df.groupby("class")["pages"].sum() + df.groupby("class")["self_pages"].first()
        assert got.to_dict() == want
        assert df.groupby("class")["share"].sum().round(9).eq(1).all()


def test_top_tgid_and_cma(rec):
    df = by.df_top_by(rec, "tgid", "all")
    assert _rows(df, "all")[:2] == [("100 memhog (workload)", 740, 0.7115), ("300 sh", 100, 0.0962)]
    cma = by.df_top_by(rec, "comm", "cma")
    assert _rows(cma, "reserved") == [("memhog (workload)", 200, 1.0)]
    assert set(by.df_top_by(rec, "comm", "zone")["class"]) == {"Node 0 Normal"}


def test_top_stacks_merge_call_sites_and_keep_the_failed_stackid(rec):
    df = by.df_top_by(rec, "stack", "gfp")
    assert _rows(df, fx.A_TEXT) == [
        ("do_anonymous_page", 700, 0.7),  # stacks 1 (500, cmaprof's 100 left out) and 4
        ("(no stack: EFAULT)", 50, 0.05),
        ("do_wp_page", 50, 0.05),
        (by.OVERFLOW, 200, 0.2),
    ]
    top = df.iloc[0]
    assert (top["stack_id"], top["stacks"]) == (1, 2)
    assert top["stack"].startswith("__alloc_frozen_pages_noprof+0x2b7 < ")
    assert "bpf" not in top["stack"] and "0xffff" not in top["stack"]


def test_check_still_counts_cmaprof(rec):
    check = page_alloc.df_check(rec)
    assert int(check.loc[check["zone"] == "Normal", "traced_pages"].iloc[0]) == 1200


def test_metadata_of_record_by(rec):
    assert by.self_tgid(rec) == 200 and by.by_keys(rec) == ["comm", "tgid", "stack"]
    assert rec.meta.page_alloc.by.max_entries == 16384  # typed: recording/metadata.py


def test_without_page_alloc_by_is_one_clear_error():
    r = load(DATA / "recordings" / "host-6.18-anon")
    with pytest.raises(BadInput, match=r"record --by comm"):
        by.df_top_by(r, "comm")
    assert by_text.table_who_allocates(r) == ""
    assert "who_allocates" not in tables.report_tables(r)


def test_key_not_recorded(tmp_path):
    rows = [r[:3] + (None, None) + r[5:] for r in fx.BY]  # keyed by stack only
    path = fx.make(tmp_path, by=rows)
    meta = json.loads((path / "metadata.json").read_text())
    meta["page_alloc"]["by"]["by_keys"] = ["stack"]
    (path / "metadata.json").write_text(json.dumps(meta))
    r = load(path)
    with pytest.raises(BadInput, match=r"recorded with --by stack, not comm.*record --by comm"):
        by.df_top_by(r, "comm")
    assert "(record --by stack)" in by_text.table_who_allocates(r)  # stacks, then
    assert "not told apart" in by_text.table_who_allocates(r)


def test_report_by_text(rec_path):
    proc = run_cli("report", str(rec_path), "--by", "comm", "--by", "stack", "--top", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for title in (
        "Top processes by GFP class",
        "Top processes by zone",
        "Top processes for CMA placements",
        "Top kernel stacks by GFP class",
        "Top kernel stacks for CMA placements",
    ):
        assert title in out
    assert "cmaprof (self): 100 pages, not shown" in out
    assert "       100  10.0%        100  (other) 1 more" in out
    assert max(map(len, out.splitlines())) <= 80
    full = run_cli("report", str(rec_path), "--by", "stack", "--stacks", "--include-self")
    assert "vma_alloc_folio_noprof+0x6a < do_anonymous_page+0x1ff" in full.stdout
    assert "cmaprof itself included" in full.stdout


def test_report_by_csv_and_json(rec_path, tmp_path):
    out = tmp_path / "csv"
    proc = run_cli("report", str(rec_path), "--by", "tgid", "--format", "csv", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"top_tgid_{p}.csv" for p in ("all", "cma", "gfp", "zone")]
    df = pd.read_csv(out / "top_tgid_all.csv")
    assert list(df["pages"]) == [740, 100, 200] and df["share"].sum() == pytest.approx(1)
    proc = run_cli("report", str(rec_path), "--by", "comm", "--format", "json", "--redact")
    obj = json.loads(proc.stdout)
    assert obj["top_comm_cma"] == [
        {
            "class": "reserved",
            "class_pages": 200,
            "self_pages": 0,
            "rank": 1,
            "who": "memhog (workload)",
            "pages": 200,
            "allocs": 200,
            "share": 1.0,
        }
    ]
    one = run_cli("report", str(rec_path), "--by", "comm", "--format", "csv", "--table", "x")
    assert one.returncode == 2 and "top_comm_gfp" in one.stderr


def test_report_by_keys_combine_and_a_bad_key_is_refused(rec_path):
    proc = run_cli("report", str(rec_path), "--by", "comm,stack", "--by", "comm")
    titles = [line for line in proc.stdout.splitlines() if line.startswith("Top ")]
    assert [t.split(" (")[0] for t in titles] == [
        "Top processes by GFP class",
        "Top processes by zone",
        "Top processes for CMA placements",
        "Top kernel stacks by GFP class",
        "Top kernel stacks by zone",
        "Top kernel stacks for CMA placements",
    ]
    bad = run_cli("report", str(rec_path), "--by", "pid")
    assert bad.returncode == 2 and "pid: not one of comm, tgid, stack" in bad.stderr
    alone = run_cli("report", str(rec_path), "--top", "3")
    assert alone.returncode == 2 and "need --by" in alone.stderr


def test_report_by_without_page_alloc_by_exits_2():
    proc = run_cli("report", str(DATA / "recordings" / "host-6.18-anon"), "--by", "comm")
    assert proc.returncode == 2
    assert "no page_alloc_by table" in proc.stderr and "record --by comm" in proc.stderr
    assert proc.stdout == ""


def test_default_report_who_allocates(rec):
    text = tables.table_report(rec)
    i = text.index("Who allocates: top 5 processes, all classes (record --by comm,tgid,stack)")
    part = text[i:].split("\n\n")[0].splitlines()
    assert part[2:5] == [
        "       740  71.2%        740  memhog (workload)",
        "       100   9.6%        100  sh",
        "       200  19.2%        200  (not keyed: map full)",
    ]
    assert "cmaprof (self): 160 pages, not shown" in part[5]
    assert list(tables.report_tables(rec)["who_allocates"]["pages"]) == [740, 100, 200]


def test_compare_by_stack_class(tmp_path):
    base, double = fx.make(tmp_path, "base"), fx.make(tmp_path, "double", scale=2)
    df = df_compare_by_stack([load_side(base), load_side(double)])
    amean = df[(df["stat"] == "Amean") & (df["side"] == "double")]
    assert list(amean["metric"]) == [
        "do_anonymous_page",  # 500 + 100 (cmaprof, counted here) + 200
        "pte_alloc_one",
        "(no stack: EFAULT)",
        "do_wp_page",
        by.OVERFLOW,
    ]
    assert list(amean["value"]) == [1600, 200, 100, 100, 400]
    assert set(amean["change_pct"]) == {100.0}
    proc = run_cli("compare", str(base), str(double))
    assert proc.returncode == 0, proc.stderr
    assert "Pages per kernel stack class" in proc.stdout
    assert "Amean    do_anonymous_page               800 (    0.00%)       1600 ( +100.00%)" in (
        proc.stdout
    )
    rows = json.loads(run_cli("compare", str(base), str(double), "--format", "json").stdout)
    assert {r["metric"] for r in rows["rows"] if r["section"] == "by_stack"} == set(amean["metric"])


def test_compare_without_stacks_on_one_side(tmp_path):
    base = fx.make(tmp_path, "base")
    plain = tmp_path / "plain"
    shutil.copytree(DATA / "recordings" / "host-6.18-anon", plain)
    assert df_compare_by_stack([load_side(base), load_side(plain)]).empty
    proc = run_cli("compare", str(base), str(plain))
    assert proc.returncode == 0 and "stack class" not in proc.stdout


REAL = DATA / "recordings" / "host-6.18-by"  # branch by: record --by comm,tgid,stack -- anon:16
ANON = "GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP"


def test_real_recording_the_workload_and_the_totals():
    import pyarrow.parquet as pq

    r = load(REAL)
    raw = pq.read_table(REAL / "tables/page_alloc_by.parquet").to_pandas()
    info = r.meta.page_alloc.by
    df = by.df_top_by(r, "comm", "gfp", top=10)
    anon = df[df["class"] == ANON].set_index("who")
    # workload anon:16 write-faults 16 MiB: at least 4096 base pages of its own
    work = int(
        raw.loc[(raw["tgid"] == info.workload_tgid) & (raw["gfp_flags"] == fx.A), "pages"].sum()
    )
    assert anon.loc["cmaprof (workload)", "pages"] == work >= 4096
    own = int(raw.loc[raw["tgid"] == info.self_tgid, "pages"].sum())
    assert own > 0 and int(by.df_who_allocates(r)["self_pages"].iloc[0]) == own
    cube = int(pq.read_table(REAL / "tables/page_alloc.parquet")["pages"].to_pandas().sum())
    for key in ("comm", "tgid", "stack"):
        for per in ("all", "gfp", "zone"):
            t = by.df_top_by(r, key, per, top=3, exclude_self=False)
            assert (
                t["pages"].sum() == cube and t.groupby("class")["share"].sum().round(9).eq(1).all()
            )
            t = by.df_top_by(r, key, per, top=3)  # self left out: where it went
            alone = by.self_pages(r, per).drop(t["class"].unique(), errors="ignore").sum()
            shown = t.groupby("class")["self_pages"].first().sum()
            assert t["pages"].sum() + shown + alone == cube
            assert key == "stack" or shown + alone == own
            assert by.OVERFLOW not in set(t["who"])  # overflow_allocs 0 in its metadata
    stacks_ = by.df_top_by(r, "stack", "gfp", top=1)
    assert stacks_[stacks_["class"] == ANON].iloc[0]["who"] == "do_anonymous_page"
    text = run_cli("report", str(REAL)).stdout
    assert "Who allocates: top 5 processes" in text and "cmaprof (self): " in text
