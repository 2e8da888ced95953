"""cmaprof compare on real guest recordings: stock layout vs CMA inside ZONE_MOVABLE.

Fixtures (tests/data/recordings/guest-*/iter-N, see the README there): the 6.1 guest,
N iterations per layout of one workload (ext4 metadata on a loop device, 1100 MiB of
anonymous memory held, 20 cma_alloc() calls of 1021 pages). With fewer than 4 a side no
Mann-Whitney test can reach 0.05, so marks come only from the latency bootstrap.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import pandas as pd
import pytest

from cmaprof.analysis import compare, load, stats
from cmaprof.analysis.compare import (
    LOGICAL_CMA,
    QUANTILES,
    Side,
    df_compare,
    load_side,
    table_compare,
)
from tests.conftest import DATA, ROOT, run_cli

STOCK = DATA / "recordings" / "guest-stock"
MOVABLE = DATA / "recordings" / "guest-movable"
GOLDEN = DATA / "golden" / "compare-stock-movable.txt"
GOLDEN_CSV = DATA / "golden" / "compare-stock-movable.csv"
GOLDEN_JSON = DATA / "golden" / "compare-stock-movable.json"
UPDATE = os.environ.get("CMAPROF_UPDATE_GOLDEN") == "1"
#: Iterations per layout in the fixtures.
#: Iterations of each layout in the fixtures.
N_STOCK, N_MOVABLE = 2, 2


@pytest.fixture(scope="module")
def stock() -> Side:
    return load_side(STOCK)


@pytest.fixture(scope="module")
def movable() -> Side:
    return load_side(MOVABLE)


@pytest.fixture(scope="module")
def table(stock, movable):
    return df_compare([stock, movable])


def _row(df, section, metric, side, stat="Amean"):
    r = df[
        (df["section"] == section)
        & (df["metric"] == metric)
        & (df["side"] == side)
        & (df["stat"] == stat)
    ]
    assert len(r) == 1, (section, metric, side)
    return r.iloc[0]


def test_fixtures_are_iterations_of_each_layout(stock, movable):
    assert (len(stock.recordings), len(movable.recordings)) == (N_STOCK, N_MOVABLE)
    assert stock.layout == "CMA in DMA32"
    assert movable.layout == "CMA in Movable"
    assert all(r.complete for r in stock.recordings + movable.recordings)


@pytest.mark.parametrize(
    ("fmt", "golden"), [("text", GOLDEN), ("csv", GOLDEN_CSV), ("json", GOLDEN_JSON)]
)
def test_golden(fmt, golden):
    """The whole output on the checked-in recordings (CMAPROF_UPDATE_GOLDEN=1 rewrites
    the files: look at the diff before committing them)."""
    proc = run_cli(
        "compare",
        os.path.relpath(STOCK, ROOT),
        os.path.relpath(MOVABLE, ROOT),
        "--format",
        fmt,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    if UPDATE:
        golden.write_text(proc.stdout)
    assert proc.stdout == golden.read_text()
    if fmt == "text":
        assert max(map(len, proc.stdout.splitlines())) <= 80
    assert not re.search(r"\b(inf|nan|Infinity|NaN)\b", proc.stdout, re.IGNORECASE)


def test_golden_csv_reads_back_one_line_per_metric_stat_side():
    df = pd.read_csv(GOLDEN_CSV)
    assert {"section", "metric", "stat", "side", "value", "change_pct"} <= set(df.columns)
    assert not df.duplicated(["section", "metric", "unit", "stat", "side"]).any()
    assert set(df["stat"]) == set(compare.LATENCY_STATS)
    # the long GFP label and its numbers are on one line
    row = df[(df["metric"].str.contains("GFP_NOIO|", regex=False)) & (df["stat"] == "Amean")]
    assert list(row["value"]) == [0.0, 2307.5]  # mean of 2305 and 2310
    line = next(x for x in GOLDEN_CSV.read_text().splitlines() if "GFP_NOIO|" in x)
    assert line.startswith("zone_gfp,Movable: GFP_NOIO|") and ",guest-stock," in line


def test_text_has_mmtests_statistics(stock, movable):
    text = table_compare([stock, movable])
    lines = text.splitlines()
    for stat in ("Amean", "Stddev", "CoeffVar", "Min", "Max"):
        assert any(x.startswith(f"{stat:<9}DMA32 ") for x in lines), stat
    for q in QUANTILES:
        assert any(x.startswith(f"{q:<9}latency (us) [lower]") for x in lines), q
    # a baseline of 85 pages against 61919: an absolute difference, never +72746%
    cma = next(x for x in lines if x.startswith("Amean    logical CMA"))
    assert cma.endswith("(   +61834)") and "%" not in cma.split("(")[-1]
    assert "+72746%" not in text and "+120050%" not in text and "-1963.71%" not in text


def test_wide_keeps_label_and_numbers_on_one_line(stock, movable):
    text = table_compare([stock, movable], wide=True)
    hits = [x for x in text.splitlines() if "GFP_NOIO|" in x and x.startswith("Amean")]
    assert len(hits) == 1 and hits[0].rstrip().endswith("(    +2308)")
    narrow = table_compare([stock, movable])
    assert not [x for x in narrow.splitlines() if "GFP_NOIO|" in x and "+2308" in x]


def test_direction_markers(table):
    d = table.drop_duplicates(["section", "metric"]).set_index(["section", "metric"])
    assert d.loc[("cma_alloc", "latency"), "direction"] == "lower"
    assert d.loc[("cma_alloc", "success rate"), "direction"] == "higher"
    assert d.loc[("cma_alloc", "failed"), "direction"] == "lower"
    assert pd.isna(d.loc[("zones", "DMA32"), "direction"])


def test_change_on_zero_and_negative_baselines():
    assert compare.change(0.0, 5.0) == (None, 5.0, "abs")
    assert compare.change(0.0, 0.0) == (None, 0.0, "pct")
    pct, diff, shown = compare.change(-62.0, -1280.0)
    assert shown == "abs" and diff == -1218.0
    pct, diff, shown = compare.change(85.0, 61919.0)
    assert shown == "abs" and pct > compare.MAX_PCT
    assert compare.change(100.0, 150.0) == (50.0, 50.0, "pct")


def test_one_side_is_refused():
    proc = run_cli("compare", str(STOCK))
    assert proc.returncode == 2 and not proc.stdout
    assert "needs a baseline and at least one other side" in proc.stderr
    assert "cmaprof report" in proc.stderr  # the fix


def test_same_path_twice_is_refused():
    proc = run_cli("compare", str(STOCK), str(STOCK) + "/")
    assert proc.returncode == 2 and "given twice" in proc.stderr


def test_identical_copies_warn(tmp_path):
    shutil.copytree(STOCK, tmp_path / "copy")
    proc = run_cli("compare", str(STOCK), str(tmp_path / "copy"))
    assert proc.returncode == 0
    assert "warning: copy has the same numbers as guest-stock" in proc.stderr
    assert "differ in" not in proc.stderr


def test_mismatched_sides_warn_and_say_which():
    host = DATA / "recordings" / "host-6.18-anon"
    proc = run_cli("compare", str(STOCK), str(host), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    for what in ("kernel", "layout", "workload"):
        assert f"warning: sides differ in {what}: guest-stock" in proc.stderr, what
    assert "6.1.192" in proc.stderr and "6.18.44" in proc.stderr
    assert "cannot be put down to one of them" in proc.stderr
    assert len(json.loads(proc.stdout)["warnings"]) == 4
    same_kernel = run_cli("compare", str(STOCK), str(MOVABLE))
    assert "differ in layout" in same_kernel.stderr
    assert "differ in kernel" not in same_kernel.stderr
    assert "differ in workload" not in same_kernel.stderr


def test_gfp_classes_in_the_kernels_order(stock):
    """compare spells a class as report does: the kernel's print fmt order."""
    rec = stock.recordings[0]
    order = compare.gfp_order(stock)
    assert order is not None
    for gfp in set(rec.df_page_alloc()["gfp"]):
        assert compare.gfp_label(gfp, order) == gfp
    # a 6.18-style spelling is put into the baseline kernel's order
    assert (
        compare.gfp_label("GFP_KERNEL|__GFP_ZERO|__GFP_COMP", order)
        == "GFP_KERNEL|__GFP_COMP|__GFP_ZERO"
    )


