"""The targets of issue 15, each judged from figures measured in one ``make bench`` run.

:func:`evaluate` turns the run's results (the summary of the interleaved fault-loop
rounds, the real workload, the scale figures) into one :class:`Target` per item;
:func:`table` prints them fixed-width (<= 80 columns) with the measured value, the
target and met / missed / not measured. A target whose figure is absent from the run
is "not measured", with the reason, never "met".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Target values of issue 15.
AGGREGATE_MAX_RATIO = 1.03
BPFTRACE_MARGIN = 0.05
PROGRAM_MAX_NS = 100.0
WORKLOAD_MAX_RATIO = 1.01
STREAM_MAX_RATIO = 1.15
STARTUP_MAX_S = 1.0
ITERATION_MAX_S = 180.0
LOAD_MAX_S = 1.5
REPORT_MAX_S = 0.5
BPFTRACE_MODES = ("bpftrace", "bpftrace-simple")
#: record --by keys measured (modes aggregate-by-KEY; issue 17 item 4)
BY_KEYS = ("comm", "stack")


@dataclass(frozen=True)
class Target:
    """One line of the targets table.

    :param met: True / False, or None when the figure was not measured in this run.
    """

    item: str
    what: str
    measured: str
    target: str
    met: bool | None
    note: str = ""
    #: a figure shown beside a target (its cost, its bound), judged against nothing
    info: bool = False

    @property
    def verdict(self) -> str:
        if self.info:
            return "(info)"
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]


def guest_iterations(manifest: Path) -> dict[str, Any]:
    """Seconds of every finished iteration of a ``cmaprof experiment`` (boot, compile,
    record, bring back), from its ``experiment.json``."""
    runs = [r for r in json.loads(manifest.read_text())["runs"].values() if r.get("status") == "ok"]
    secs = [float(r["seconds"]) for r in runs]
    compile_s = []  # BCC's compile and load in each guest (the recording's startup_s)
    for r in runs:
        try:
            meta = json.loads((manifest.parent / r["recording"] / "metadata.json").read_text())
            compile_s.append(float(meta["startup_s"]["compile"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {"seconds": secs, "compile_s": compile_s, "source": str(manifest)}


def _by_mode(summary: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {str(r["mode"]): r for r in summary}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f  # NaN: not measured


def _target_1(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """1. aggregate <= 1.03x untraced CPU time per fault, and below both bpftraces by 0.05"""
    out: list[Target] = []
    agg = m.get("aggregate")
    if agg is None:
        out.append(Target("1", "aggregate CPU/fault", "-", "<= 1.03x", None, "no aggregate mode"))
    else:
        for t in threads:
            r = _num(agg.get(f"cpu_ratio_t{t}"))
            met = None if r is None else r <= AGGREGATE_MAX_RATIO
            out.append(
                Target(
                    "1", f"aggregate CPU/fault, {t} thr", f"{r:.3f}x" if r else "-",
                    f"<= {AGGREGATE_MAX_RATIO:.2f}x", met,
                )
            )  # fmt: skip
            for b in BPFTRACE_MODES:
                br = _num((m.get(b) or {}).get(f"cpu_ratio_t{t}"))
                if r is None or br is None:
                    out.append(Target("1", f"vs {b}, {t} thr", "-", "-0.05", None, f"no {b}"))
                    continue
                out.append(
                    Target(
                        "1", f"vs {b}, {t} thr", f"{r - br:+.3f} ({br:.3f}x)",
                        f"<= -{BPFTRACE_MARGIN:.2f}", r <= br - BPFTRACE_MARGIN,
                    )
                )  # fmt: skip

    return out


def _target_2(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """2. the page_alloc program <= 100 ns per event (bpf_stats on for that mode only)"""
    out: list[Target] = []
    ns = _num((m.get("aggregate-stats") or {}).get("bpf_ns_per_event"))
    floor = _num((m.get("empty") or {}).get("bpf_ns_per_event"))
    cost = extra.get("stats_cost_ns")
    out.append(
        Target(
            "2", "page_alloc program ns/event", f"{ns:.0f} ns" if ns else "-",
            f"<= {PROGRAM_MAX_NS:.0f} ns", None if ns is None else ns <= PROGRAM_MAX_NS,
            (f"bound: an empty tp_btf program, {floor:.0f} ns/event in the same run"
             if floor else ""),
        )
    )  # fmt: skip
    d_agg = _num((m.get("aggregate") or {}).get("cpu_delta_ns_t1"))
    d_empty = _num((m.get("empty") or {}).get("cpu_delta_ns_t1"))
    if d_agg is not None and d_empty is not None:
        out.append(
            Target(
                "2", "CPU/fault over untraced, 1 thr", f"{d_agg:+.0f} ns", "-", None,
                f"empty program (stats on): {d_empty:+.0f} ns; CPU time of the faulting "
                "process, paired",
                info=True,
            )
        )  # fmt: skip
    if cost is not None:
        med, q1, q3 = cost
        out.append(
            Target(
                "2", "bpf_stats' own cost per fault", f"{med:+.0f} ns", "apart", None,
                f"IQR {q1:+.0f}..{q3:+.0f} ns; CPU/fault of aggregate-stats minus aggregate, "
                "paired by round", info=True,
            )
        )  # fmt: skip

    return out


def _target_3(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """3. a real workload: wall time <= 1.01x untraced (median of interleaved runs)"""
    out: list[Target] = []
    w = extra.get("workload")
    if w:
        out.append(
            Target(
                "3", f"{w['name']} wall time", f"{w['median']:.3f}x", f"<= {WORKLOAD_MAX_RATIO}x",
                w["median"] <= WORKLOAD_MAX_RATIO,
                f"{w['runs']} pairs, range {w['min']:.3f}..{w['max']:.3f}x"
                + (f"; build CPU {w['cpu_median']:.3f}x" if "cpu_median" in w else ""),
            )
        )  # fmt: skip
    else:
        out.append(Target("3", "real workload wall time", "-", "<= 1.01x", None, "not run"))

    return out


def _target_4(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """4. streaming <= 1.15x and nothing lost up to the host's highest rate"""
    out: list[Target] = []
    st = m.get("stream")
    for t in threads if st else ():
        r = _num(st.get(f"cpu_ratio_t{t}")) if st else None
        out.append(
            Target(
                "4", f"stream CPU/fault, {t} thr", f"{r:.3f}x" if r else "-",
                f"<= {STREAM_MAX_RATIO:.2f}x", None if r is None else r <= STREAM_MAX_RATIO,
            )
        )  # fmt: skip
    mx = extra.get("stream_max")
    if mx:
        lost = int(mx.get("dropped") or 0) + int(mx.get("lost") or 0)
        out.append(
            Target(
                "4", "stream loss at max rate", f"{lost} lost", "0 lost", lost == 0,
                f"{mx['events']} events at {mx['events_per_s'] / 1e6:.2f} M/s",
            )
        )  # fmt: skip

    return out


