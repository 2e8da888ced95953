"""The report on a small checked-in recording: golden text, JSON shape, bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cmaprof.analysis import load, load_many, tables
from cmaprof.analysis.page_alloc import df_check
from cmaprof.errors import BadInput
from tests.conftest import DATA, ROOT, run_cli

REC = DATA / "recordings" / "host-6.18-anon"
REL = os.path.relpath(REC, ROOT)
GOLDEN = DATA / "golden"
UPDATE = os.environ.get("CMAPROF_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("fmt,ext", [("text", "txt"), ("json", "json"), ("csv", "csv")])
def test_report_golden(fmt, ext):
    proc = run_cli("report", REL, "--format", fmt, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    golden = GOLDEN / f"host-6.18-anon.report.{ext}"
    if UPDATE:
        golden.write_text(proc.stdout)
    assert proc.stdout == golden.read_text()


def test_text_report_width():
    text = tables.table_report(load(REC))
    assert max(map(len, text.splitlines())) <= 80


def _vmstat(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def test_check_uses_the_saved_vmstat_snapshots():
    rec = load(REC)
    start, end = _vmstat(REC / "proc/start/vmstat"), _vmstat(REC / "proc/end/vmstat")
    chk = df_check(rec).set_index("zone")
    assert chk.loc["Normal", "vmstat_pages"] == end["pgalloc_normal"] - start["pgalloc_normal"]
    assert set(chk.index) >= {"DMA", "DMA32", "Normal", "Movable"}
    traced = int(rec.df_page_alloc().query("zone == 'Normal'")["pages"].sum())
    assert chk.loc["Normal", "traced_pages"] == traced


def test_json_tables_and_rows():
    obj = json.loads(tables.report_json(load(REC)))
    assert {"zones", "zone_gfp", "check"} <= set(obj)
    assert set(obj["zones"][0]) == {"node", "zone", "pages", "allocs"}
    assert set(obj["zone_gfp"][0]) == {
        "node",
        "zone",
        "gfp",
        "order",
        "migratetype",
        "cma_area",
        "pages",
        "allocs",
    }
    assert set(obj["check"][0]) >= {
        "zone",
        "traced_pages",
        "bulk_pages",
        "vmstat_pages",
        "diff_pct",
        "counter",
        "source",
        "unit",
        "traced",
        "kernel",
    }
    assert {"cma_alloc", "migrate", "recording", "failed"} <= set(obj)
    assert all(r["cma_area"] is None for r in obj["zone_gfp"])


def test_decoded_frame_dtypes():
    df = load(REC).df_page_alloc()
    assert str(df["gfp_flags"].dtype) == "uint64" and str(df["pages"].dtype) == "uint64"
    assert str(df["zone"].dtype) == "category" and str(df["migratetype"].dtype) == "category"
    assert df["gfp"].str.startswith("GFP_").any()


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "rec"
    shutil.copytree(REC, dst)
    return dst


def _damage_metadata(rec: Path, text: str) -> None:
    (rec / "metadata.json").write_text(text)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: _damage_metadata(r, "{not json"), "metadata.json: not valid JSON"),
        (lambda r: _damage_metadata(r, '{"tool": "perf"}'), "not written by cmaprof"),
        (
            lambda r: _damage_metadata(r, json.dumps({"tool": "cmaprof", "format_version": 99})),
            "format version 99 is newer",
        ),
        (lambda r: (r / "metadata.json").unlink(), "metadata.json: missing"),
        (
            lambda r: (r / "tables/page_alloc.parquet").write_bytes(
                (r / "tables/page_alloc.parquet").read_bytes()[:100]
            ),
            "page_alloc.parquet: unreadable",
        ),
        (
            lambda r: shutil.copy(
                r / "tables/page_alloc_fail.parquet", r / "tables/page_alloc.parquet"
            ),
            "page_alloc.parquet: column 'node' missing",
        ),
        (
            lambda r: (r / "formats/kmem/mm_page_alloc/format").write_text("garbage\n"),
            "mm_page_alloc",
        ),
    ],
)
def test_bad_recordings_give_one_line_and_exit_2(tmp_path, damage, message):
    rec = _copy(tmp_path)
    damage(rec)
    proc = run_cli("report", str(rec))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cmaprof: error: "), proc.stderr
    assert message in lines[0]
    with pytest.raises(BadInput):
        tables.table_report(load(rec))


def test_not_a_recording(tmp_path):
    proc = run_cli("report", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such recording directory" in proc.stderr


def test_incomplete_recording_still_loads(tmp_path):
    rec = _copy(tmp_path)
    meta = json.loads((rec / "metadata.json").read_text())
    meta["complete"] = False
    (rec / "metadata.json").write_text(json.dumps(meta))
    shutil.rmtree(rec / "tables")
    text = tables.table_report(load(rec))
    assert "INCOMPLETE" in text


def test_load_many_directory_of_iterations(tmp_path):
    for i in range(3):
        shutil.copytree(REC, tmp_path / f"iter{i}")
    recs = load_many([tmp_path])
    assert len(recs) == 3


def test_duckdb_reads_a_directory_of_recordings(tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb not installed (pip install duckdb)")
    for i in range(2):
        shutil.copytree(REC, tmp_path / f"run{i}")
    con = duckdb.connect()
    rows = con.execute(
        "SELECT zone_idx, sum(pages) AS pages, count(DISTINCT filename) AS runs "
        f"FROM read_parquet('{tmp_path}/*/tables/page_alloc.parquet', filename=true) "
        "GROUP BY zone_idx"
    ).fetchall()
    traced = int(load(REC).df_page_alloc()["pages"].sum())
    assert rows == [(2, 2 * traced, 2)]


BLOCKERS = DATA / "recordings" / "guest-6.1-blockers"


def test_counts_of_a_probe_that_did_not_run_are_dashes():
    """guest-6.1-blockers ran without the migrate probe: the kernel migrated 1076 pages,
    cmaprof counted none because it did not look; '-' with the reason, not -100%."""
    rec = load(BLOCKERS)
    assert "migrate" not in rec.meta["probes"]
    chk = tables.check.df_check(rec).set_index("counter")
    assert chk.loc["pgmigrate_success", "kernel"] == 1076
    assert chk["traced"].isna()["pgmigrate_success"]
    assert chk["diff_pct"].isna()["pgmigrate_success"]
    assert (
        "migrate probe did not run: not asked for (--probes)"
        in chk.loc["pgmigrate_success", "note"]
    )
    text = tables.table_check(rec)
    line = next(x for x in text.splitlines() if x.startswith("pgmigrate_success"))
    assert line.split()[-3:] == ["-", "1076", "-"]
    assert "-: migrate probe did not run: not asked for (--probes)" in text
    assert "-100.00%" not in text


def test_percentiles_only_with_enough_calls():
    """One call (blockers), 6 calls (guest-6.1-cma), 20 calls (a stock iteration):
    p50 needs 10 calls, p90 50, p99 500; the maximum is always shown."""
    for name, shown in (
        ("guest-6.1-blockers", []),
        ("guest-6.1-cma", []),
        ("guest-stock/iter-1", ["p50"]),
    ):
        rec = load(DATA / "recordings" / name)
        summary = tables.cma.df_cma_summary(rec)
        got = [q for q in ("p50", "p90", "p99") if summary[f"{q}_ns"].notna().all()]
        assert got == shown, name
        text = tables.table_cma(rec)
        row = text.splitlines()[2].split()
        assert row[7:10].count("-") == 3 - len(shown) and row[10] != "-"
        assert f"reserved has {len(tables.cma.df_cma_calls(rec))}" in text
        assert "too few calls to estimate" in text


@pytest.mark.parametrize(
    "name", ["host-6.18-anon", "guest-6.1-blockers", "guest-6.1-cma", "guest-stock/iter-1"]
)
def test_no_inf_in_any_report(name):
    rec = load(DATA / "recordings" / name)
    for text in (tables.table_report(rec), tables.report_json(rec)):
        assert "inf" not in text.replace("info", "").replace("infer", "").lower(), name
        assert "NaN" not in text


def test_check_without_a_kernel_count_is_an_absolute_difference():
    from cmaprof.analysis.cma import _row

    row = _row("x", "/proc/vmstat", "pages", 5, 0)
    assert row["diff_pct"] is None
    assert _row("x", "/proc/vmstat", "pages", 0, 0)["diff_pct"] == 0.0


def test_wide_report_keeps_each_gfp_class_on_the_line_of_its_numbers():
    rec = load(BLOCKERS)
    proc = run_cli("report", str(BLOCKERS), "--wide")
    assert proc.returncode == 0, proc.stderr
    hits = [x for x in proc.stdout.splitlines() if x.endswith("__GFP_HARDWALL|__GFP_MOVABLE")]
    # the buffer-head class: in the zone table, the blockers' origin and the counterfactual
    assert len(hits) >= 3 and all(any(c.isdigit() for c in x.split("GFP_")[0]) for x in hits)
    gfp = tables.page_alloc.df_gfp_classes(rec)["gfp"]
    wide = proc.stdout.splitlines()
    for g in gfp.head(12):
        assert any(x.endswith(" " + g) and x.split()[0].isdigit() for x in wide), g
    narrow = tables.table_report(rec)
    assert max(map(len, narrow.splitlines())) <= 80


def test_report_and_compare_spell_a_gfp_class_alike():
    """One class, one spelling: the kernel's print fmt order, in report and compare."""
    from cmaprof.analysis import compare

    side = compare.load_side(DATA / "recordings" / "guest-stock")
    df = compare.df_compare([side, side])
    compared = {m.split(": ", 1)[1] for m in df.loc[df["section"] == "zone_gfp", "metric"]} - {
        "(other classes)"
    }
    reported: set[str] = set()
    for rec in side.recordings:
        reported |= set(tables.page_alloc.df_gfp_classes(rec)["gfp"])
    assert compared and compared <= reported


