"""The report on a small checked-in recording: golden text, JSON shape, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

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
