"""What ``cmaprof plot SIDE... -o OUTDIR`` writes (:data:`SIDE_PLOTS`,
:func:`save_sides`), and why a figure is left out when the sides lack its data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from cmaprof.analysis import compare, counterfactual
from cmaprof.analysis.causes import plot_failed_calls_by_cause  # issue 12
from cmaprof.analysis.cma import df_cma_calls
from cmaprof.analysis.compare import Side
from cmaprof.analysis.plots.sides import (
    plot_alloc_rate,
    plot_cma_latency_cdf,
    plot_cma_utilisation,
    plot_failure_causes,
    plot_zone_gfp_sides,
)


def _why_no_latency(sides: list[Side]) -> str | None:
    lats = [compare.latencies_ns(s) for s in sides]
    if any(lat is not None and len(lat) for lat in lats):
        return None
    if all(lat is None for lat in lats):
        return "no side ran the cma probe"
    return "the cma probe saw no cma_alloc() call"


def _why_no_zone_gfp(sides: list[Side]) -> str | None:
    if any(not r.df_page_alloc().empty for s in sides for r in s.recordings):
        return None
    return "no page allocation traced"


def _why_no_utilisation(sides: list[Side]) -> str | None:
    for s in sides:
        for r in s.recordings:
            if not r.df_cma_used_series().empty:
                return None
            if counterfactual.has_cma(r) and not r.df_page_alloc_series().empty:
                return None
    return "no CMA area, or no interval series of it (record with -i SECONDS)"


def _why_no_failures(sides: list[Side]) -> str | None:
    frames = [compare.failures_table(r) for s in sides for r in s.recordings]
    if all(f is None for f in frames):
        return "needs the blockers probe's cma_failures table"
    if all(f is None or f.empty for f in frames):
        return "no cma_alloc() failure recorded"
    return None


def _why_no_failed_calls(sides: list[Side]) -> str | None:
    for s in sides:
        for r in s.recordings:
            calls = df_cma_calls(r)
            if not calls.empty and (~calls["success"]).any():
                return None
    return "no failed cma_alloc() call recorded"


def _why_no_rate(sides: list[Side]) -> str | None:
    if any(not r.df_page_alloc_series().empty for s in sides for r in s.recordings):
        return None
    return "no interval series (record with -i SECONDS)"


#: name -> (figure, why it would be empty: None when it has data)
SIDE_PLOTS: dict[str, tuple[Callable[[list[Side]], Figure], Callable[[list[Side]], str | None]]]


SIDE_PLOTS = {
    "cma_latency_cdf": (plot_cma_latency_cdf, _why_no_latency),
    "zone_gfp": (plot_zone_gfp_sides, _why_no_zone_gfp),
    "cma_utilisation": (plot_cma_utilisation, _why_no_utilisation),
    "failure_causes": (plot_failure_causes, _why_no_failures),
    # issue 12: every cause class of failed calls
    "failed_calls_by_cause": (plot_failed_calls_by_cause, _why_no_failed_calls),
    "alloc_rate": (plot_alloc_rate, _why_no_rate),
}


def save_sides(
    sides: list[Side],
    outdir: Path,
    fmt: str = "png",
    skipped: dict[str, str] | None = None,
) -> list[Path]:
    """Write each side figure that has data into ``outdir`` as ``NAME.fmt``; return the
    paths. Figures without data are not written: ``skipped`` (if given) gets NAME ->
    why."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (fn, why_empty) in SIDE_PLOTS.items():
        why = why_empty(sides)
        if why is not None:
            if skipped is not None:
                skipped[name] = why
            continue
        path = outdir / f"{name}.{fmt}"
        fn(sides).savefig(path)
        paths.append(path)
    return paths