def test_logical_cma_row_lines_up_across_layouts(table, stock, movable):
    """Stock: CMA pageblocks inside DMA32; movable: inside ZONE_MOVABLE. The logical CMA
    row is the same thing on both: the pages whose pfn is in the CMA area."""
    for side, zone in ((stock, "DMA32"), (movable, "Movable")):
        row = _row(table, "zones", LOGICAL_CMA, side.name)
        want = []
        for rec in side.recordings:
            df = rec.df_page_alloc()
            in_area = df[df["cma_area"].notna()]
            assert set(in_area["zone"].astype(str)) <= {zone}
            want.append(float(in_area["pages"].sum()))
        assert row["values"] == want
        assert row["value"] > 0
        zone_row = _row(table, "zones", zone, side.name)
        assert all(c <= z for c, z in zip(row["values"], zone_row["values"]))


def test_logical_cma_row_lines_up_with_a_cma_zone(tmp_path, movable):
    """A kernel whose CMA memory is a zone of its own (ZONE_CMA) and that knows no CMA
    area ranges: the same pages are counted by zone name into the same row."""
    src = movable.recordings[0].path
    dst = tmp_path / "zone-cma" / "iter-1"
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    idx = next(k for k, v in meta["zone_names"].items() if v == "Movable")
    meta["zone_names"][idx] = "CMA"
    meta["cma_areas"] = []
    for z in meta["zones"]:
        if z["name"] == "Movable":
            z["name"] = "CMA"
    (dst / "metadata.json").write_text(json.dumps(meta))
    zone_cma = load_side(dst.parent)
    base = Side(movable.path, movable.recordings[:1])
    df = df_compare([base, zone_cma])
    a = _row(df, "zones", LOGICAL_CMA, base.name)
    b = _row(df, "zones", LOGICAL_CMA, "zone-cma")
    zone = _row(df, "zones", "CMA", "zone-cma")
    # every page of the renamed zone is logical CMA there; on the base only the area's
    assert b["value"] == zone["value"] >= a["value"] > 0
    assert pd.isna(_row(df, "zones", "Movable", "zone-cma")["value"])  # '-' in the text
    assert zone_cma.layout == "ZONE_CMA"


