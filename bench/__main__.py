"""``python -m bench`` (``make bench``): tracer overhead, start-up, streaming capacity,
analysis at scale; prints a table and writes JSON.

Environment (for ``make bench``): BENCH_ROUNDS (default 10), BENCH_MIB and
BENCH_ITERATIONS (the microbenchmark's size), BENCH_EVENTS (events of the generated
recording, default 10 M), BENCH_MODES (comma list), BENCH_OUT (JSON path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    from bench import run, scale

    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "10")))
    p.add_argument("--mib", type=int, default=int(env("BENCH_MIB", "32")))
    p.add_argument("--iterations", type=int, default=int(env("BENCH_ITERATIONS", "4")))
    p.add_argument("--events", type=int, default=int(env("BENCH_EVENTS", str(10_000_000))))
    p.add_argument("--modes", default=env("BENCH_MODES", ",".join(run.MODES)))
    p.add_argument("--skip-scale", action="store_true", help="no analysis-at-scale part")
    p.add_argument("-o", "--output", type=Path, default=env("BENCH_OUT"))
    a = p.parse_args(argv)
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
    result: dict[str, Any] = {
        "machine_start": run.machine(),
        "params": {
            "rounds": a.rounds,
            "mib": a.mib,
            "iterations": a.iterations,
            "threads": threads,
            "modes": modes,
        },
    }

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    rows = run.run_rounds(a.rounds, modes, a.mib, a.iterations, threads, log)
    summary = run.summarize(rows, threads)
    result["rounds"] = rows
    result["summary"] = summary.to_dict(orient="records")
    text = [
        (
            f"page-fault microbenchmark: {a.rounds} interleaved rounds, {a.mib} MiB x "
            f"{a.iterations} per thread, threads {threads}; ratio = median over rounds of "
            f"mode / untraced of the same round (IQR of that ratio)"
        ),
        run.table(summary, threads),
    ]
    log("streaming pipeline capacity (user space, one core) ...")
    result["pipeline"] = scale.pipeline_capacity()
    pc = result["pipeline"]
    text.append(
        f"\nstreaming pipeline (batches -> Arrow -> IPC chunk on disk, one core): "
        f"{pc['events_per_s_to_chunks'] / 1e6:.2f} M events/s; chunks -> Parquet "
        f"{pc['events_per_s_to_parquet'] / 1e6:.2f} M events/s"
    )
    if not a.skip_scale:
        log(f"analysis at scale: generating {a.events} events ...")
        gen = Path(os.environ.get("BENCH_SCALE_DIR", "/tmp")) / "cmaprof-bench-scale"
        try:
            result["scale"] = scale.analysis_at_scale(gen, a.events)
        finally:
            import shutil

            shutil.rmtree(gen, ignore_errors=True)
        s = result["scale"]
        text.append(
            f"analysis at scale ({s['events']} generated events): load+decode "
            f"{s['load_s']:.2f} s, report {s['report_s']:.2f} s (CLI {s['report_cli_s']:.2f} s), "
            f"compare CLI {s['compare_cli_s']:.2f} s (exit {s['compare_exit']}), "
            f"{s['bytes_per_event']:.2f} bytes/event on disk"
        )
    result["machine_end"] = run.machine()
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


if __name__ == "__main__":
    sys.exit(main())
