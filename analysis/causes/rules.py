"""The causes and the rules that give a failed call one of them: :class:`Cause`, the
:class:`Evidence` a recording holds, and :func:`classify` (the rules of
:mod:`cmaprof.analysis.causes`, in order)."""

from __future__ import annotations

import enum
import errno as errno_mod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmaprof.analysis import blockers, layout
from cmaprof.analysis.cma import OUTCOME_SOURCES
from cmaprof.kernel import procfs
from cmaprof.probes import abi

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording


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


EINTR, ENOMEM, EBUSY = errno_mod.EINTR, errno_mod.ENOMEM, errno_mod.EBUSY


#: how df_cma_calls names a failure the cma probe inferred from SIGKILL pending at return
FATAL_SIGNAL_SOURCE = OUTCOME_SOURCES[abi.CMA_OUTCOME_FATAL_SIGNAL]


def _dict(v: Any) -> dict[str, Any]:
    """A metadata object, or {} where the field is absent or not an object."""
    return v if isinstance(v, dict) else {}


def errno_name(e: int) -> str:
    return "-" + errno_mod.errorcode.get(e, str(e))


def optional_int(v: Any) -> int | None:
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


class _Call:
    """One failed call being classified: its numbers, the output row, what is missing."""

    def __init__(self, call: Any, ev: Evidence) -> None:
        self.row = call
        self.n = int(call.pages_requested)
        self.align = int(call.align)
        self.retries = int(call.busy_retries)
        self.tests, self.test_fails = int(call.isolate_tests), int(call.isolate_failures)
        err = optional_int(call.errno)
        err = -err if err is not None and err < 0 else err  # stored as the kernel's -E
        if err == 0:  # a failed call with errorno 0 says nothing: decide as without errno
            err = None
        self.err = err
        self.area = ev.areas.get(str(call.area))
        self.out: dict[str, Any] = {"blocker_causes": "", "blocker_pages": 0, "blocker_pfns": ""}
        self.missing: list[str] = []
        if not ev.errorno:
            self.missing.append("no errorno on this kernel")
        tried = call.pfn is not None and not pd.isna(call.pfn) or self.retries > 0
        tried = tried or self.tests > 0
        self.tried = tried or int(call.migrate_succeeded) + int(call.migrate_failed) > 0

    def done(self, cause: Cause, by: str, text: str) -> dict[str, Any]:
        if self.missing and by not in ("area count", "layout"):
            text += " [" + "; ".join(self.missing) + "]"
        self.out.update(cause=cause.value, decided_by=by, evidence=text)
        return self.out


def classify(call: Any, ev: Evidence) -> dict[str, Any]:
    """One failed call (a :func:`df_cma_calls` row) -> ``cause``, ``decided_by``,
    ``evidence`` and the blocker columns (the rules of the package docstring, in order)."""
    c = _Call(call, ev)
    for rule in (_by_area, _by_errno, _by_untried, _by_blockers):
        decided = rule(c, ev)
        if decided is not None:
            return decided
    return _by_counts(c, ev)


def _by_area(c: _Call, ev: Evidence) -> dict[str, Any] | None:
    """Rules 1-2: the area and its layout."""
    area, n, align = c.area, c.n, c.align
    if area is None or area.count is None:
        c.missing.append("area range unknown (no debugfs base_pfn/count)")
        return None
    if n > area.count:
        return c.done(
            Cause.TOO_LARGE_FOR_AREA,
            "area count",
            f"{n} pages requested, the area has {area.count} (debugfs count)",
        )
    if area.base_pfn is not None and not layout.can_ever_fit(area.base_pfn, area.count, n, align):
        first = layout.align_up(area.base_pfn, align)
        return c.done(
            Cause.NEVER_FITS,
            "layout",
            f"align {align}: the first 2^{align}-aligned position is base+"
            f"{first - area.base_pfn}, leaving {max(0, area.base_pfn + area.count - first)} "
            f"of the area's {area.count} pages < {n}; base aligned to order "
            f"{layout.base_align_order(area.base_pfn)}",
        )
    return None


def _by_errno(c: _Call, ev: Evidence) -> dict[str, Any] | None:
    """Rule 3: the kernel's own errno."""
    err, retries, call = c.err, c.retries, c.row
    if err is not None and err not in (0, EBUSY, ENOMEM):
        if err == EINTR:
            if str(getattr(call, "outcome_source", "")) == FATAL_SIGNAL_SOURCE:
                return c.done(
                    Cause.INTERRUPTED,
                    "fatal signal",
                    f"failed with SIGKILL pending at return (-EINTR inferred) after "
                    f"{retries} busy retries",
                )
            return c.done(
                Cause.INTERRUPTED,
                "errorno",
                f"errorno -EINTR: a fatal signal ended the call after {retries} busy retries",
            )
        return c.done(Cause.UNKNOWN, "errorno", f"errorno {errno_name(err)}: not a known ending")
    if err == ENOMEM and c.tried:
        return c.done(
            Cause.ENOMEM,
            "errorno",
            f"errorno -ENOMEM after a range was tried ({int(call.migrate_succeeded)} pages "
            f"migrated, {int(call.migrate_failed)} failed): no memory to migrate to",
        )
    return None


