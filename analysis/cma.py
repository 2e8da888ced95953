"""cma_alloc() calls: per-area outcome and latency tables, and the CMA counters check.

Latency percentiles are exact (from the per-call records), not from the log2
histogram; the histogram is kept for calls that the ring buffer could not carry.
"""

from __future__ import annotations

import pandas as pd

from cmaprof.analysis import stats
from cmaprof.analysis.loaded import Recording
from cmaprof.probes import abi

OUTCOME_SOURCES = {
    abi.CMA_OUTCOME_ERRORNO: "kernel errorno",
    abi.CMA_OUTCOME_PAGE: "inferred: finish page",
    abi.CMA_OUTCOME_RETVAL: "inferred: returned page",
    abi.CMA_OUTCOME_NO_FINISH: "inferred: start without finish",
    abi.CMA_OUTCOME_FATAL_SIGNAL: "inferred: SIGKILL pending at return",
}
SUMMARY_COLUMNS = [
    "area",
    "calls",
    "succeeded",
    "failed",
    "pages_requested",
    "pages_allocated",
    "busy_retries",
    "migrate_succeeded",
    "migrate_failed",
    "p50_ns",
    "p90_ns",
    "p99_ns",
    "max_ns",
]


def df_cma_calls(rec: Recording) -> pd.DataFrame:
    """One row per cma_alloc() call, with ``outcome`` ("success", an errno name, or
    "failed") and ``outcome_source`` decoded."""
    df = rec.df_cma_alloc()
    if df.empty:
        return df
    names = rec.cma_area_names
    df["area"] = [
        a or (names[i] if i < len(names) else "?") for a, i in zip(df["area"], df["area_idx"])
    ]
    df["outcome_source"] = df["outcome_source"].map(OUTCOME_SOURCES).astype("category")
    df["outcome"] = [
        "success" if ok else (f"errno {-int(e)}" if pd.notna(e) and e else "failed")
        for ok, e in zip(df["success"], df["errno"])
    ]
    return df


def df_cma_summary(rec: Recording) -> pd.DataFrame:
    """Per area: calls, outcomes, pages, busy retries, migrations, latency percentiles
    (``pNN_ns`` null where the area has too few calls to estimate them:
    :func:`quantile_estimable`)."""
    df = df_cma_calls(rec)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SUMMARY_COLUMNS})
    rows = []
    for area, g in df.groupby("area", sort=True):
        lat = g["latency_ns"].astype("int64")
        rows.append(
            {
                "area": area,
                "calls": len(g),
                "succeeded": int(g["success"].sum()),
                "failed": int((~g["success"]).sum()),
                "pages_requested": int(g["pages_requested"].sum()),
                "pages_allocated": int(g.loc[g["success"], "pages_requested"].sum()),
                "busy_retries": int(g["busy_retries"].sum()),
                "migrate_succeeded": int(g["migrate_succeeded"].sum()),
                "migrate_failed": int(g["migrate_failed"].sum()),
                **{
                    f"{name}_ns": int(lat.quantile(q)) if quantile_estimable(len(g), q) else None
                    for name, q in PERCENTILES.items()
                },
                "max_ns": int(lat.max()),
            }
        )
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for name in PERCENTILES:
        out[f"{name}_ns"] = out[f"{name}_ns"].astype("Int64")
    return out


#: Latency percentiles of the summary, and the calls each needs (:func:`quantile_estimable`).
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def quantile_estimable(n: int, q: float) -> bool:
    """Whether ``n`` calls estimate quantile ``q``: at least
    :data:`~cmaprof.analysis.stats.TAIL_MIN` calls beyond it (p50: 10 calls, p90: 50,
    p99: 500), the rule compare uses before it tests a percentile. With fewer, p99 of
    20 calls is the largest call under another name."""
    return stats.quantile_testable(n, q)


def calls_needed(q: float) -> int:
    """Calls :func:`quantile_estimable` needs for quantile ``q``."""
    n = 1
    while not quantile_estimable(n, q):
        n += 1
    return n


