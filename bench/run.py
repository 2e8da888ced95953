"""Interleaved rounds of the page-fault microbenchmark under each tracer.

A round runs every mode once (the order rotates from round to round, so no mode
always follows another); in each mode the untraced microbenchmark runs, the tracer
is started and waited for until it counts, the microbenchmark runs with one thread
and with one thread per CPU, the tracer is stopped, and the untraced microbenchmark
runs again. The ratio of a mode is the median over rounds of (mode's ns per fault /
the mean of its two adjacent untraced runs): paired within the minute, so that a
load change on the shared machine moves both sides. bpf_stats is off unless a mode
turns it on (``aggregate-stats``, ``empty``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import tracers

MODES = (
    "untraced",
    "aggregate",
    "aggregate-stats",
    "aggregate-by-comm",
    "aggregate-by-stack",
    "stream",
    "bpftrace",
    "bpftrace-simple",
    "empty",
    "perf",
)
BENCH_DIR = Path(__file__).resolve().parent


def build(out: Path) -> Path:
    """Compile pagefault.c (gcc -O2 -pthread) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    binary = out / "pagefault"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-pthread", "-o", str(binary), str(BENCH_DIR / "pagefault.c")],
        check=True,
    )
    return binary


#: The fault loop runs SCHED_FIFO (``chrt -f``) when chrt exists: on a shared host
#: other work then cannot preempt it, inside a BPF program or not, so neither the
#: program's run time (bpf_stats counts a preempted run's wait) nor the wall time
#: carries the neighbours' CPU use.
RT_PRIORITY = 10


def microbench(binary: Path, mib: int, iterations: int, threads: int) -> dict[str, Any]:
    rt = ["chrt", "-f", str(RT_PRIORITY)] if shutil.which("chrt") else []
    out = subprocess.run(
        [*rt, str(binary), str(mib), str(iterations), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def uptime() -> str:
    return Path("/proc/loadavg").read_text().strip()


def run_rounds(
    rounds: int,
    modes: tuple[str, ...],
    mib: int,
    iterations: int,
    thread_counts: tuple[int, ...],
    log: Any = print,
) -> list[dict[str, Any]]:
    """Every (round, mode) as a row: timings per thread count and the tracer's numbers."""
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="cmaprof-bench-"))
    binary = build(work / "bin")
    try:
        for r in range(rounds):
            order = modes[r % len(modes) :] + modes[: r % len(modes)]
            for mode in order:
                d = work / f"r{r}-{mode}"
                d.mkdir()
                tr = tracers.make(mode, d)
                load_before = uptime()
                base: list[dict[int, dict[str, Any]]] = []
                if tr is not None:
                    base.append({t: microbench(binary, mib, iterations, t) for t in thread_counts})
                    tr.start()
                timings = {t: microbench(binary, mib, iterations, t) for t in thread_counts}
                res = tr.stop() if tr is not None else tracers.Result()
                if tr is not None:
                    base.append({t: microbench(binary, mib, iterations, t) for t in thread_counts})
                adjacent = {
                    f"base_{kind}ns_per_fault_t{t}": float(
                        np.mean([b[t][f"{kind}ns_per_fault"] for b in base])
                    )
                    for t in thread_counts
                    for kind in ("", "cpu_")
                    if base
                }
                row = {
                    "round": r,
                    "mode": mode,
                    "loadavg_before": load_before,
                    "loadavg_after": uptime(),
                    **{f"ns_per_fault_t{t}": v["ns_per_fault"] for t, v in timings.items()},
                    **{f"cpu_ns_per_fault_t{t}": v["cpu_ns_per_fault"] for t, v in timings.items()},
                    **{f"faults_t{t}": v["faults"] for t, v in timings.items()},
                    **adjacent,
                    **asdict(res),
                    "bpf_ns_per_event": res.bpf_ns_per_event,
                }
                rows.append(row)
                log(
                    f"round {r + 1}/{rounds} {mode:<18} "
                    + " ".join(
                        f"t{t}={v['ns_per_fault']:.0f}ns cpu={v['cpu_ns_per_fault']:.0f}ns"
                        for t, v in timings.items()
                    )
                    + (f" ready={res.ready_s:.2f}s" if res.ready_s is not None else "")
                    + f" load {load_before.split()[0]}"
                )
                shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def summarize(rows: list[dict[str, Any]], thread_counts: tuple[int, ...]) -> pd.DataFrame:
    """Per mode: median ns per fault, paired ratio to untraced, tracer numbers."""
    df = pd.DataFrame(rows)
    base = df[df["mode"] == "untraced"].set_index("round")
    out = []
    for mode, g in df.groupby("mode", sort=False):
        row: dict[str, Any] = {"mode": mode, "rounds": len(g)}
        for t in thread_counts:
            for kind, col in (("", f"ns_per_fault_t{t}"), ("cpu_", f"cpu_ns_per_fault_t{t}")):
                row[f"{kind}median_ns_t{t}"] = float(g[col].median())
                adj = f"base_{col}"
                if adj in g and g[adj].notna().all():
                    # untraced runs just before the tracer started and just after it
                    # stopped: the baseline of the same minute, not of the round
                    paired = g[col] / g[adj]
                    row[f"{kind}delta_ns_t{t}"] = float((g[col] - g[adj]).median())
                else:
                    paired = g.set_index("round")[col] / base[col].reindex(g["round"]).to_numpy()
                row[f"{kind}ratio_t{t}"] = float(np.nanmedian(paired.to_numpy()))
                q1, q3 = np.nanpercentile(paired.to_numpy(), [25, 75])
                row[f"{kind}ratio_iqr_t{t}"] = (float(q1), float(q3))
        for c in (
            "ready_s",
            "startup_s",
            "compile_s",
            "before_compile_s",
            "bpf_ns_per_event",
            "peak_rss_kib",
            "cpu_s",
        ):
            if c not in g:
                row[c] = None
                continue
            vals = pd.to_numeric(g[c], errors="coerce").dropna()
            row[c] = float(vals.median()) if len(vals) else None
        for c in ("events_seen", "events_written", "events_lost", "events_dropped"):
            vals = pd.to_numeric(g[c], errors="coerce").dropna()
            row[c] = int(vals.sum()) if len(vals) else None
        win = pd.to_numeric(g["window_s"], errors="coerce").dropna()
        seen = pd.to_numeric(g["events_written"], errors="coerce")
        row["events_per_s"] = float((seen / g["window_s"]).median()) if len(win) else None
        out.append(row)
    return pd.DataFrame(out)