def _target_5(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """5. start-up to the first counted event <= 1 s"""
    out: list[Target] = []
    agg = m.get("aggregate")
    agg_s = _num((agg or {}).get("startup_s"))
    comp = _num((agg or {}).get("compile_s"))
    out.append(
        Target(
            "5", "start-up to first counted event", f"{agg_s:.2f} s" if agg_s else "-",
            f"<= {STARTUP_MAX_S:.0f} s", None if agg_s is None else agg_s <= STARTUP_MAX_S,
            (f"of which BCC compile+load {comp:.2f} s" if comp else "")
            + (f", before it {pre:.2f} s" if (pre := _num((agg or {}).get("before_compile_s")))
               else "")
            + (f"; empty BCC compile {extra['empty_compile_s']:.2f} s"
               if extra.get("empty_compile_s") else ""),
        )
    )  # fmt: skip
    out += _bound("5", "bound: imports before compile", (extra.get("scale") or {}).get("floor"),
                  "record_imports_s", "import bcc, cmaprof.cli, cmaprof.collectors.record")  # fmt: skip
    return out


def _bound(item: str, what: str, floor: Mapping[str, float] | None, key: str, code: str) -> list:
    """An info row: the import time ``floor[key]`` that bounds a target (none if absent)."""
    if not floor or key not in floor:
        return []
    py = floor.get("python_s", math.nan)
    note = f"{code}; python alone {py:.2f} s"
    return [Target(item, what, f"{floor[key]:.2f} s", "-", None, note, info=True)]


def _target_6(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """6. one experiment iteration in the TCG guest"""
    out: list[Target] = []
    g = extra.get("guest")
    limit = f"<= {ITERATION_MAX_S / 60:.0f} min"
    if isinstance(g, Mapping) and g.get("seconds"):
        secs = sorted(g["seconds"])
        out.append(
            Target(
                "6", "TCG guest iteration (slowest)", f"{secs[-1] / 60:.1f} min", limit,
                secs[-1] <= ITERATION_MAX_S,
                f"{len(secs)} iterations of {g['source']}: "
                + ", ".join(f"{x:.0f} s" for x in secs)
                + (f"; BCC compile in the guest {max(g['compile_s']):.0f} s (slowest)"
                   if g.get("compile_s") else ""),
            )
        )  # fmt: skip
    else:
        out.append(
            Target("6", "TCG guest iteration", "-", limit, None, str(g or "not measured here"))
        )

    return out


def _target_7(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """7. 10 M-event recording: load+decode <= 1.5 s, report through the CLI <= 0.5 s"""
    out: list[Target] = []
    sc = extra.get("scale")
    if sc:
        out.append(
            Target(
                "7", f"load+decode {sc['events'] / 1e6:.0f} M events", f"{sc['load_s']:.2f} s",
                f"<= {LOAD_MAX_S} s", sc["load_s"] <= LOAD_MAX_S,
            )
        )  # fmt: skip
        runs = sc.get("report_cli_runs_s") or []
        out.append(
            Target(
                "7", "report through the CLI", f"{sc['report_cli_s']:.2f} s",
                f"<= {REPORT_MAX_S} s", sc["report_cli_s"] <= REPORT_MAX_S,
                f"median of {len(runs)} ({sc.get('sched', '')}): "
                + ", ".join(f"{x:.2f}" for x in runs) if runs else "",
            )
        )  # fmt: skip
        out += _bound("7", "bound: the report's imports", sc.get("floor"),
                      "report_imports_s", "import pandas, pyarrow.parquet")  # fmt: skip
    else:
        out.append(Target("7", "10 M-event load, report", "-", "<= 1.5 s, 0.5 s", None, "skipped"))
    return out


def _item_17_4(
    m: dict[str, Mapping[str, Any]], threads: tuple[int, ...], extra: Mapping[str, Any]
) -> list[Target]:
    """17.4 the cost of record --by comm and --by stack against untraced (no target)"""
    out: list[Target] = []
    for t in threads:
        r = {k: _num((m.get(f"aggregate-by-{k}") or {}).get(f"cpu_ratio_t{t}")) for k in BY_KEYS}
        if all(v is None for v in r.values()):
            continue
        agg = _num((m.get("aggregate") or {}).get(f"cpu_ratio_t{t}"))
        shown = " / ".join(f"{v:.3f}x" if v else "-" for v in r.values())
        out.append(
            Target(
                "17.4", f"--by comm / --by stack, {t} thr", shown, "-", None,
                "CPU/fault against untraced, paired by round"
                + (f"; aggregate {agg:.3f}x" if agg else ""), info=True,
            )
        )  # fmt: skip
    return out


_TARGETS = (
    _target_1, _target_2, _target_3, _target_4, _target_5, _target_6, _target_7, _item_17_4,
)  # fmt: skip


def evaluate(
    summary: list[Mapping[str, Any]],
    threads: tuple[int, ...],
    extra: Mapping[str, Any],
) -> list[Target]:
    """The targets of issue 15 from one run.

    :param summary: :func:`bench.run.summarize` records (one per mode).
    :param threads: the thread counts of the fault loop.
    :param extra: ``workload`` (real-workload ratio median/min/max), ``scale``
        (load_s, report_cli_s), ``stats_cost_ns`` (median, q1, q3), ``stream_max``
        (events, dropped, lost at the host's highest rate), ``guest`` (reason).
    """
    m = _by_mode(summary)
    return [t for target in _TARGETS for t in target(m, threads, extra)]


def table(targets: list[Target]) -> str:
    """Fixed-width text, one line per target (its note indented below), <= 80 columns."""
    lines = [f"{'#':<2} {'what':<32} {'measured':>18} {'target':>10} {'':<12}"]
    for t in targets:
        lines.append(
            f"{t.item:<2} {t.what[:32]:<32} {t.measured[:18]:>18} {t.target[:10]:>10} {t.verdict}"
        )
        if t.note:
            lines.append(f"   {t.note}"[:80])
    return "\n".join(line.rstrip() for line in lines)
