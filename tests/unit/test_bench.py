"""The benchmark's own pieces: the C microbenchmark counts what it touches, the
summary pairs rounds, the generated recording is what streaming mode writes."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from bench import run, scale
from cmaprof.analysis import load, tables


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build bench/pagefault.c")
def test_pagefault_counts_every_page(tmp_path):
    binary = run.build(tmp_path)
    out = run.microbench(binary, mib=2, iterations=3, threads=2)
    assert out["faults"] == 2 * 256 * 3 * 2  # 4 KiB pages of 2 MiB, 3 times, 2 threads
    assert out["ns_per_fault"] > 0 and out["cpu_ns_per_fault"] > 0


def test_summary_ratio_is_paired_by_round():
    rows = []
    # round 1 runs on a machine twice as slow: the paired ratio must not move
    for r, slow in ((0, 1.0), (1, 2.0), (2, 1.0)):
        for mode, cost in (("untraced", 1000.0), ("aggregate", 1020.0), ("perf", 1300.0)):
            rows.append(
                {
                    "round": r,
                    "mode": mode,
                    "ns_per_fault_t1": cost * slow,
                    "cpu_ns_per_fault_t1": cost,
                    "ready_s": None if mode == "untraced" else 1.5,
                    "bpf_ns_per_event": None,
                    "peak_rss_kib": 2048,
                    "cpu_s": 1.0,
                    "events_seen": 100,
                    "events_written": 100,
                    "events_lost": 0,
                    "events_dropped": 0,
                    "window_s": 1.0,
                }
            )
    s = run.summarize(rows, (1,)).set_index("mode")
    assert s.loc["aggregate", "ratio_t1"] == pytest.approx(1.02)
    assert s.loc["perf", "cpu_ratio_t1"] == pytest.approx(1.3)
    text = run.table(s.reset_index(), (1,))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "aggregate" in text and "1.020" in text


def test_generated_recording_is_streaming_format(tmp_path):
    out = scale.generate(tmp_path / "gen", 5000, chunk_events=2048)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["generated"]["events"] == 5000
    assert meta["stream"]["balanced"] is True
    assert not (out / "events" / "page_alloc").exists()  # chunks converted and removed
    rec = load(out)
    df = rec.df_page_alloc_events()
    assert len(df) == 5000
    cube = pq.read_table(out / "tables" / "page_alloc.parquet").to_pandas()
    assert int(cube["allocs"].sum()) == 5000
    assert int(cube["pages"].sum()) == int((2 ** df["order"].astype(int)).sum())
    # the template's allocation classes, decoded like the cube
    assert set(df["gfp"].astype(str)) <= set(rec.df_page_alloc()["gfp"].astype(str))
    assert "5000" in tables.table_report(rec)