def test_identical_sides_get_no_mark(stock):
    text = table_compare([stock, stock])
    df = df_compare([stock, stock])
    assert (df["test"] == "bootstrap").any()  # a test ran, and found nothing
    assert not df["significant"].any()
    assert not [line for line in text.splitlines() if line.endswith("*")]


def test_stock_vs_movable_marks_the_latency_shift(table, movable):
    """Under --cma-in-movable the anonymous memory fills ZONE_MOVABLE and so the CMA
    area in it: every cma_alloc() has to migrate; on the stock layout almost nothing
    sits in CMA. p50 over 40 calls a side is tested, and differs."""
    calls = 20 * min(N_STOCK, N_MOVABLE)
    tested = [q for q, v in QUANTILES.items() if stats.quantile_testable(calls, v)]
    assert "p50" in tested and "p99" not in tested
    for q in tested:
        row = _row(table, "cma_alloc", "latency", movable.name, q)
        assert row["test"] == "bootstrap" and row["significant"], row
        assert row["ci_low"] > 0
    p99 = _row(table, "cma_alloc", "latency", movable.name, "p99")
    assert p99["test"] == "none" and not p99["significant"]
    text = table_compare([load_side(STOCK), movable])
    marked = [line for line in text.splitlines() if "*" in line[40:] and line.endswith("*")]
    assert len(marked) == len(tested) and all(
        line.startswith(tuple(f"{q:<9}latency" for q in tested)) for line in marked
    )


def test_per_iteration_rows_are_not_marked_with_few_iterations(table, movable):
    """pgalloc_movable is 0 in every stock run and > 0 in every movable run: still no
    mark, because N vs N < 4 cannot reach p <= 0.05 (3 vs 3: smallest exact p 0.10)."""
    vm = _row(table, "vmstat", "pgalloc_movable", movable.name)
    assert min(vm["values"]) > 0
    assert _row(table, "vmstat", "pgalloc_movable", "guest-stock")["values"] == [0.0] * N_STOCK
    assert vm["test"] == "none" and not vm["significant"]
    assert "needs 4" in vm["note"]
    text = table_compare([load_side(STOCK), movable])
    assert "no test possible" in text and "needs 4 per side" in text