def _by_untried(c: _Call, ev: Evidence) -> dict[str, Any] | None:
    """Rule 4: no range tried: the bitmap search found nothing."""
    if c.tried:
        return None
    area, n, call = c.area, c.n, c.row
    why = "errorno -ENOMEM and no" if c.err == ENOMEM else "no"
    used = ev.used_before(str(call.area), int(call.start_ns))
    if area is not None and area.count is not None and used is not None:
        free = area.count - used[0]
        if n > free:
            return c.done(
                Cause.TOO_LARGE_FOR_AVAILABLE,
                "debugfs used",
                f"{why} range tried; {n} pages requested, {free} free of "
                f"{area.count} (debugfs used {used[0]}, read between "
                f"{used[1] / 1e9:.1f} s and {used[2] / 1e9:.1f} s, before the call at "
                f"{int(call.start_ns) / 1e9:.1f} s)",
            )
    if used is None:
        c.missing.append("no debugfs used sample surely read before the call")
    return c.done(
        Cause.NO_ALIGNED_FREE_RANGE,
        "no range tried",
        f"{why} range tried (no finish pfn, busy retries or isolation tests): no free "
        f"run of {n} pages at align {c.align} in the bitmap; "
        + _maxchunk_text(ev.maxchunk.get(str(call.area), {})),
    )


def _by_blockers(c: _Call, ev: Evidence) -> dict[str, Any] | None:
    """Rule 5, first part: a range tried and refused, with the pages that blocked it."""
    err, retries, call = c.err, c.retries, c.row
    if err is None and retries == 0:
        return c.done(
            Cause.UNKNOWN,
            "call counts",
            f"a range was tried and failed without a busy retry: -ENOMEM or -EINTR, which "
            f"only errorno tells apart ({c.tests} isolation tests, "
            f"{int(call.migrate_failed)} pages failed to migrate)",
        )
    bl = ev.call_blockers(int(call.pid), int(call.start_ns))
    if bl.empty:
        return None
    moved = bl[bl["stage"].isin(["migrate", "test_isolated"])]
    iso = bl[bl["stage"] == "isolate"]
    part = moved if not moved.empty else iso
    pfns = sorted({int(p) for p in part["pfn"]})
    first = part.drop_duplicates("pfn")
    counts = first.groupby(["cause", "state"]).size().sort_values(ascending=False)
    c.out["blocker_causes"] = ",".join(dict.fromkeys(str(k) for k, _ in counts.index))
    c.out["blocker_pages"] = len(pfns)
    c.out["blocker_pfns"] = ",".join(str(p) for p in pfns)
    classes = ", ".join(f"{k} {cause} ({st})" for (cause, st), k in counts.items())
    ending = f"errorno {errno_name(err)}" if err else f"{retries} busy retries (ended -EBUSY)"
    if not moved.empty:
        return c.done(
            Cause.MIGRATION_FAILED,
            "blockers",
            f"{ending}; {len(pfns)} distinct pages not migrated or still in use at the "
            f"isolation test (cma_blockers): {classes}",
        )
    return c.done(
        Cause.ISOLATION_REFUSED,
        "blockers",
        f"{ending}; pageblock isolation refused by {len(pfns)} pages (cma_blockers): {classes}",
    )


def _by_counts(c: _Call, ev: Evidence) -> dict[str, Any]:
    """Rule 5, without blockers: the per-call counts; else -EBUSY after N retries."""
    retries, tests, test_fails, call = c.retries, c.tests, c.test_fails, c.row
    if not ev.blockers:
        c.missing.append("blockers probe not run")
    if ev.migrate and int(call.migrate_failed) > 0:
        return c.done(
            Cause.MIGRATION_FAILED,
            "migrate counts",
            f"{retries} busy retries; {int(call.migrate_failed)} pages failed to migrate "
            f"(mm_migrate_pages during the call); which pages is not recorded",
        )
    if not ev.migrate:
        c.missing.append("migrate probe not run")
    if ev.isolate and retries > 0 and test_fails == 0:
        return c.done(
            Cause.ISOLATION_REFUSED,
            "isolation tests",
            f"{retries} busy retries and no failed isolation test ({tests} tests): "
            f"start_isolate_page_range() refused the ranges before migration",
        )
    if not ev.isolate:
        c.missing.append("test_pages_isolated not traced")
    return c.done(
        Cause.BUSY_RETRIES,
        "busy retries",
        f"-EBUSY after {retries} busy retries, {test_fails} of {tests} isolation tests "
        f"failed (first_busy_pfn: the first pfn not isolated)",
    )