def paired_difference(
    rows: list[dict[str, Any]], mode: str, base: str, col: str
) -> tuple[float, float, float] | None:
    """Median and IQR over rounds of ``mode``'s ``col`` minus ``base``'s of the same
    round (e.g. what bpf_stats adds to a fault: aggregate-stats minus aggregate)."""
    df = pd.DataFrame(rows)
    if col not in df or not {mode, base} <= set(df["mode"]):
        return None
    a = df[df["mode"] == mode].set_index("round")[col]
    b = df[df["mode"] == base].set_index("round")[col]
    d = (a - b.reindex(a.index)).dropna().to_numpy()
    if not len(d):
        return None
    q1, q3 = np.percentile(d, [25, 75])
    return float(np.median(d)), float(q1), float(q3)


def table(summary: pd.DataFrame, thread_counts: tuple[int, ...]) -> str:
    """The summary as fixed-width text (<= 80 columns: two blocks)."""
    lines = []
    for kind, what in (("cpu_", "CPU time per fault"), ("", "wall time per fault")):
        lines.append(f"{what} (ns) and its ratio to untraced (IQR of the ratio)")
        lines.append(
            f"{'mode':<18}"
            + "".join(f" {'t' + str(t):>10} {'ratio':>6} {'IQR':>11}" for t in thread_counts)
        )
        for r in summary.to_dict(orient="records"):
            cells = ""
            for t in thread_counts:
                lo, hi = r[f"{kind}ratio_iqr_t{t}"]
                cells += (
                    f" {r[f'{kind}median_ns_t{t}']:>10.0f} {r[f'{kind}ratio_t{t}']:>6.3f}"
                    f" {f'{lo:.2f}-{hi:.2f}':>11}"
                )
            lines.append(f"{r['mode']:<18}{cells}")
        lines.append("")
    lines.append(
        f"{'mode':<18} {'ready_s':>7} {'bpf_ns/ev':>9} {'rss_MiB':>7} {'seen':>9} "
        f"{'written':>9} {'lost':>6} {'dropped':>7}"
    )

    def f(v: Any, fmt: str) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        return format(int(v) if fmt == "d" else v, fmt)

    for r in summary.itertuples(index=False):
        d = r._asdict()
        if d["mode"] == "untraced":
            continue
        rss = d["peak_rss_kib"] / 1024 if d["peak_rss_kib"] is not None else None
        lines.append(
            f"{d['mode']:<18} {f(d['ready_s'], '.2f'):>7} {f(d['bpf_ns_per_event'], '.0f'):>9} "
            f"{f(rss, '.0f'):>7} {f(d['events_seen'], 'd'):>9} {f(d['events_written'], 'd'):>9} "
            f"{f(d['events_lost'], 'd'):>6} {f(d['events_dropped'], 'd'):>7}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    u = os.uname()
    return {
        "kernel": u.release,
        "cpus": os.cpu_count(),
        "loadavg": uptime(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "thp": Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip(),
    }


def stream_at_max_rate(threads: int, log: Any = print, mib: int = 256) -> dict[str, Any]:
    """``cmaprof record --events page_alloc`` while every CPU allocates as fast as the
    host can (pagefault's ``populate`` mode): events written, dropped and lost."""
    work = Path(tempfile.mkdtemp(prefix="cmaprof-bench-max-"))
    try:
        binary = build(work / "bin")
        tr = tracers.Cmaprof(work, stream=True, stats="off")
        tr.start()
        out = subprocess.run(
            [str(binary), str(mib), "4", str(threads), "populate"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        bench = json.loads(out)
        res = tr.stop()
        events = int(res.events_written or 0)
        got = {
            "threads": threads,
            "events": events,
            "events_per_s": bench["faults"] / (bench["elapsed_ns"] / 1e9),
            "dropped": res.events_dropped,
            "lost": res.events_lost,
            "notes": res.notes,
        }
        log(f"stream at max rate: {got}")
        return got
    finally:
        shutil.rmtree(work, ignore_errors=True)


def empty_compile_s() -> float:
    """Seconds BCC takes to compile and load an empty program here, now: the floor
    of cmaprof's compile on this machine at this load."""
    from cmaprof.collectors import bccload

    bcc = bccload.import_bcc()
    t = time.perf_counter()
    b = bcc.BPF(text=tracers.EMPTY_PROG.encode())
    b.load_func(b"empty_btf", bcc.BPF.RAW_TRACEPOINT)
    dt = time.perf_counter() - t
    b.cleanup()
    return dt