def check_rows(rec: Recording) -> list[dict]:
    """CMA rows of the check table: our per-call counts against /proc/vmstat
    ``cma_alloc_success|fail`` (calls) and sysfs ``alloc_pages_success|fail`` (pages)."""
    start, end = rec.vmstat("start"), rec.vmstat("end")
    if "cma_alloc_success" not in end:
        return []
    off = probe_not_run(rec, "cma")
    df = df_cma_calls(rec)
    ok = df[df["success"]] if not df.empty else df
    bad = df[~df["success"]] if not df.empty else df
    early = bad[_returned_before_finish(rec, bad)] if len(bad) else bad
    fail_calls = end.get("cma_alloc_fail", 0) - start.get("cma_alloc_fail", 0)
    rows = [
        _row(
            "cma_alloc_success",
            "/proc/vmstat",
            "calls",
            None if off else len(ok),
            end["cma_alloc_success"] - start.get("cma_alloc_success", 0),
            off or "",
        ),
        _fail_row("cma_alloc_fail", "/proc/vmstat", "calls", len(bad), len(early), fail_calls, off),
    ]
    for area in sorted(set(rec.cma_area_names) | set(df["area"] if not df.empty else [])):
        for what, part in (("success", ok), ("fail", bad)):
            k0 = rec.sys_counter("start", f"cma/{area}/alloc_pages_{what}")
            k1 = rec.sys_counter("end", f"cma/{area}/alloc_pages_{what}")
            if k0 is None or k1 is None:
                continue
            traced = _pages(part, area)
            counter = f"{area}/alloc_pages_{what}"
            if what == "success":
                rows.append(
                    _row(counter, "sysfs", "pages", None if off else traced, k1 - k0, off or "")
                )
            else:
                rows.append(
                    _fail_row(counter, "sysfs", "pages", traced, _pages(early, area), k1 - k0, off)
                )
    return rows


def _pages(calls: pd.DataFrame, area: str) -> int:
    return int(calls.loc[calls["area"] == area, "pages_requested"].sum()) if len(calls) else 0


def _returned_before_finish(rec: Recording, calls: pd.DataFrame) -> pd.Series:
    """Failed calls that fired no ``cma_alloc_finish``: where the finish event carries
    ``errorno``, a call whose outcome came from the kretprobe (not from errorno) returned
    before the finish event; a call closed by the next start never had one."""
    fmt = rec.event_formats.get(("cma", "cma_alloc_finish"))
    has_errorno = fmt is not None and fmt.has_field("errorno")
    src = calls["outcome_source"].astype(str)
    return (src == OUTCOME_SOURCES[abi.CMA_OUTCOME_NO_FINISH]) | (
        (src == OUTCOME_SOURCES[abi.CMA_OUTCOME_RETVAL]) & has_errorno
    )


def _fail_row(
    counter: str, source: str, unit: str, traced: int, early: int, kernel: int, off: str | None
) -> dict:
    """A failure row. Kernels differ in whether a call that returns before its
    ``cma_alloc_finish`` is counted: 6.1's cma_alloc() counts a request larger than the
    area as a failure (``goto out``), 6.12's __cma_alloc() returns NULL before counting
    it. Where the kernel's count equals the calls that reached the finish event, the row
    compares those and its note says how many returned early, uncounted by the kernel.
    ``off``: why the cma probe did not run (then nothing was traced)."""
    if off:
        return _row(counter, source, unit, None, kernel, off)
    if early and traced != kernel and traced - early == kernel:
        return _row(
            counter,
            source,
            unit,
            traced - early,
            kernel,
            f"{early} failed {'call' if unit == 'calls' else 'page'}"
            f"{'' if early == 1 else 's'} returned before cma_alloc_finish and this kernel "
            f"does not count {'it' if early == 1 else 'them'}; traced in all: {traced}",
        )
    return _row(counter, source, unit, traced, kernel)


def _row(
    counter: str, source: str, unit: str, traced: int | None, kernel: int, note: str = ""
) -> dict:
    """One check row; ``traced`` None where the probe did not run (``note`` says why),
    ``diff_pct`` None where it is undefined (no probe, or the kernel counted 0)."""
    if traced is None:
        diff = None
    elif kernel:
        diff = round((traced - kernel) / kernel * 100, 3)
    else:
        diff = 0.0 if traced == 0 else None
    return {
        "counter": counter,
        "source": source,
        "unit": unit,
        "traced": traced,
        "kernel": kernel,
        "diff_pct": diff,
        "note": note,
    }


def probe_not_run(rec: Recording, probe: str) -> str | None:
    """Why ``probe`` did not run in ``rec`` (``probe NAME did not run: WHY``), or None."""
    # imported text has no probe list: its events ran
    if not rec.meta.has("probes") or probe in rec.meta.probes:
        return None
    why = (rec.meta.probes_unavailable or {}).get(probe) or "not in the recording"
    return f"{probe} probe did not run: {why}"
