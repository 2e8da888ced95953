"""``python -m bench`` (``make bench``): the targets of issue 15, each measured in this
run: tracer overhead on a fault loop (interleaved rounds), the page_alloc program's
run time with bpf_stats' own cost apart, a real workload (``make -j2`` of a generated
C tree), streaming at the host's highest rate, start-up, analysis at scale; prints the
targets table and the detail, and writes JSON.

Environment (for ``make bench``): BENCH_ROUNDS (default 10), BENCH_MIB and
BENCH_ITERATIONS (the microbenchmark's size), BENCH_EVENTS (events of the generated
recording, default 10 M), BENCH_MODES (comma list), BENCH_PAIRS (real-workload
pairs, default 6), BENCH_OUT (JSON path).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _args(argv: list[str] | None) -> argparse.Namespace:
    from bench import run

    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "10")))
    p.add_argument("--mib", type=int, default=int(env("BENCH_MIB", "32")))
    p.add_argument("--iterations", type=int, default=int(env("BENCH_ITERATIONS", "4")))
    p.add_argument("--events", type=int, default=int(env("BENCH_EVENTS", str(10_000_000))))
    p.add_argument("--modes", default=env("BENCH_MODES", ",".join(run.MODES)))
    p.add_argument("--pairs", type=int, default=int(env("BENCH_PAIRS", "6")))
    p.add_argument("--skip-scale", action="store_true", help="no analysis-at-scale part")
    p.add_argument("--skip-workload", action="store_true", help="no real-workload part")
    p.add_argument("-o", "--output", type=Path, default=env("BENCH_OUT"))
    p.add_argument(
        "--guest-manifest",
        type=Path,
        default=env("BENCH_GUEST_MANIFEST"),
        help="target 6 from the iterations of a `cmaprof experiment` run (its experiment.json)",
    )
    a = p.parse_args(argv)
    if a.guest_manifest:  # read it now, not after the rounds: a bad path loses nothing
        from bench import targets

        try:
            targets.guest_iterations(a.guest_manifest)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(
                f"--guest-manifest {a.guest_manifest}: not an experiment.json with runs "
                f"({exc}); give the experiment.json a `cmaprof experiment` or `make demo` wrote"
            )
    return a


def _log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def _extras(a: argparse.Namespace, rows: list, threads: tuple[int, ...], result: dict) -> dict:
    """What the targets need besides the fault loop: guest, bpf_stats' cost, streaming at
    the highest rate, an empty compile, the real workload (also kept in ``result``)."""
    from bench import run, targets, workload

    extra: dict[str, Any] = {
        "guest": targets.guest_iterations(a.guest_manifest)
        if a.guest_manifest
        else "not measured here: needs a TCG guest boot (give --guest-manifest "
        "out/demo/guest/experiment.json of a `make demo`)"
    }
    cost = run.paired_difference(rows, "aggregate-stats", "aggregate", "cpu_ns_per_fault_t1")
    if cost is not None:
        extra["stats_cost_ns"] = cost
    _log("streaming at the host's highest allocation rate (mmap MAP_POPULATE, all CPUs) ...")
    extra["stream_max"] = result["stream_max"] = run.stream_at_max_rate(threads[-1], _log)
    extra["empty_compile_s"] = result["empty_compile_s"] = run.empty_compile_s()
    if not a.skip_workload:
        wdir = Path(tempfile.mkdtemp(prefix="cmaprof-bench-wl-"))
        try:
            extra["workload"] = result["workload"] = workload.run_pairs(wdir, a.pairs, log=_log)
        finally:
            shutil.rmtree(wdir, ignore_errors=True)
    return extra


def _pipeline_and_scale(a: argparse.Namespace, result: dict) -> list[str]:
    """The streaming pipeline's capacity and analysis at scale (kept in ``result``)."""
    from bench import scale

    _log("streaming pipeline capacity (user space, one core) ...")
    pc = result["pipeline"] = scale.pipeline_capacity()
    line = (
        f"\nstreaming pipeline (batches -> Arrow -> IPC chunk on disk, one core): "
        f"{pc['events_per_s_to_chunks'] / 1e6:.2f} M events/s; chunks -> Parquet "
        f"{pc['events_per_s_to_parquet'] / 1e6:.2f} M events/s"
    )
    text = [line]
    if a.skip_scale:
        return text
    _log(f"analysis at scale: generating {a.events} events ...")
    gen = Path(os.environ.get("BENCH_SCALE_DIR", "/tmp")) / "cmaprof-bench-scale"
    try:
        s = result["scale"] = scale.analysis_at_scale(gen, a.events)
    finally:
        shutil.rmtree(gen, ignore_errors=True)
    text.append(
        f"analysis at scale ({s['events']} generated events): load+decode "
        f"{s['load_s']:.2f} s, report {s['report_s']:.2f} s (CLI {s['report_cli_s']:.2f} s), "
        f"compare CLI {s['compare_cli_s']:.2f} s (exit {s['compare_exit']}), "
        f"{s['bytes_per_event']:.2f} bytes/event on disk"
    )
    return text


