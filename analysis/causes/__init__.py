"""Why each cma_alloc() call failed: one cause per failed call, and the evidence for it.

The vocabulary is :class:`Cause` (defined here once). :func:`df_cma_failures` gives
every failed call of ``tables/cma_alloc`` exactly one cause, decided from what the
recording holds, in this order (the first rule that applies wins):

1. the area: a request larger than the area's ``count`` (debugfs) can never succeed
   (6.1 counts the failure; 6.12 returns before any event or counter);
2. the layout (:mod:`cmaprof.analysis.layout`): no position aligned to ``2**align`` pages
   (relative to pfn 0) leaves room for the request inside the area: it can never fit;
3. the kernel's own return value where the kernel gives it (``errorno`` of
   ``cma_alloc_finish``, ~6.3 on): -EINTR, -ENOMEM, -EBUSY, anything else; where the
   kernel has no errorno, a failed call that returned with SIGKILL pending is -EINTR
   (the cma probe's ``inferred: SIGKILL pending at return``);
4. whether a range was tried at all (the finish event's pfn, busy retries, isolation
   tests): when none was, the bitmap search found no free aligned run: the request was
   larger than the free pages of the area (debugfs ``used`` sampled before the call) or
   there was no aligned free range of its size;
5. for -EBUSY (or busy retries where the kernel gives no errno): the pages that blocked
   it (``cma_blockers``: migrate stage and pages left at the isolation test = migration
   failed; isolate stage = isolation refused), else the per-call counts (pages that
   failed to migrate; busy retries without a failed isolation test = isolation
   refused), else -EBUSY after N busy retries;
6. otherwise unknown, with the raw call row as the evidence.

``decided_by`` names the rule, ``evidence`` says in words what decided it and what the
recording lacked. pfns stay out of ``evidence`` (``first_busy_pfn``, ``blocker_pfns``
hold them, so ``--redact`` can null them).
"""

from __future__ import annotations

import enum
import errno as errno_mod
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cmaprof.analysis import blockers, layout
from cmaprof.analysis.cma import OUTCOME_SOURCES, df_cma_calls
from cmaprof.analysis.redact import fmt_pfn
from cmaprof.kernel import dmesg, procfs
from cmaprof.probes import abi

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording

WIDTH = 80
#: blocker pfns listed per call (the column holds all of them).
PFNS_SHOWN = 4


class Cause(enum.Enum):
    """Why a cma_alloc() call failed. Values are the stable names in frames and JSON."""

    TOO_LARGE_FOR_AREA = "too_large_for_area"
    TOO_LARGE_FOR_AVAILABLE = "too_large_for_available"
    NEVER_FITS = "never_fits"
    NO_ALIGNED_FREE_RANGE = "no_aligned_free_range"
    ISOLATION_REFUSED = "isolation_refused"
    MIGRATION_FAILED = "migration_failed"
    BUSY_RETRIES = "busy_retries"
    ENOMEM = "enomem"
    INTERRUPTED = "interrupted"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        return LABELS[self]


LABELS = {
    Cause.TOO_LARGE_FOR_AREA: "request larger than the area",
    Cause.TOO_LARGE_FOR_AVAILABLE: "request larger than the area's free pages",
    Cause.NEVER_FITS: "no aligned position can ever fit",
    Cause.NO_ALIGNED_FREE_RANGE: "no aligned free range",
    Cause.ISOLATION_REFUSED: "isolation refused (unmovable page)",
    Cause.MIGRATION_FAILED: "migration failed",
    Cause.BUSY_RETRIES: "-EBUSY after busy retries",
    Cause.ENOMEM: "-ENOMEM (no memory to migrate to)",
    Cause.INTERRUPTED: "interrupted (-EINTR, fatal signal)",
    Cause.UNKNOWN: "unknown",
}
CAUSE_NAMES = [c.value for c in Cause]

