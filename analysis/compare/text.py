"""The comparison as fixed-width text in the shape of mmtests' compare-kernels
(:func:`table_compare`)."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import pandas as pd

from cmaprof.analysis import stats
from cmaprof.analysis.compare.by_stack import TITLE as BY_STACK_TITLE
from cmaprof.analysis.compare.by_stack import df_compare_by_stack
from cmaprof.analysis.compare.frame import MAX_PCT, df_compare
from cmaprof.analysis.compare.sides import QUANTILES, SECTIONS, WIDTH, Side
from cmaprof.kernel import formats


def _fmt_value(v: float | None, unit: str, stat: str = "Amean") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "%" or stat == "CoeffVar" or (abs(v) < 100 and v != int(v)):
        return f"{v:.2f}"
    return f"{v:.0f}"


def _fmt_change(r: Any, unit: str) -> str:
    """11 characters: ``(  +12.34%)``, an absolute difference ``(   +61826)``, ``*`` for
    ``(`` and ``)`` where significant, blank without a baseline."""
    shown = r.change_shown
    if not isinstance(shown, str) or not shown:
        return " " * 11
    if shown == "pct":
        pct = 0.0 if pd.isna(r.change_pct) else float(r.change_pct)
        txt = f"{pct:+8.2f}%"
    else:
        diff = float(r.change_abs)
        txt = f"{_fmt_value(abs(diff), unit, r.stat)}"
        txt = f"{'+' if diff >= 0 else '-'}{txt}"
        txt = f"{txt:>9}"
    return f"*{txt}*" if r.significant else f"({txt})"


#: Width of the statistic name at the start of a text row (mmtests: ``Amean``).
STAT_W = 9


_DIRECTION_TAG = {"lower": " [lower]", "higher": " [higher]"}


def _varies(g: pd.DataFrame) -> bool:
    """Whether any side's iterations differ (else Stddev..Max repeat the mean)."""
    spread = g.loc[g["stat"] == "Stddev", "value"]
    return bool((spread.fillna(0) > 0).any())


def table_compare(sides: list[Side], alpha: float = stats.ALPHA, wide: bool = False) -> str:
    """mmtests compare-kernels-style text: per metric Amean, Stddev, CoeffVar, Min, Max
    (and p50/p90/p99 of latency), baseline first with its value, each other side with
    its change; ``*`` where a test says the difference is significant.

    :param wide: every label on the line of its numbers (for grep), wider than 80 columns
    """
    df = df_compare(sides, alpha)
    out = _preamble(sides, alpha)
    rows = df.assign(_label=[_label(r.section, r.metric, r.unit) for r in df.itertuples()])
    rows["_label"] = [
        lab + _DIRECTION_TAG.get(str(d), "") for lab, d in zip(rows["_label"], rows["direction"])
    ]
    label_w = LABEL_W
    if wide and not rows.empty:
        label_w = max(LABEL_W, STAT_W + int(rows["_label"].str.len().max()) + 1)
    n = [len(s.recordings) for s in sides]
    head = " " * label_w + " ".join(f"{s.name[: COL_W - 1]:>{COL_W - 1}}" for s in sides)
    nline = " " * label_w + " ".join(f"{'n=' + str(k):>{COL_W - 1}}" for k in n)
    notes: dict[str, None] = {}
    for sec, title in SECTIONS.items():
        part = rows[rows["section"] == sec]
        out.append("")
        out.extend(textwrap.wrap(title, WIDTH))
        if part.empty:
            if df.attrs["recorded"].get(sec):
                out.append("  none on any side")
            else:
                out.append("  not recorded" + _not_recorded_by(sides, sec))
            continue
        out.append(head.rstrip())
        out.append(nline.rstrip())
        for (_metric, _unit), g in part.groupby(["metric", "unit"], sort=False):
            out += _metric_lines(g, label_w, wide, notes)
    out += _by_stack_lines(sides, alpha, (label_w, head, nline), wide, notes)  # issue 17
    notes.pop("", None)
    shown = [n_ for n_ in notes if "iterations: Mann-Whitney" not in n_]
    if shown:
        out.append("")
        out.append("not tested:")
        for note in shown:
            out.extend(textwrap.wrap(note, WIDTH, initial_indent="  ", subsequent_indent="    "))
    # issue 12: the layouts of the sides next to each other (analysis/layout/text.py) and
    # the failed calls by cause (analysis/causes/text.py)
    from cmaprof.analysis.causes import table_causes_compare
    from cmaprof.analysis.layout import table_layout_compare

    out += ["", table_layout_compare(sides), "", table_causes_compare(sides)]
    return "\n".join(out) + "\n"