def _workload_text(w: Mapping[str, Any]) -> str:
    return (
        f"real workload: {w['what']}; untraced median {w['untraced_median_s']:.2f} s; "
        f"cmaprof record (default, counting before the build starts) / untraced per "
        f"pair: median {w['median']:.3f}, range {w['min']:.3f}..{w['max']:.3f} "
        f"({w['runs']} interleaved pairs); the build's CPU time: median "
        f"{w['cpu_median']:.3f}, range {w['cpu_min']:.3f}..{w['cpu_max']:.3f}; "
        f"cmaprof's own CPU time per recording (start-up included): median "
        f"{w['cmaprof_cpu_median_s']:.2f} s"
    )


def main(argv: list[str] | None = None) -> int:
    from bench import run, targets

    a = _args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (BPF, perf -a)", file=sys.stderr)
        return 1
    modes = tuple(m for m in a.modes.split(",") if m)
    if "untraced" not in modes:
        modes = ("untraced",) + modes
    threads = (1, os.cpu_count() or 1) if (os.cpu_count() or 1) > 1 else (1,)
    out = a.output or Path("bench/results") / time.strftime(
        "bench-%Y%m%dT%H%M%SZ.json", time.gmtime()
    )
    params = {"rounds": a.rounds, "mib": a.mib, "iterations": a.iterations}
    result: dict[str, Any] = {
        "machine_start": run.machine(),
        "params": {**params, "threads": threads, "modes": modes},
    }
    rows = run.run_rounds(a.rounds, modes, a.mib, a.iterations, threads, _log)
    summary = run.summarize(rows, threads)
    result["rounds"] = rows
    result["summary"] = summary.to_dict(orient="records")
    extra = _extras(a, rows, threads, result)
    text = [
        (
            f"page-fault microbenchmark: {a.rounds} interleaved rounds, {a.mib} MiB x "
            f"{a.iterations} per thread, threads {threads}, SCHED_FIFO; ratio = median over "
            f"rounds of mode / its adjacent untraced runs (IQR of that ratio)"
        ),
        run.table(summary, threads),
        *_pipeline_and_scale(a, result),
    ]
    result["machine_end"] = run.machine()
    if "scale" in result:
        extra["scale"] = result["scale"]
    tg = targets.evaluate(result["summary"], threads, extra)
    result["targets"] = [dict(t.__dict__, verdict=t.verdict) for t in tg]
    text[:0] = [
        "Issue 15 targets (each measured in this run; ratios against untraced in the same rounds)",
        targets.table(tg),
        "",
    ]
    if result.get("workload"):
        text.append(_workload_text(result["workload"]))
    text.append(
        "bpftrace variants: bpftrace = "
        + tracers_prog("BPFTRACE_PROG")
        + "; bpftrace-simple = "
        + tracers_prog("BPFTRACE_SIMPLE_PROG")
    )
    text.append(
        f"load average: start {result['machine_start']['loadavg']}, "
        f"end {result['machine_end']['loadavg']}"
    )
    report = "\n".join(text)
    result["text"] = report
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report)
    print(f"bench: results in {out}", file=sys.stderr)
    return 0


def tracers_prog(name: str) -> str:
    from bench import tracers

    return str(getattr(tracers, name))


if __name__ == "__main__":
    sys.exit(main())