COLUMNS = [
    "start_ns",
    "area",
    "pid",
    "comm",
    "pages_requested",
    "align",
    "latency_ns",
    "busy_retries",
    "errno",
    "cause",
    "decided_by",
    "evidence",
    "blocker_causes",
    "blocker_pages",
    "blocker_pfns",
    "first_busy_pfn",
]

EINTR, ENOMEM, EBUSY = errno_mod.EINTR, errno_mod.ENOMEM, errno_mod.EBUSY
#: how df_cma_calls names a failure the cma probe inferred from SIGKILL pending at return
FATAL_SIGNAL_SOURCE = OUTCOME_SOURCES[abi.CMA_OUTCOME_FATAL_SIGNAL]


def _dict(v: Any) -> dict[str, Any]:
    """A metadata object, or {} where the field is absent or not an object."""
    return v if isinstance(v, dict) else {}


def has_cma_probe(rec: Recording) -> bool:
    """Whether the recording ran the cma probe (so its failed calls were seen)."""
    return "cma" in rec.meta.probes


def _errno_name(e: int) -> str:
    return "-" + errno_mod.errorcode.get(e, str(e))


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


@dataclass
class Evidence:
    """What a recording can tell about its failed calls, and whether it measured it.

    :param errorno: the kernel's ``cma_alloc_finish`` has ``errorno`` (HAVE_CMA_ERRORNO).
    :param isolate: ``page_isolation:test_pages_isolated`` was traced per call.
    :param migrate: the migrate probe counted ``mm_migrate_pages`` per call.
    :param blockers: the blockers probe ran (``blocker_rows`` are its decoded rows).
    :param areas: CMA area name -> its range (:func:`layout.cma_areas_of`).
    :param used: ``series/cma_used`` rows (debugfs ``used`` pages per area and sample).
    :param maxchunk: area -> {"start"|"end": debugfs ``maxchunk`` pages} saved in the
        recording (the largest free run of the bitmap, any alignment).
    """

    errorno: bool = False
    isolate: bool = False
    migrate: bool = False
    blockers: bool = False
    areas: dict[str, procfs.CmaArea] = field(default_factory=dict)
    blocker_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    used: pd.DataFrame = field(default_factory=pd.DataFrame)
    maxchunk: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, rec: Recording) -> Evidence:
        probes = rec.meta.probes
        defines = _dict(rec.meta.defines)
        has_blockers = blockers.has_blockers(rec)
        used = rec.df_cma_used_series()
        return cls(
            errorno=bool(defines.get("HAVE_CMA_ERRORNO")),
            isolate=bool(defines.get("HAVE_TEST_PAGES_ISOLATED")),
            migrate="migrate" in probes,
            blockers=has_blockers,
            areas={a.name: a for a in layout.cma_areas_of(rec)},
            blocker_rows=rec.df_cma_blockers() if has_blockers else pd.DataFrame(),
            used=used.sort_values("t_ns") if not used.empty else used,
            maxchunk={
                a: {
                    w: v
                    for w in ("start", "end")
                    if (v := rec.sys_counter(w, f"cma/{a}/maxchunk")) is not None
                }
                for a in rec.cma_area_names
            },
        )

    def call_blockers(self, pid: int, start_ns: int) -> pd.DataFrame:
        bl = self.blocker_rows
        if bl.empty:
            return bl
        return bl[(bl["tid"] == pid) & (bl["cma_start_ns"] == start_ns)]

    def used_before(self, area: str, start_ns: int) -> tuple[int, int, int] | None:
        """(debugfs used pages, t_k, t_k+1) of the last sample surely read before the
        call: ``record`` stamps sample k with its tick time t_k and reads the file
        after the page_alloc cube (seconds under TCG), but before tick k+1, so only a
        sample whose next tick is at or before the call's start qualifies."""
        u = self.used
        if u.empty:
            return None
        u = u[u["area"] == area]
        times = u["t_ns"].to_numpy()
        for k in range(len(u) - 2, -1, -1):
            if times[k + 1] <= start_ns:
                return int(u["used_pages"].iloc[k]), int(times[k]), int(times[k + 1])
        return None


