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


def _summary(**ratios):
    """Summary records as run.summarize gives them: cpu_ratio_t1/t2 per mode."""
    out = []
    for mode, (r1, r2) in ratios.items():
        out.append({"mode": mode, "cpu_ratio_t1": r1, "cpu_ratio_t2": r2})
    return out


def test_targets_judge_each_item_from_the_run():
    from bench import targets

    summary = _summary(
        untraced=(1.0, 1.0),
        aggregate=(1.02, 1.04),
        bpftrace=(1.10, 1.12),
        **{"bpftrace-simple": (1.06, 1.20)},
        stream=(1.10, 1.16),
    )
    for r in summary:
        if r["mode"] == "aggregate":
            r.update(startup_s=0.8, compile_s=0.5)
    summary.append({"mode": "aggregate-stats", "bpf_ns_per_event": 120.0})
    summary.append({"mode": "empty", "bpf_ns_per_event": 40.0})
    extra = {
        "workload": {"name": "make -j2", "median": 1.005, "min": 0.99, "max": 1.02, "runs": 6},
        "stats_cost_ns": (25.0, 20.0, 30.0),
        "stream_max": {"events": 10, "events_per_s": 1e6, "dropped": 0, "lost": 0},
        "scale": {"events": 10_000_000, "load_s": 1.2, "report_cli_s": 0.7},
    }
    tg = targets.evaluate(summary, (1, 2), extra)
    got = {(t.item, t.what): t.verdict for t in tg}
    assert got[("1", "aggregate CPU/fault, 1 thr")] == "met"
    assert got[("1", "aggregate CPU/fault, 2 thr")] == "MISSED"  # 1.04 > 1.03
    assert got[("1", "vs bpftrace, 1 thr")] == "met"  # 1.02 <= 1.10 - 0.05
    assert got[("1", "vs bpftrace-simple, 1 thr")] == "MISSED"  # 1.02 > 1.06 - 0.05
    assert got[("2", "page_alloc program ns/event")] == "MISSED"
    assert got[("2", "bpf_stats' own cost per fault")] == "(info)"
    assert got[("3", "make -j2 wall time")] == "met"
    assert got[("4", "stream CPU/fault, 2 thr")] == "MISSED"
    assert got[("4", "stream loss at max rate")] == "met"
    assert got[("5", "start-up to first counted event")] == "met"
    assert got[("6", "TCG guest iteration")] == "not measured"
    assert got[("7", "report through the CLI")] == "MISSED"
    text = targets.table(tg)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "bound: an empty tp_btf program, 40 ns/event" in text


def test_by_modes_ratio_shown_without_a_target(tmp_path):
    """Issue 17 item 4: --by comm and --by stack against untraced, one info row per
    thread count; absent modes: no row."""
    from bench import run, targets, tracers

    assert {"aggregate-by-comm", "aggregate-by-stack"} <= set(run.MODES)
    tr = tracers.make("aggregate-by-stack", tmp_path)
    assert tr.argv()[-2:] == ["--by", "stack"]
    summary = _summary(
        untraced=(1.0, 1.0),
        aggregate=(1.01, 1.02),
        **{"aggregate-by-comm": (1.05, 1.06), "aggregate-by-stack": (1.31, 1.42)},
    )
    rows = [t for t in targets.evaluate(summary, (1, 2), {}) if t.item == "17.4"]
    assert [(t.what, t.measured, t.verdict) for t in rows] == [
        ("--by comm / --by stack, 1 thr", "1.050x / 1.310x", "(info)"),
        ("--by comm / --by stack, 2 thr", "1.060x / 1.420x", "(info)"),
    ]
    assert "aggregate 1.010x" in rows[0].note
    assert max(len(line) for line in targets.table(rows).splitlines()) <= 80
    assert not [t for t in targets.evaluate(_summary(untraced=(1.0, 1.0)), (1,), {})
                if t.item == "17.4"]  # fmt: skip


def test_targets_never_met_without_a_figure():
    from bench import targets

    tg = targets.evaluate(_summary(untraced=(1.0, 1.0)), (1, 2), {})
    assert all(t.met is None for t in tg)
    assert {t.item for t in tg} == {"1", "2", "3", "5", "6", "7"}  # 4 needs a stream mode