def test_csv_one_file_per_table_that_pandas_reads(tmp_path):
    out = tmp_path / "csv"
    proc = run_cli("report", str(REC), "--format", "csv", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    names = set(tables.report_tables(load(REC)))
    assert {p.stem for p in out.glob("*.csv")} == names
    zg = pd.read_csv(out / "zone_gfp.csv")
    want = tables.page_alloc.df_zone_gfp(load(REC))
    assert len(zg) == len(want) and zg["pages"].sum() == want["pages"].sum()
    chk = pd.read_csv(out / "check.csv")
    assert "pgalloc_normal" in set(chk["counter"])


def test_csv_one_table_to_stdout_and_unknown_table():
    proc = run_cli("report", str(REC), "--format", "csv", "--table", "check")
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(io.StringIO(proc.stdout))
    assert list(df.columns[:3]) == ["counter", "source", "unit"]
    bad = run_cli("report", str(REC), "--format", "csv", "--table", "nope")
    assert bad.returncode == 2 and "its tables: recording, zones" in bad.stderr


def test_json_numbers_are_numbers_or_null():
    """No string stands for a number: an undefined change is null, never "inf"."""
    for name in ("host-6.18-anon", "guest-6.1-blockers"):
        obj = json.loads(tables.report_json(load(DATA / "recordings" / name)))
        for rows in obj.values():
            for row in rows:
                for k, v in row.items():
                    if k.endswith(("_pct", "_ns", "pages", "traced", "kernel")):
                        assert v is None or isinstance(v, (int, float)), (name, k, v)
        chk = {r["counter"]: r for r in obj["check"]}
        if name == "guest-6.1-blockers":
            assert chk["pgmigrate_success"]["traced"] is None
            assert chk["pgmigrate_success"]["kernel"] == 1076
            assert obj["cma_alloc"][0]["p50_ns"] is None