def _maxchunk_text(mc: dict[str, int]) -> str:
    """What the recording knows of the largest free run around a failure."""
    known = ", ".join(f"{v} pages at the {w}" for w, v in mc.items())
    if not known:
        return "the bitmap at the failure is not recorded (no debugfs maxchunk either)"
    return (
        f"the bitmap at the failure is not recorded; debugfs maxchunk (largest free run, "
        f"any alignment): {known} of the recording"
    )


def classify(call: Any, ev: Evidence) -> dict[str, Any]:
    """One failed call (a :func:`df_cma_calls` row) -> ``cause``, ``decided_by``,
    ``evidence`` and the blocker columns."""
    n = int(call.pages_requested)
    align = int(call.align)
    retries = int(call.busy_retries)
    tests, test_fails = int(call.isolate_tests), int(call.isolate_failures)
    err = _int(call.errno)
    err = -err if err is not None and err < 0 else err  # stored as the kernel's -E
    if err == 0:  # a failed call with errorno 0 says nothing: decide as without errno
        err = None
    area = ev.areas.get(str(call.area))
    out: dict[str, Any] = {"blocker_causes": "", "blocker_pages": 0, "blocker_pfns": ""}
    missing = []
    if not ev.errorno:
        missing.append("no errorno on this kernel")

    def done(cause: Cause, by: str, text: str) -> dict[str, Any]:
        if missing and by not in ("area count", "layout"):
            text += " [" + "; ".join(missing) + "]"
        out.update(cause=cause.value, decided_by=by, evidence=text)
        return out

    # 1-2: the area and its layout
    if area is not None and area.count is not None:
        if n > area.count:
            return done(
                Cause.TOO_LARGE_FOR_AREA,
                "area count",
                f"{n} pages requested, the area has {area.count} (debugfs count)",
            )
        if area.base_pfn is not None and not layout.can_ever_fit(
            area.base_pfn, area.count, n, align
        ):
            first = layout.align_up(area.base_pfn, align)
            return done(
                Cause.NEVER_FITS,
                "layout",
                f"align {align}: the first 2^{align}-aligned position is base+"
                f"{first - area.base_pfn}, leaving {max(0, area.base_pfn + area.count - first)} "
                f"of the area's {area.count} pages < {n}; base aligned to order "
                f"{layout.base_align_order(area.base_pfn)}",
            )
    else:
        missing.append("area range unknown (no debugfs base_pfn/count)")

    tried = call.pfn is not None and not pd.isna(call.pfn) or retries > 0 or tests > 0
    tried = tried or int(call.migrate_succeeded) + int(call.migrate_failed) > 0

    # 3: the kernel's own errno
    if err is not None and err not in (0, EBUSY, ENOMEM):
        if err == EINTR:
            if str(getattr(call, "outcome_source", "")) == FATAL_SIGNAL_SOURCE:
                return done(
                    Cause.INTERRUPTED,
                    "fatal signal",
                    f"failed with SIGKILL pending at return (-EINTR inferred) after "
                    f"{retries} busy retries",
                )
            return done(
                Cause.INTERRUPTED,
                "errorno",
                f"errorno -EINTR: a fatal signal ended the call after {retries} busy retries",
            )
        return done(Cause.UNKNOWN, "errorno", f"errorno {_errno_name(err)}: not a known ending")
    if err == ENOMEM and tried:
        return done(
            Cause.ENOMEM,
            "errorno",
            f"errorno -ENOMEM after a range was tried ({int(call.migrate_succeeded)} pages "
            f"migrated, {int(call.migrate_failed)} failed): no memory to migrate to",
        )

    # 4: no range tried: the bitmap search found nothing
    if not tried:
        why = "errorno -ENOMEM and no" if err == ENOMEM else "no"
        used = ev.used_before(str(call.area), int(call.start_ns))
        if area is not None and area.count is not None and used is not None:
            free = area.count - used[0]
            if n > free:
                return done(
                    Cause.TOO_LARGE_FOR_AVAILABLE,
                    "debugfs used",
                    f"{why} range tried; {n} pages requested, {free} free of "
                    f"{area.count} (debugfs used {used[0]}, read between "
                    f"{used[1] / 1e9:.1f} s and {used[2] / 1e9:.1f} s, before the call at "
                    f"{int(call.start_ns) / 1e9:.1f} s)",
                )
        if used is None:
            missing.append("no debugfs used sample surely read before the call")
        return done(
            Cause.NO_ALIGNED_FREE_RANGE,
            "no range tried",
            f"{why} range tried (no finish pfn, busy retries or isolation tests): no free "
            f"run of {n} pages at align {align} in the bitmap; "
            + _maxchunk_text(ev.maxchunk.get(str(call.area), {})),
        )

    # 5: ranges were tried and refused
    if err is None and retries == 0:
        return done(
            Cause.UNKNOWN,
            "call counts",
            f"a range was tried and failed without a busy retry: -ENOMEM or -EINTR, which "
            f"only errorno tells apart ({tests} isolation tests, "
            f"{int(call.migrate_failed)} pages failed to migrate)",
        )
    bl = ev.call_blockers(int(call.pid), int(call.start_ns))
    if not bl.empty:
        moved = bl[bl["stage"].isin(["migrate", "test_isolated"])]
        iso = bl[bl["stage"] == "isolate"]
        part = moved if not moved.empty else iso
        pfns = sorted({int(p) for p in part["pfn"]})
        first = part.drop_duplicates("pfn")
        counts = first.groupby(["cause", "state"]).size().sort_values(ascending=False)
        out["blocker_causes"] = ",".join(dict.fromkeys(str(c) for c, _ in counts.index))
        out["blocker_pages"] = len(pfns)
        out["blocker_pfns"] = ",".join(str(p) for p in pfns)
        classes = ", ".join(f"{k} {c} ({st})" for (c, st), k in counts.items())
        ending = f"errorno {_errno_name(err)}" if err else f"{retries} busy retries (ended -EBUSY)"
        if not moved.empty:
            return done(
                Cause.MIGRATION_FAILED,
                "blockers",
                f"{ending}; {len(pfns)} distinct pages not migrated or still in use at the "
                f"isolation test (cma_blockers): {classes}",
            )
        return done(
            Cause.ISOLATION_REFUSED,
            "blockers",
            f"{ending}; pageblock isolation refused by {len(pfns)} pages (cma_blockers): {classes}",
        )
    if not ev.blockers:
        missing.append("blockers probe not run")
    if ev.migrate and int(call.migrate_failed) > 0:
        return done(
            Cause.MIGRATION_FAILED,
            "migrate counts",
            f"{retries} busy retries; {int(call.migrate_failed)} pages failed to migrate "
            f"(mm_migrate_pages during the call); which pages is not recorded",
        )
    if not ev.migrate:
        missing.append("migrate probe not run")
    if ev.isolate and retries > 0 and test_fails == 0:
        return done(
            Cause.ISOLATION_REFUSED,
            "isolation tests",
            f"{retries} busy retries and no failed isolation test ({tests} tests): "
            f"start_isolate_page_range() refused the ranges before migration",
        )
    if not ev.isolate:
        missing.append("test_pages_isolated not traced")
    return done(
        Cause.BUSY_RETRIES,
        "busy retries",
        f"-EBUSY after {retries} busy retries, {test_fails} of {tests} isolation tests "
        f"failed (first_busy_pfn: the first pfn not isolated)",
    )


