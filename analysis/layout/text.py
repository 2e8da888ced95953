"""The layout as text: the report's memory-layout section (:func:`table_layout`) and
the same side by side for ``compare`` (:func:`table_layout_compare`)."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmaprof.analysis.layout.fit import fit_table
from cmaprof.analysis.layout.frames import cma_areas_of, cma_layout_frame, layout_frame, zones_of
from cmaprof.analysis.redact import fmt_pfn
from cmaprof.errors import BadInput
from cmaprof.kernel import procfs

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording


WIDTH = 80


def _pfn(v: Any) -> str:
    return fmt_pfn(None if v is None or pd.isna(v) else int(v))


def _num(v: Any) -> str:
    return "-" if v is None or pd.isna(v) else str(int(v))


def _fit_text(base: int, count: int) -> str:
    """``align<=9: any size <=C; 10-16: <=N; ...; >=K: none`` for one area (pages)."""
    table = fit_table(base, count)
    full = [o for o, p in table if p >= count]
    parts = [f"align<={full[-1]}: any size <={count}"] if full else []
    runs: list[list[int]] = []  # [first order, last order, pages] of equal largest requests
    for o, p in table:
        if 0 < p < count:
            if runs and runs[-1][2] == p:
                runs[-1][1] = o
            else:
                runs.append([o, o, p])
    parts += [f"{a}: <={p}" if a == b else f"{a}-{b}: <={p}" for a, b, p in runs]
    none = [o for o, p in table if p == 0]
    if none:
        parts.append(f">={none[0]}: none")
    return "; ".join(parts)


def _wrap_parts(first: str, text: str, indent: str = "    ") -> list[str]:
    """``text`` of ``; ``-joined parts on lines of <= 80 columns, broken between parts."""
    lines, cur = [], first
    for i, part in enumerate(text.split("; ")):
        piece = part if i == 0 else "; " + part
        if i and len(cur) + len(piece) > WIDTH:
            lines.append(cur + ";")
            cur = indent + part
        else:
            cur += piece
    return lines + [cur]


def table_layout(rec: Recording) -> str:
    """Zones per node (pfns, pages, holes, overlaps, CMA) and CMA areas (where, base
    alignment, which aligned requests can ever fit), <= 80 columns."""
    try:
        zones = zones_of(rec)
    except BadInput as exc:
        return f"Memory layout: zoneinfo unreadable ({exc})"
    if not zones:
        return "Memory layout: no /proc/zoneinfo in this recording"
    areas = cma_areas_of(rec)
    df = layout_frame(zones, areas)
    out = [
        "Memory layout (/proc/zoneinfo at the start; pages; end pfn exclusive)",
        (
            f"{'node zone':<12} {'start_pfn':>10} {'end_pfn':>10} {'spanned':>9} "
            f"{'present':>9} {'managed':>9} {'holes':>7} {'cma':>7}"
        ),
    ]
    notes = []
    for r in df.itertuples(index=False):
        if r.start_pfn is pd.NA and r.spanned == 0:
            continue
        out.append(
            f"{('N' + str(r.node) + ' ' + str(r.zone))[:12]:<12} {_pfn(r.start_pfn):>10} "
            f"{_pfn(r.end_pfn):>10} {r.spanned:>9} {r.present:>9} {r.managed:>9} "
            f"{r.holes:>7} {_num(r.cma):>7}"
        )
        for what, lst in (
            ("its node", r.overlaps_same_node),
            ("other nodes", r.overlaps_other_nodes),
        ):
            if lst:
                notes.append(f"N{r.node} {r.zone} span overlaps {what}: {lst}")
    empty = [f"N{r.node} {r.zone}" for r in df.itertuples(index=False) if r.spanned == 0]
    if empty:
        notes.append("unpopulated: " + ", ".join(empty))
    for n in notes:
        out.extend(textwrap.wrap(n, WIDTH, initial_indent="  ", subsequent_indent="    "))
    if areas:
        out += _cma_area_lines(zones, areas)
    return "\n".join(out)


def _cma_area_lines(zones: list[procfs.Zone], areas: list[procfs.CmaArea]) -> list[str]:
    """The report's CMA area lines: where each area is and which requests can fit."""
    out: list[str] = []
    cdf = cma_layout_frame(zones, areas)
    out.append("")
    out.append("CMA areas (align: cma_alloc() align order, 2**align pages from pfn 0)")
    out.append(
        f"{'area':<12} {'node zone':<12} {'base_pfn':>10} {'count':>9} {'base_align':>10}"
        "  placement"
    )
    for r in cdf.itertuples(index=False):
        where = "-" if r.zone is None or pd.isna(r.zone) else f"N{r.node} {r.zone}"
        out.append(
            f"{str(r.area)[:12]:<12} {where[:12]:<12} {_pfn(r.base_pfn):>10} "
            f"{_num(r.count):>9} {_num(r.base_align_order):>10}  {r.placement}"[:WIDTH]
        )
        if r.zones and (r.zone is None or pd.isna(r.zone) or "," in str(r.zones)):
            out.extend(
                textwrap.wrap(
                    f"in the spans of: {r.zones}",
                    WIDTH,
                    initial_indent="  ",
                    subsequent_indent="    ",
                )
            )
        if r.base_pfn is not pd.NA and r.count is not pd.NA:
            out.extend(_wrap_parts("  fits: ", _fit_text(int(r.base_pfn), int(r.count))))
    return out