def test_paired_difference_is_per_round():
    rows = []
    for r, busy in ((0, 0.0), (1, 500.0), (2, 0.0)):  # round 1 on a busier machine
        rows.append({"round": r, "mode": "aggregate", "cpu_ns_per_fault_t1": 1000.0 + busy})
        rows.append({"round": r, "mode": "aggregate-stats", "cpu_ns_per_fault_t1": 1030.0 + busy})
    med, q1, q3 = run.paired_difference(rows, "aggregate-stats", "aggregate", "cpu_ns_per_fault_t1")
    assert med == pytest.approx(30.0) and q1 == pytest.approx(30.0) and q3 == pytest.approx(30.0)
    assert run.paired_difference(rows, "perf", "aggregate", "cpu_ns_per_fault_t1") is None


def test_generated_c_tree_builds(tmp_path):
    from bench import workload

    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and cc")
    tree = workload.generate(tmp_path / "tree", files=2, funcs=2)
    assert workload._build(tree, 2) > 0
    assert (tree / "prog").exists()


def test_summary_prefers_the_adjacent_untraced_runs():
    rows = [{"round": 0, "mode": "untraced", "cpu_ns_per_fault_t1": 1000.0}]
    # the round's own untraced run was on a quiet minute; the traced mode's minute was
    # busier, and its two adjacent untraced runs say so
    rows.append(
        {
            "round": 0,
            "mode": "aggregate",
            "cpu_ns_per_fault_t1": 1530.0,
            "base_cpu_ns_per_fault_t1": 1500.0,
        }
    )
    for r in rows:
        r.setdefault("ns_per_fault_t1", r["cpu_ns_per_fault_t1"])
        r.setdefault("base_ns_per_fault_t1", r.get("base_cpu_ns_per_fault_t1"))
        for c in ("ready_s", "bpf_ns_per_event", "peak_rss_kib", "cpu_s", "window_s"):
            r.setdefault(c, None)
        for c in ("events_seen", "events_written", "events_lost", "events_dropped"):
            r.setdefault(c, 0)
    s = run.summarize(rows, (1,)).set_index("mode")
    assert s.loc["aggregate", "cpu_ratio_t1"] == pytest.approx(1.02)
    assert s.loc["aggregate", "cpu_delta_ns_t1"] == pytest.approx(30.0)


def test_guest_iteration_target_from_an_experiment_manifest(tmp_path):
    """Target 6 from a real experiment's iterations: the slowest one decides."""
    import json

    from bench import targets

    man = tmp_path / "experiment.json"
    runs = {"a/iter-01": {"status": "ok", "seconds": 463.6},
            "b/iter-01": {"status": "ok", "seconds": 538.6},
            "c/iter-01": {"status": "failed", "seconds": 5.0}}  # fmt: skip
    man.write_text(json.dumps({"runs": runs}))
    got = targets.guest_iterations(man)
    assert sorted(got["seconds"]) == [463.6, 538.6]
    (t,) = [x for x in targets.evaluate([], (1,), {"guest": got}) if x.item == "6"]
    assert t.met is False and t.measured == "9.0 min", t
    (t,) = [x for x in targets.evaluate([], (1,), {"guest": "no guest"}) if x.item == "6"]
    assert t.met is None


def test_guest_iteration_target_shows_the_compile(tmp_path):
    """Target 6's detail names the slowest BCC compile of the iterations' recordings."""
    import json

    from bench import targets

    for side, compile_s in (("a", 120.4), ("b", 145.1)):
        rec = tmp_path / "recordings" / side / "iter-01"
        rec.mkdir(parents=True)
        (rec / "metadata.json").write_text(json.dumps({"startup_s": {"compile": compile_s}}))
    runs = {f"{s}/iter-01": {"status": "ok", "seconds": 300.0,
                             "recording": f"recordings/{s}/iter-01"} for s in "ab"}  # fmt: skip
    man = tmp_path / "experiment.json"
    man.write_text(json.dumps({"runs": runs}))
    got = targets.guest_iterations(man)
    assert sorted(got["compile_s"]) == [120.4, 145.1]
    (t,) = [x for x in targets.evaluate([], (1,), {"guest": got}) if x.item == "6"]
    assert t.note.endswith("; BCC compile in the guest 145 s (slowest)"), t