def test_four_against_four_marks_complete_separation(movable):
    """The MWU path on real values: the movable runs' Movable-zone pages against the
    stock runs' zeros, 4 a side (existing iterations repeated to make up 4, so only the
    counting changes)."""
    stock = load_side(STOCK)
    a = Side(stock.path, (stock.recordings * 4)[:4])
    b = Side(movable.path, (movable.recordings * 4)[:4])
    df = df_compare([a, b])
    row = _row(df, "zones", "Movable", movable.name)
    assert row["test"] == "mwu" and row["significant"]
    assert row["p_value"] == pytest.approx(2 / 70)
    same = _row(df, "cma_alloc", "calls", movable.name)
    assert same["test"] == "mwu" and not same["significant"]


def test_marks_only_where_tested(table):
    marked = table[table["significant"]]
    assert not marked.empty
    assert set(marked["test"]) <= {"mwu", "bootstrap"}
    assert (marked.loc[marked["test"] == "mwu", "p_value"] <= 0.05).all()
    boot = marked[marked["test"] == "bootstrap"]
    assert ((boot["ci_low"] > 0) | (boot["ci_high"] < 0)).all()
    assert not table[(table["metric"] == "latency") & (table["stat"] == "Max")]["significant"].any()
    assert set(marked["stat"]) <= {"Amean", *QUANTILES}


def test_counterfactual_movable_layout_refuses_nothing(table, movable):
    """CMA inside ZONE_MOVABLE already applies ZONE_CMA's rule: the kernel let only
    __GFP_MOVABLE|__GFP_HIGHMEM allocations in, so the counterfactual finds none."""
    row = _row(table, "counterfactual", "refused by ZONE_CMA rule", movable.name)
    assert row["values"] == [0.0] * N_MOVABLE
    assert _row(table, "counterfactual", "pages placed in CMA", movable.name)["value"] > 0


def test_vmstat_rows_keep_every_counter(table, stock):
    rec = stock.recordings[0]
    end = rec.vmstat("end")
    names = set(table.loc[table["section"] == "vmstat", "metric"])
    for c in end:
        if c.startswith("pgalloc_") or "cma" in c:
            assert c in names
    assert "reserved/alloc_pages_success" in names


def test_cma_alloc_rows_agree_with_the_kernel(table, stock, movable):
    for side in (stock, movable):
        calls = _row(table, "cma_alloc", "calls", side.name)["values"]
        vm_ok = _row(table, "vmstat", "cma_alloc_success", side.name)["values"]
        vm_fail = _row(table, "vmstat", "cma_alloc_fail", side.name)["values"]
        assert calls == [a + b for a, b in zip(vm_ok, vm_fail)]
        assert min(calls) >= 20


def test_json_and_csv(stock, movable):
    obj = json.loads(compare.compare_json([stock, movable]))
    assert [s["name"] for s in obj["sides"]] == ["guest-stock", "guest-movable"]
    assert [s["iterations"] for s in obj["sides"]] == [N_STOCK, N_MOVABLE]
    rows = [r for r in obj["rows"] if r["metric"] == LOGICAL_CMA and r["stat"] == "Amean"]
    assert len(rows) == 2 and [len(r["values"]) for r in rows] == [N_STOCK, N_MOVABLE]
    csv = compare.compare_csv([stock, movable])
    assert csv.splitlines()[0].startswith("section,metric,unit,stat,direction,side,n,value")
    proc = run_cli("compare", str(STOCK), str(MOVABLE), "--format", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["alpha"] == 0.05


def test_missing_side_is_bad_input(tmp_path):
    proc = run_cli("compare", str(STOCK), str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "no such recording" in proc.stderr and "Traceback" not in proc.stderr


def test_host_recording_has_no_cma_rows():
    side = load_side(DATA / "recordings" / "host-6.18-anon")
    other = Side(side.path.parent / "copy", side.recordings)
    text = table_compare([side, other])
    assert "not recorded" in text
    df = df_compare([side, other])
    assert not (df["metric"] == LOGICAL_CMA).any()
    assert math.isclose(_row(df, "zones", "Normal", side.name)["change_pct"], 0.0)
    assert load(side.path).meta["kernel_release"] in text


def test_workload_names_programs_without_their_directories(tmp_path):
    src = DATA / "recordings" / "host-6.18-anon"
    dst = tmp_path / "rel"
    shutil.copytree(src, dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["command"] = [".venv/bin/cmaprof", "workload", "anon:128", "dir=/tmp/x"]
    (dst / "metadata.json").write_text(json.dumps(meta))
    assert compare.workload_of(load(dst)) == "cmaprof workload anon:128 dir=/tmp/x"