def _by_stack_lines(
    sides: list[Side],
    alpha: float,
    layout: tuple[int, str, str],
    wide: bool,
    notes: dict[str, None],
) -> list[str]:
    """The stack classes section (:mod:`.by_stack`); none unless every side has them.

    :param layout: the label width, the header line and the n= line of the table
    """
    df = df_compare_by_stack(sides, alpha)
    if df.empty:
        return []
    label_w, head, nline = layout
    if wide:
        label_w = max(label_w, STAT_W + int(df["metric"].str.len().max()) + 1)
    out = ["", *textwrap.wrap(BY_STACK_TITLE, WIDTH), head.rstrip(), nline.rstrip()]
    df = df.assign(_label=df["metric"])
    for _metric, g in df.groupby("metric", sort=False):
        out += _metric_lines(g, label_w, wide, notes)
    return out


def _preamble(sides: list[Side], alpha: float) -> list[str]:
    """How to read the table, the sides, and which sides no test can tell apart."""
    out = [
        "cmaprof compare: statistics over each side's iterations (latency: over all",
        "cma_alloc() calls of a side); (change against the baseline's same statistic):",
        "  (+1.23%) relative; (+456) absolute, where the baseline is <= 0 or the change",
        f"  beyond +-{MAX_PCT:g}%; Stddev..Max shown where a side's iterations differ",
        f"*change* = significant at alpha={alpha:g}, two-sided: Amean: Mann-Whitney U on",
        "  per-iteration values, exact p; latency p50/p90/p99: bootstrap CI of the",
        "  difference, calls resampled; other statistics are not tested",
        "[lower] / [higher]: the direction that is better, where a metric has one",
    ]
    for i, s in enumerate(sides):
        tag = "baseline" if i == 0 else f"side {i + 1}"
        out.extend(
            textwrap.wrap(
                f"{tag} {s.describe()}",
                WIDTH,
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
        )
    n = [len(s.recordings) for s in sides]
    untestable = [
        f"{sides[i].name} ({n[0]} vs {n[i]} iterations)"
        for i in range(1, len(sides))
        if stats.mwu_min_p(n[0], n[i]) > alpha
    ]
    if untestable:
        out.extend(
            textwrap.wrap(
                "no test possible on per-iteration rows for "
                + ", ".join(untestable)
                + f": Mann-Whitney U cannot reach p<={alpha:g} with so few iterations "
                f"(needs {stats.min_iterations(alpha)} per side); no * there",
                WIDTH,
                break_on_hyphens=False,
            )
        )
    return out


def _metric_lines(g: pd.DataFrame, label_w: int, wide: bool, notes: dict[str, None]) -> list[str]:
    """The lines of one metric (its rows ``g``: every statistic of every side); the
    notes of untested rows are added to ``notes``."""
    out: list[str] = []
    label = str(g["_label"].iloc[0])
    shown_stats = [
        st
        for st in g["stat"].unique()
        if st == "Amean" or st in QUANTILES or _varies(g) or (st == "Max" and _is_lat(g))
    ]
    own_line = not wide and len(label) > label_w - STAT_W - 1
    if own_line:
        out.extend(_wrap_label(label, WIDTH))
    for st in shown_stats:
        cells = []
        for i, r in enumerate(g[g["stat"] == st].itertuples(index=False)):
            chg = _fmt_change(r, r.unit)
            if i == 0 and chg.strip():
                chg = "(    0.00%)"
            cells.append(f"{_fmt_value(r.value, r.unit, r.stat):>10} {chg}")
            if isinstance(r.note, str) and r.note:
                notes[r.note] = None
        lab = f"{st:<{STAT_W}}" + ("" if own_line else label)
        out.append((f"{lab:<{label_w}}" + " ".join(cells)).rstrip())
    return out


def _is_lat(g: pd.DataFrame) -> bool:
    return bool((g["metric"] == "latency").any())


def _not_recorded_by(sides: list[Side], sec: str) -> str:
    if sec == "failures":
        return " (needs the blockers probe's cma_failures table)"
    return ""


def _label(sec: str, metric: str, unit: str) -> str:
    if sec == "zone_gfp":
        zone, _, gfp = metric.partition(": ")
        return f"{zone}: {gfp}"
    if unit in ("pages", "delta", "calls") or sec in ("cma_gfp", "failures", "migrate", "lost"):
        return metric
    return f"{metric} ({unit})"


def _wrap_label(label: str, width: int) -> list[str]:
    """Split a long label (GFP strings) at '|' or spaces, continuation lines indented."""
    lines = formats.wrap_flags(label, width - 2)
    return [lines[0], *("  " + line for line in lines[1:])]


#: Where the first value column starts in the 80-column form.
LABEL_W = 34


COL_W = 23