def df_cma_failures(rec: Recording) -> pd.DataFrame:
    """One row per failed cma_alloc() call with its ``cause`` (a :class:`Cause` value;
    categorical in vocabulary order), ``decided_by`` (which evidence decided), ``evidence``
    (in words, with what the recording lacked), the blocking pages (``blocker_causes``,
    ``blocker_pages``, ``blocker_pfns``) and the call's own fields (pages, align,
    latency, busy retries, errno when the kernel gives it, ``first_busy_pfn``).

    Not :func:`cmaprof.analysis.blockers.df_cma_failures`, which counts blocking *pages*
    per (area, stage, cause, state); this one is per failed *call*.
    """
    calls = df_cma_calls(rec)
    if calls.empty or not (~calls["success"]).any():
        return failures_frame(calls, Evidence())
    return failures_frame(calls, Evidence.of(rec))


def failures_frame(calls: pd.DataFrame, ev: Evidence) -> pd.DataFrame:
    """:func:`df_cma_failures` from :func:`df_cma_calls` rows and the evidence."""
    if calls.empty or not (~calls["success"]).any():
        df = pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
        df["cause"] = pd.Categorical([], categories=CAUSE_NAMES)
        return df
    rows = []
    for call in calls[~calls["success"]].itertuples(index=False):
        c = classify(call, ev)
        rows.append(
            {
                "start_ns": int(call.start_ns),
                "area": str(call.area),
                "pid": int(call.pid),
                "comm": str(call.comm),
                "pages_requested": int(call.pages_requested),
                "align": int(call.align),
                "latency_ns": int(call.latency_ns),
                "busy_retries": int(call.busy_retries),
                "errno": _int(call.errno),
                "first_busy_pfn": _int(call.first_busy_pfn),
                **c,
            }
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["cause"] = pd.Categorical(df["cause"], categories=CAUSE_NAMES)
    df["errno"] = df["errno"].astype("Int64")
    df["first_busy_pfn"] = df["first_busy_pfn"].astype("Int64")
    return df


def df_cma_failure_causes(rec: Recording) -> pd.DataFrame:
    """Per cause (only those seen): ``calls``, ``share`` of the failed calls (sums to 1)."""
    return causes_frame(df_cma_failures(rec))


def causes_frame(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`df_cma_failure_causes` from :func:`df_cma_failures` rows."""
    counts = df["cause"].value_counts(sort=False)
    counts = counts[counts > 0]
    total = int(counts.sum())
    return pd.DataFrame(
        {
            "cause": [str(c) for c in counts.index],
            "label": [Cause(c).label for c in counts.index],
            "calls": [int(v) for v in counts.values],
            "share": [v / total for v in counts.values] if total else [],
        }
    )


def _latency(ns: int) -> str:
    return f"{ns / 1e9:.2f} s" if ns >= 1e9 else f"{ns / 1e6:.2f} ms"


def table_cma_failure_causes(rec: Recording) -> str:
    """Failed cma_alloc() calls by cause (counts, shares, 100% total), then each call
    with the evidence that decided its cause; "" when no call failed."""
    df = df_cma_failures(rec)
    if df.empty:
        return ""
    by = causes_frame(df)
    out = [
        "Why cma_alloc() failed (each failed call: one cause)",
        f"{'cause':<44} {'calls':>7} {'share':>7}",
    ]
    for r in by.itertuples(index=False):
        out.append(f"{r.label[:44]:<44} {r.calls:>7} {r.share:>7.1%}")
    out.append(f"{'total':<44} {int(by['calls'].sum()):>7} {by['share'].sum():>7.1%}")
    out.append("")
    for r in df.itertuples(index=False):
        head = (
            f"{r.area} {r.pages_requested} pages align {r.align}, "
            f"{_latency(r.latency_ns)}, pid {r.pid} {r.comm}: {Cause(r.cause).label}"
        )
        out.extend(textwrap.wrap(head, WIDTH, subsequent_indent="    "))
        text = f"by {r.decided_by}: {r.evidence}"
        if r.blocker_pfns:
            pfns = [int(p) for p in str(r.blocker_pfns).split(",")]
            shown = ", ".join(fmt_pfn(p) for p in pfns[:PFNS_SHOWN])
            more = f" and {len(pfns) - PFNS_SHOWN} more" if len(pfns) > PFNS_SHOWN else ""
            text += f"; pfns {shown}{more}"
        if r.first_busy_pfn is not pd.NA and not pd.isna(r.first_busy_pfn):
            text += f"; first_busy_pfn {fmt_pfn(int(r.first_busy_pfn))}"
        out.extend(textwrap.wrap(text, WIDTH, initial_indent="  ", subsequent_indent="    "))
    return "\n".join(out)


def table_causes_compare(sides: list[Any]) -> str:
    """Failed cma_alloc() calls by cause per side of ``cmaprof compare`` (calls summed
    over the side's iterations, share of the side's failed calls).

    :param sides: :class:`cmaprof.analysis.compare.Side` objects.
    """
    label_w, col_w = 30, 23
    out = ["cma_alloc() failed calls by cause (all iterations of a side; share)"]
    per_side: list[pd.Series | None] = []
    for s in sides:
        recs = [r for r in s.recordings if has_cma_probe(r)]
        if not recs:
            per_side.append(None)
            continue
        frames = [df_cma_failures(r) for r in recs]
        cat = pd.concat(frames) if any(len(f) for f in frames) else frames[0]
        per_side.append(cat["cause"].astype(str).value_counts())
    if all(p is None for p in per_side):
        return "\n".join(out + ["  not recorded (no cma probe on any side)"])
    if all(p is None or p.empty for p in per_side):
        return "\n".join(out + ["  none on any side"])
    out.append(
        " " * label_w + "".join(f"{s.name[: col_w - 2]:>{col_w - 2}}  " for s in sides).rstrip()
    )
    for c in Cause:
        if not any(p is not None and c.value in p.index for p in per_side):
            continue
        cells = []
        for p in per_side:
            if p is None:
                cells.append(f"{'-':>{col_w - 2}}  ")
                continue
            k = int(p.get(c.value, 0))
            cells.append(f"{f'{k} ({k / p.sum():.0%})':>{col_w - 2}}  ")
        out.append((f"{c.label[: label_w - 1]:<{label_w}}" + "".join(cells)).rstrip())
    totals = [f"{'-' if p is None else int(p.sum()):>{col_w - 2}}  " for p in per_side]
    out.append((f"{'total failed calls':<{label_w}}" + "".join(totals)).rstrip())
    return "\n".join(out)


# ---- the kernel's own account: dmesg "alloc failed" lines ---------------------------

#: The return value the kernel prints for each cause (``None``: no line is printed: 6.1
#: returns before the message for a request larger than the area; isolation refused,
#: migration failed and busy retries all end as -EBUSY).
KERNEL_RET: dict[Cause, tuple[int | None, ...]] = {
    # 6.1 returns before the message; kernels with CMA ranges ("mm, cma: support
    # multiple contiguous ranges, if requested", 6.15) start cma_range_alloc() at -EBUSY
    # and print it (measured on 7.3.4: "alloc failed, req-size: 70000 pages, ret: -16")
    Cause.TOO_LARGE_FOR_AREA: (None, -EBUSY),
    Cause.TOO_LARGE_FOR_AVAILABLE: (-ENOMEM,),
    Cause.NEVER_FITS: (-ENOMEM,),
    Cause.NO_ALIGNED_FREE_RANGE: (-ENOMEM,),
    Cause.ISOLATION_REFUSED: (-EBUSY,),
    Cause.MIGRATION_FAILED: (-EBUSY,),
    Cause.BUSY_RETRIES: (-EBUSY,),
    Cause.ENOMEM: (-ENOMEM,),
    Cause.INTERRUPTED: (-EINTR,),
}


def parse_dmesg_alloc_failed(text: str) -> pd.DataFrame:
    """The kernel's ``alloc failed`` lines in a dmesg capture, in order: ``area``,
    ``pages`` (req-size) and ``ret`` (:func:`cmaprof.kernel.dmesg.parse_alloc_failed`)."""
    return pd.DataFrame(dmesg.parse_alloc_failed(text), columns=["area", "pages", "ret"])


def check_against_dmesg(failures: pd.DataFrame, dmesg: pd.DataFrame) -> pd.DataFrame:
    """Each failed call next to the kernel's ``alloc failed`` line for it, matched in
    order per (area, pages): ``kernel_ret`` (null: no line), ``expected_ret`` (what
    :data:`KERNEL_RET` accepts for our cause, ``|``-separated) and ``agrees``.

    :param failures: :func:`df_cma_failures` rows (in call order).
    :param dmesg: :func:`parse_dmesg_alloc_failed` rows of the same run.
    """
    queues: dict[tuple[str, int], list[int]] = {}
    for r in dmesg.itertuples(index=False):
        queues.setdefault((str(r.area), int(r.pages)), []).append(int(r.ret))
    out = failures[["start_ns", "area", "pages_requested", "cause"]].copy()
    kernel, expected = [], []
    for r in out.sort_values("start_ns", kind="stable").itertuples():
        q = queues.get((str(r.area), int(r.pages_requested)), [])
        kernel.append(q.pop(0) if q else None)
        cause = str(r.cause)
        expected.append(KERNEL_RET.get(Cause(cause), ()) if cause != "unknown" else ())
    out = out.sort_values("start_ns", kind="stable")
    out["kernel_ret"] = pd.array(kernel, dtype="Int64")
    out["expected_ret"] = [
        "|".join("no line" if e is None else str(e) for e in acc) for acc in expected
    ]
    out["agrees"] = [k in acc for k, acc in zip(kernel, expected, strict=True)]
    return out.reset_index(drop=True)


def plot_failed_calls_by_cause(sides: list[Any]) -> Figure:
    """Failed cma_alloc() calls by cause (every cause class, not only blocked pages), one
    bar per side: calls summed over the side's iterations.

    :param sides: :class:`cmaprof.analysis.compare.Side` objects.
    """
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    kernels = ", ".join(dict.fromkeys(s.kernel for s in sides))
    layouts = " vs ".join(dict.fromkeys(s.layout for s in sides))
    workloads = ", ".join(dict.fromkeys(s.workload for s in sides))
    fig.suptitle(
        f"Failed cma_alloc() calls by cause (all iterations)\n"
        f"kernel {kernels}; {layouts}; workload: {workloads}",
        fontsize=10,
    )
    counts: dict[str, pd.Series] = {}
    missing = []
    for s in sides:
        recs = [r for r in s.recordings if has_cma_probe(r)]
        if not recs:
            missing.append(s.name)
            continue
        frames = [df_cma_failures(r) for r in recs]
        got = [f for f in frames if len(f)]
        vc = pd.concat(got)["cause"].astype(str).value_counts() if got else pd.Series(dtype=int)
        counts[s.name] = vc
    seen = [c for c in Cause if any(c.value in vc.index for vc in counts.values())]
    if not seen:
        text = "no failed cma_alloc() call"
        if missing:
            text += "\nnot recorded (no cma probe): " + ", ".join(missing)
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    height = 0.8 / max(1, len(counts))
    y = np.arange(len(seen))
    for i, (name, vc) in enumerate(counts.items()):
        ax.barh(y + i * height, [int(vc.get(c.value, 0)) for c in seen], height=height, label=name)
    ax.set_yticks(y + 0.4 - height / 2, [c.label for c in seen])
    ax.set_xlabel("failed calls")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    if missing:
        ax.text(
            0.99,
            0.01,
            "not recorded: " + ", ".join(missing),
            ha="right",
            transform=ax.transAxes,
            fontsize=8,
        )
    return fig
