#!/usr/bin/env python3
"""Soak test of ``cmaprof record`` under the highest page-allocation rate this machine gives.

    .venv/bin/python scripts/soak.py --duration 600            # make soak (10 minutes)
    .venv/bin/python scripts/soak.py --duration 75 --json r.json

What it does (root needed, as for ``record``):

1. starts ``cmaprof record -o OUT -i 1 --probes page_alloc`` (system-wide, no command)
   and waits until counting has started (``proc/start/vmstat`` exists);
2. records ``--idle`` seconds with no load (the idle intervals of the size check);
3. starts one hammer per CPU: a process that maps 64 MiB of anonymous memory with THP
   off, writes every byte (one page fault, one order-0 ``mm_page_alloc`` per 4 KiB page)
   and unmaps it, as fast as it can, for the rest of the run;
4. after ``--warmup`` seconds samples the recording process's RSS (``VmRSS`` of
   ``/proc/PID/status``) every ``--sample`` seconds until ``--duration`` seconds of load;
5. stops the hammers, SIGINTs the recording, loads it and prints (and writes as JSON):
   RSS min/median/max and growth (median of the last quarter of the samples against the
   median of the first quarter), the events seen (the page_alloc program's run count in
   the bpf_stats windows, and traced pages), lost and dropped counts, the check of traced pages
   against ``/proc/vmstat``, and the recording's size per interval under load against
   idle intervals (it must grow with intervals, not with events).

Exit status 1 when a limit is broken: RSS growth >= ``--max-growth-pct`` (5), a
``pgalloc_*`` check off by more than 1%, a loaded interval more than 1.5x the bytes of
an idle one (or of the median loaded one), or a load too weak (under 2x the idle event
rate) for the size check to mean anything. ``hammer`` is the internal subcommand run by
each load process.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HAMMER_MIB = 64


def cmaprof_cmd() -> list[str]:
    script = Path(sys.executable).with_name("cmaprof")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cmaprof"]


def hammer(mib: int = HAMMER_MIB) -> None:
    """Fault in ``mib`` MiB of anonymous memory page by page, unmap, repeat (forever)."""
    size = mib << 20
    zeros = b"\1" * size
    while True:
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)  # one 4 KiB allocation per fault
        m[:] = zeros
        m.close()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _wait_for(path: Path, proc: subprocess.Popen, limit_s: float) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"soak: cmaprof record exited with {proc.returncode} before counting")
        if time.monotonic() - t0 > limit_s:
            raise SystemExit(f"soak: {path} did not appear within {limit_s:.0f} s")
        time.sleep(0.1)


def _quarter_median(xs: list[int], last: bool) -> float:
    n = max(1, len(xs) // 4)
    return statistics.median(xs[-n:] if last else xs[:n])


def size_per_interval(out: Path, load_from_ns: int) -> dict:
    """Bytes of every series part per interval, split at ``load_from_ns`` (the start of
    the load, relative to the recording's start), and the events in each."""
    import pyarrow.parquet as pq

    rows = []
    for part in sorted((out / "series" / "page_alloc").glob("part-*.parquet")):
        t = pq.read_table(part, columns=["t_start_ns", "t_end_ns", "allocs"])
        if t.num_rows == 0:
            continue
        t0 = min(t.column("t_start_ns").to_pylist())
        t1 = max(t.column("t_end_ns").to_pylist())
        n = part.name
        size = sum(
            p.stat().st_size for p in (out / "series").glob(f"*/{n}") if p.is_file()
        )  # the interval's parts in every series
        rows.append(
            {
                "part": n,
                "t_start_ns": t0,
                "t_end_ns": t1,
                "events": sum(t.column("allocs").to_pylist()),
                "bytes": size,
                "rows": t.num_rows,
            }
        )
    # intervals wholly before the load, and wholly under it (not the first one, which
    # straddles the start of the hammers, nor the last, cut short by the stop)
    idle = [r for r in rows[:-1] if r["t_end_ns"] <= load_from_ns]
    busy = [r for r in rows[1:-1] if r["t_start_ns"] >= load_from_ns]
    return {"intervals": rows, "idle": idle, "busy": busy}


def summarize(out: Path, samples: list[tuple[float, int]], load_from_ns: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from cmaprof.analysis import check
    from cmaprof.analysis.loaded import load

    rec = load(out)
    meta = rec.meta
    rss = [kib for _, kib in samples]
    first_q, last_q = _quarter_median(rss, False), _quarter_median(rss, True)
    program = (meta.get("page_alloc") or {}).get("program") or "page_alloc_raw"
    stats = (meta.get("bpf_stats") or {}).get(program) or {}
    pa = rec.df_page_alloc()
    ck = check.df_check(rec)
    vm_rows = ck[ck["counter"].astype(str).str.startswith("pgalloc_") & (ck["traced"] > 0)]
    sizes = size_per_interval(out, load_from_ns)

    def per(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows) if rows else float("nan")

    total_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    res = {
        "recording": str(out),
        "duration_s": (meta.get("duration_ns") or 0) / 1e9,
        "rss_samples": len(rss),
        "rss_kib_min": min(rss),
        "rss_kib_median": statistics.median(rss),
        "rss_kib_max": max(rss),
        "rss_kib_first_quarter_median": first_q,
        "rss_kib_last_quarter_median": last_q,
        "rss_growth_pct": 100.0 * (last_q - first_q) / first_q,
        "rss_growth_max_over_first_pct": 100.0 * (max(rss) - rss[0]) / rss[0],
        "program": program,
        "events_bpf_run_cnt": int(stats.get("run_cnt", 0)),
        "bpf_ns_per_event": (stats["run_time_ns"] / stats["run_cnt"])
        if stats.get("run_cnt")
        else None,
        "traced_allocs": int(pa["allocs"].sum()),
        "traced_pages": int(pa["pages"].sum()),
        "lost": {k: int(v) for k, v in (meta.get("lost") or {}).items()},
        "dropped": {k: int(v) for k, v in (meta.get("dropped") or {}).items() if v},
        "check": [
            {
                "counter": str(r.counter),
                "traced": int(r.traced),
                "kernel": int(r.kernel),
                "diff_pct": float(r.diff_pct),
            }
            for r in vm_rows.itertuples(index=False)
        ],
        "recording_bytes": total_bytes,
        "intervals": len(sizes["intervals"]),
        "idle_intervals": len(sizes["idle"]),
        "busy_intervals": len(sizes["busy"]),
        "idle_bytes_per_interval": per(sizes["idle"], "bytes"),
        "busy_bytes_per_interval": per(sizes["busy"], "bytes"),
        "idle_events_per_interval": per(sizes["idle"], "events"),
        "busy_events_per_interval": per(sizes["busy"], "events"),
        "busy_bytes_per_interval_max": max((r["bytes"] for r in sizes["busy"]), default=0),
        "complete": bool(meta.get("complete")),
        "stop_reason": meta.get("stop_reason"),
    }
    return res


def verdict(res: dict, max_growth_pct: float) -> list[str]:
    bad = []
    if not res["complete"]:
        bad.append("recording not complete")
    if res["rss_growth_pct"] >= max_growth_pct:
        bad.append(f"RSS grew {res['rss_growth_pct']:.2f}% (limit {max_growth_pct}%)")
    for c in res["check"]:
        if c["traced"] >= 10_000 and abs(c["diff_pct"]) > 1.0:
            bad.append(f"{c['counter']}: traced {c['traced']} vs vmstat {c['kernel']}")
    if res["busy_intervals"] and res["idle_intervals"]:
        ev_ratio = res["busy_events_per_interval"] / max(1.0, res["idle_events_per_interval"])
        by_ratio = res["busy_bytes_per_interval"] / res["idle_bytes_per_interval"]
        res["events_ratio_load_vs_idle"] = ev_ratio
        res["bytes_ratio_load_vs_idle"] = by_ratio
        if ev_ratio < 2:
            bad.append(
                f"the load gave only {ev_ratio:.1f}x the idle event rate: the size check "
                f"needs 2x (is the machine busy?)"
            )
        elif by_ratio > 1.5:
            bad.append(
                f"size grows with events: {by_ratio:.2f}x the bytes per interval for "
                f"{ev_ratio:.1f}x the events"
            )
        if res["busy_bytes_per_interval_max"] > 1.5 * res["busy_bytes_per_interval"]:
            bad.append("an interval under load is over 1.5x the median interval size")
    else:
        bad.append("no idle or no loaded whole interval to compare sizes")
    return bad


def text(res: dict) -> str:
    lost = sum(res["lost"].values())
    lines = [
        (
            f"soak: {res['duration_s']:.0f} s recorded, {res['rss_samples']} RSS samples "
            f"of cmaprof record after warm-up"
        ),
        (
            f"  RSS KiB: min {res['rss_kib_min']}  median {res['rss_kib_median']:.0f}  "
            f"max {res['rss_kib_max']}  growth {res['rss_growth_pct']:+.2f}% "
            f"(last vs first quarter medians)"
        ),
        f"  events: {res['program']} ran {res['events_bpf_run_cnt']} times in the bpf_stats windows"
        + (f" ({res['bpf_ns_per_event']:.0f} ns each)" if res["bpf_ns_per_event"] else "")
        + f"; traced {res['traced_allocs']} allocations, {res['traced_pages']} pages",
        f"  lost {lost}  dropped {res['dropped'] or 'none'}",
    ]
    for c in res["check"]:
        lines.append(
            f"  check {c['counter']}: traced {c['traced']} vmstat {c['kernel']} "
            f"({c['diff_pct']:+.3f}%)"
        )
    lines.append(
        f"  size: {res['recording_bytes']} bytes for {res['intervals']} intervals; per "
        f"interval idle {res['idle_bytes_per_interval']:.0f} B "
        f"({res['idle_events_per_interval']:.0f} events), under load "
        f"{res['busy_bytes_per_interval']:.0f} B ({res['busy_events_per_interval']:.0f} "
        f"events), max {res['busy_bytes_per_interval_max']} B"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = subprocess.Popen(
        [*cmaprof_cmd(), "record", "-o", str(out), "-i", "1", "--probes", "page_alloc"]
        + (["--force"] if args.force else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    hammers: list[subprocess.Popen] = []
    samples: list[tuple[float, int]] = []
    try:
        _wait_for(out / "proc/start/vmstat", rec, 300)
        t_rec = time.monotonic()
        time.sleep(args.idle)
        load_from_ns = int((time.monotonic() - t_rec) * 1e9)
        for _ in range(args.cpus or os.cpu_count() or 1):
            hammers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "hammer"],
                    preexec_fn=(lambda: os.nice(args.nice)) if args.nice else None,  # noqa: PLW1509
                )
            )
        t_load = time.monotonic()
        next_sample = t_load + args.warmup
        while time.monotonic() - t_load < args.duration:
            if rec.poll() is not None:
                raise SystemExit(f"soak: cmaprof record died: {rec.stderr.read()}")  # type: ignore[union-attr]
            if time.monotonic() >= next_sample:
                kib = rss_kib(rec.pid)
                if kib is not None:
                    samples.append((time.monotonic() - t_load, kib))
                    if args.verbose:
                        print(f"  t={samples[-1][0]:6.1f}s rss={kib} KiB", file=sys.stderr)
                next_sample += args.sample
            time.sleep(0.2)
    finally:
        for h in hammers:
            h.kill()
        for h in hammers:
            h.wait()
        if rec.poll() is None:
            rec.send_signal(signal.SIGINT)
        try:
            _, err = rec.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            rec.kill()
            _, err = rec.communicate()
    if rec.returncode != 0:
        raise SystemExit(f"soak: cmaprof record exited {rec.returncode}: {err}")
    if len(samples) < 4:
        raise SystemExit(f"soak: only {len(samples)} RSS samples: raise --duration")
    res = summarize(out, samples, load_from_ns)
    res["rss_series"] = samples
    res["hammers"] = len(hammers)
    res["nice"] = args.nice
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="soak", choices=["soak", "hammer"])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before RSS sampling")
    p.add_argument("--idle", type=float, default=5.0, help="idle seconds before the load")
    p.add_argument("--sample", type=float, default=2.0, help="seconds between RSS samples")
    p.add_argument("--cpus", type=int, default=0, help="hammer processes (default: one per CPU)")
    p.add_argument("--nice", type=int, default=0, help="nice value of the hammers")
    p.add_argument("--max-growth-pct", type=float, default=5.0)
    p.add_argument("--out", default="out/soak", help="recording directory")
    p.add_argument("--force", action="store_true", help="replace an earlier soak recording")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("-v", "--verbose", action="store_true", help="print every RSS sample")
    args = p.parse_args(argv)
    if args.mode == "hammer":
        hammer()
        return 0
    res = run(args)
    bad = verdict(res, args.max_growth_pct)
    res["failures"] = bad
    print(text(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    for b in bad:
        print(f"soak: FAIL: {b}")
    print("soak: " + ("FAILED" if bad else "passed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