def table_layout_compare(sides: list[Any]) -> str:
    """The layouts of the sides of ``cmaprof compare`` next to each other: per zone its
    span and CMA pages, per CMA area its zone, count and base alignment (the first
    recording of each side; a side whose recordings differ in layout says so).

    :param sides: :class:`cmaprof.analysis.compare.Side` objects.
    """
    label_w, col_w = 30, 23
    cols: list[dict[str, str]] = []
    differs = []
    for s in sides:
        vals, same = _side_layout(list(s.recordings))
        if not same:
            differs.append(s.name)
        cols.append(vals)
    keys: list[str] = []
    for prefix in ("N", "CMA "):  # zones first, then areas, each in order of appearance
        for vals in cols:
            keys += [k for k in vals if k.startswith(prefix) and k not in keys]
    out = ["Memory layout (first recording of each side; pages; max align: largest"]
    out.append("align order any request can fit at)")
    out.append(
        " " * label_w + "".join(f"{s.name[: col_w - 2]:>{col_w - 2}}  " for s in sides).rstrip()
    )
    for k in keys:
        out.append(
            (
                f"{k[: label_w - 1]:<{label_w}}"
                + "".join(f"{v.get(k, '-'):>{col_w - 2}}  " for v in cols)
            ).rstrip()
        )
    if differs:
        out.append("note: layouts differ between the recordings of: " + ", ".join(differs))
    return "\n".join(out)


def _side_layout(recs: list[Recording]) -> tuple[dict[str, str], bool]:
    """The layout values of a side's first recording, and whether all its recordings
    have the same layout."""
    vals: dict[str, str] = {}
    shapes = set()
    for i, rec in enumerate(recs):
        zones = zones_of(rec)
        areas = cma_areas_of(rec)
        shapes.add(
            tuple((z.node, z.name, z.start_pfn, z.spanned) for z in zones)
            + tuple((a.name, a.base_pfn, a.count) for a in areas)
        )
        if i:
            continue
        for r in layout_frame(zones, areas).itertuples(index=False):
            if r.spanned == 0:
                continue
            key = f"N{r.node} {r.zone}"
            vals[f"{key}: start_pfn"] = _pfn(r.start_pfn)
            vals[f"{key}: spanned"] = str(r.spanned)
            vals[f"{key}: holes"] = str(r.holes)
            vals[f"{key}: cma"] = _num(r.cma)
            if r.overlaps_same_node or r.overlaps_other_nodes:
                vals[f"{key}: overlap_pages"] = str(r.overlap_pages)
        for r in cma_layout_frame(zones, areas).itertuples(index=False):
            key = f"CMA {r.area}"
            vals[f"{key}: zone"] = (
                "-" if r.zone is None or pd.isna(r.zone) else f"N{r.node} {r.zone}"
            )
            vals[f"{key}: count"] = _num(r.count)
            vals[f"{key}: base_align"] = _num(r.base_align_order)
            vals[f"{key}: max align"] = _num(r.any_size_max_align)
    return vals, len(shapes) <= 1
