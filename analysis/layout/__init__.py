"""The physical memory layout behind a recording: zones per node, and the CMA areas in it.

Read only from what the recording stores: its ``proc/start/zoneinfo`` copy (else the
``zones`` of its metadata, parsed from the same file at the start) and the CMA areas of
its metadata (debugfs ``base_pfn``/``count``).

Zones (:func:`df_layout`): a zone spans ``[start_pfn, start_pfn + spanned)``; ``present``
pages exist in it, the rest of the span are ``holes``; ``managed`` are the pages the buddy
allocator got. Spans of different zones can overlap: ZONE_MOVABLE (``movablecore=``,
``kernelcore=``) of one node over the zones of another whose memory is interleaved with
it, ZONE_MOVABLE over Normal with ``kernelcore=mirror``, the proposed ZONE_CMA on several
nodes. Each zone lists the zones its span overlaps, on its own node and on others; a pfn
inside an overlap cannot be given a zone from the spans alone.

CMA areas (:func:`df_cma_layout`): where each area lies, and what it can ever serve.
``cma_alloc(count, align)`` only tries positions aligned to ``2**align`` pages relative
to pfn 0 (``cma_bitmap_aligned_offset()`` in mm/cma.c turns that into an offset from the
area's base), so a request fits only if ``ALIGN(base_pfn, 2**align) + count <=
base_pfn + area count``. An area whose base is aligned to order ``k`` serves any size up
to its count for ``align <= k``; above ``k`` the largest request shrinks, and from some
order on nothing fits at all, whatever is free. (``order_per_bit`` coarsens the bitmap
further; it is not in the recording, so it is taken as 0, as for the areas of
``cma=``/``hugetlb_cma=``/``cma_pernuma=``.)
"""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmaprof.analysis.redact import fmt_pfn
from cmaprof.errors import BadInput
from cmaprof.kernel import procfs
from cmaprof.recording.metadata import METADATA, Metadata

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording

WIDTH = 80
#: Largest alignment order considered (2**30 pages = 4 TiB of 4 KiB pages).
MAX_ORDER_CONSIDERED = 30

LAYOUT_COLUMNS = [
    "node",
    "zone_idx",
    "zone",
    "start_pfn",
    "end_pfn",
    "spanned",
    "present",
    "managed",
    "holes",
    "cma",
    "cma_areas",
    "overlaps_same_node",
    "overlaps_other_nodes",
    "overlap_pages",
]
CMA_LAYOUT_COLUMNS = [
    "area",
    "node",
    "zone",
    "zones",
    "base_pfn",
    "end_pfn",
    "count",
    "base_align_order",
    "full_size_max_align",
    "any_size_max_align",
    "placement",
]


# --------------------------------------------------------------------------- arithmetic


def align_up(pfn: int, order: int) -> int:
    """``ALIGN(pfn, 1 << order)``: the first pfn >= ``pfn`` aligned to ``2**order``."""
    mask = (1 << order) - 1
    return (pfn + mask) & ~mask


def base_align_order(base_pfn: int) -> int:
    """The largest order ``k`` with ``base_pfn`` a multiple of ``2**k`` (capped at
    :data:`MAX_ORDER_CONSIDERED`; pfn 0 is aligned to every order)."""
    if base_pfn == 0:
        return MAX_ORDER_CONSIDERED
    return min((base_pfn & -base_pfn).bit_length() - 1, MAX_ORDER_CONSIDERED)


def max_fit_pages(base_pfn: int, count: int, align_order: int) -> int:
    """The largest request (pages) a CMA area ``[base_pfn, base_pfn + count)`` can ever
    serve with alignment order ``align_order``, all of it free: 0 when no aligned
    position lies inside the area."""
    return max(0, base_pfn + count - align_up(base_pfn, align_order))


def can_ever_fit(base_pfn: int, count: int, pages: int, align_order: int) -> bool:
    """Whether a ``cma_alloc(pages, align_order)`` can succeed in this area at all."""
    return 0 < pages <= max_fit_pages(base_pfn, count, align_order)


def fit_table(base_pfn: int, count: int) -> list[tuple[int, int]]:
    """``(align_order, largest request in pages)`` from order 0 up to the first order at
    which nothing fits (that order included, with 0)."""
    out = []
    for order in range(MAX_ORDER_CONSIDERED + 1):
        pages = max_fit_pages(base_pfn, count, order)
        out.append((order, pages))
        if pages == 0:
            break
    return out


# --------------------------------------------------------------------------- sources


def zones_of(rec: Recording) -> list[procfs.Zone]:
    """The zones of ``rec``: its ``proc/start/zoneinfo`` copy, else ``proc/end``, else the
    ``zones`` metadata (written from /proc/zoneinfo at the start); [] if none."""
    for rel in ("proc/start/zoneinfo", "proc/end/zoneinfo"):
        text = rec.read_text(rel)
        if text:
            return procfs.parse_zoneinfo(text, str(rec.path / rel))
    out = []
    for z in rec.meta.zones:
        fields: dict[str, Any] = {k: getattr(z, k) for k in procfs.Zone.__dataclass_fields__}
        ints = ("node", "idx", "spanned", "present", "managed")
        optional = ("start_pfn", "cma")
        if (
            isinstance(fields["name"], str)
            and all(_is_int(fields[k]) for k in ints)
            and all(fields[k] is None or _is_int(fields[k]) for k in optional)
        ):
            out.append(procfs.Zone(**fields))
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def cma_areas_of(rec: Recording) -> list[procfs.CmaArea]:
    """The CMA areas of ``rec`` (metadata ``cma_areas``, debugfs ranges).

    A redacted view (:func:`cmaprof.analysis.redact.view`) nulls the pfns of its
    metadata; the layout is then taken from the recording's own metadata.json, so that
    the analysis stays the same and only printing hides the pfns.
    """
    areas = rec.meta.cma_areas
    if any(a.base_pfn is None for a in areas):
        try:
            stored = Metadata.from_json(json.loads((rec.path / METADATA).read_text())).cma_areas
        except (OSError, ValueError, AttributeError):
            stored = []
        if [a.name for a in stored] == [a.name for a in areas]:
            areas = stored
    out = []
    for a in areas:
        base, count = a.base_pfn, a.count
        out.append(
            procfs.CmaArea(
                str(a.name),
                base if _is_int(base) else None,
                count if _is_int(count) else None,
                str(a.source or ""),
            )
        )
    return out


# --------------------------------------------------------------------------- frames


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _zone_label(z: procfs.Zone) -> str:
    return f"N{z.node} {z.name}"


def layout_frame(zones: list[procfs.Zone], areas: list[procfs.CmaArea]) -> pd.DataFrame:
    """:func:`df_layout` from parsed zones and CMA areas (see there)."""
    populated = [z for z in zones if z.start_pfn is not None and z.spanned]
    rows = []
    for z in zones:
        same: list[str] = []
        other: list[str] = []
        overlap_pages = 0
        in_area: list[str] = []
        if z in populated:
            s0, s1 = int(z.start_pfn), int(z.end_pfn)  # type: ignore[arg-type]
            for o in populated:
                if o is z:
                    continue
                n = _overlap(s0, s1, int(o.start_pfn), int(o.end_pfn))  # type: ignore[arg-type]
                if n:
                    (same if o.node == z.node else other).append(_zone_label(o))
                    overlap_pages += n
            for a in areas:
                if (
                    a.base_pfn is not None
                    and a.end_pfn is not None
                    and _overlap(s0, s1, a.base_pfn, a.end_pfn)
                ):
                    in_area.append(a.name)
        rows.append(
            {
                "node": z.node,
                "zone_idx": z.idx,
                "zone": z.name,
                "start_pfn": z.start_pfn,
                "end_pfn": z.end_pfn,
                "spanned": z.spanned,
                "present": z.present,
                "managed": z.managed,
                "holes": z.spanned - z.present,
                "cma": z.cma,
                "cma_areas": ",".join(in_area),
                "overlaps_same_node": ",".join(same),
                "overlaps_other_nodes": ",".join(other),
                "overlap_pages": overlap_pages,
            }
        )
    df = pd.DataFrame(rows, columns=LAYOUT_COLUMNS)
    for c in ("start_pfn", "end_pfn", "cma"):
        df[c] = df[c].astype("Int64")
    for c in ("node", "zone_idx", "spanned", "present", "managed", "holes", "overlap_pages"):
        df[c] = df[c].astype("int64")
    return df


def cma_layout_frame(zones: list[procfs.Zone], areas: list[procfs.CmaArea]) -> pd.DataFrame:
    """:func:`df_cma_layout` from parsed zones and CMA areas (see there)."""
    populated = [z for z in zones if z.start_pfn is not None and z.spanned]
    cands: dict[str, list[procfs.Zone]] = {}
    for a in areas:
        if a.base_pfn is None or a.end_pfn is None:
            cands[a.name] = []
            continue
        cands[a.name] = [
            z
            for z in populated
            if _overlap(a.base_pfn, a.end_pfn, int(z.start_pfn), int(z.end_pfn))  # type: ignore[arg-type]
        ]
    chosen = _resolve_zones(areas, cands)
    rows = []
    for a in areas:
        cz = cands[a.name]
        z = chosen.get(a.name)
        if a.base_pfn is None or a.count is None:
            placement = "no range (sysfs)"
        elif not cz:
            placement = "outside every span"
        elif len(cz) == 1:
            placement = "one span"
        elif z is not None:
            placement = "spans overlap: by cma count"
        else:
            placement = "spans overlap: ambiguous"
        rows.append(
            {
                "area": a.name,
                "node": None if z is None else z.node,
                "zone": None if z is None else z.name,
                "zones": ",".join(_zone_label(o) for o in cz),
                "base_pfn": a.base_pfn,
                "end_pfn": a.end_pfn,
                "count": a.count,
                "base_align_order": None if a.base_pfn is None else base_align_order(a.base_pfn),
                "full_size_max_align": _max_align(a, lambda pages, cnt: pages >= cnt),
                "any_size_max_align": _max_align(a, lambda pages, cnt: pages > 0),
                "placement": placement,
            }
        )
    df = pd.DataFrame(rows, columns=CMA_LAYOUT_COLUMNS)
    for c in (
        "node",
        "base_pfn",
        "end_pfn",
        "count",
        "base_align_order",
        "full_size_max_align",
        "any_size_max_align",
    ):
        df[c] = df[c].astype("Int64")
    return df


def _max_align(a: procfs.CmaArea, ok: Any) -> int | None:
    """The largest align order for which ``ok(largest request, area count)`` holds."""
    if a.base_pfn is None or a.count is None:
        return None
    best = None
    for order, pages in fit_table(a.base_pfn, a.count):
        if ok(pages, a.count):
            best = order
    return best


def _resolve_zones(
    areas: list[procfs.CmaArea], cands: dict[str, list[procfs.Zone]]
) -> dict[str, procfs.Zone]:
    """The zone of each area: the one span that holds it, or, where spans overlap, the
    one candidate whose zoneinfo ``cma`` count still has room for the area once the areas
    already placed are taken off (repeated until nothing changes)."""
    room = {(z.node, z.idx): z.cma for zs in cands.values() for z in zs}
    chosen: dict[str, procfs.Zone] = {}
    changed = True
    while changed:
        changed = False
        for a in areas:
            if a.name in chosen or not cands[a.name] or a.count is None:
                continue
            fits = [
                z
                for z in cands[a.name]
                if room[(z.node, z.idx)] is None or room[(z.node, z.idx)] >= a.count  # type: ignore[operator]
            ]
            if len(cands[a.name]) == 1:
                fits = cands[a.name]
            if len(fits) == 1:
                z = fits[0]
                chosen[a.name] = z
                r = room[(z.node, z.idx)]
                if r is not None:
                    room[(z.node, z.idx)] = r - a.count
                changed = True
    return chosen


def df_layout(rec: Recording) -> pd.DataFrame:
    """Per node and zone (every block of /proc/zoneinfo, populated or not): ``start_pfn``,
    ``end_pfn`` (exclusive; null when unpopulated), ``spanned``, ``present``, ``managed``,
    ``holes`` (spanned - present), ``cma`` (the zone's ``cma`` line: CMA pages the kernel
    counts in the zone; null on kernels without it), ``cma_areas`` (areas whose range
    meets the span), ``overlaps_same_node`` / ``overlaps_other_nodes`` (``N<node> <zone>``
    of every other zone whose span meets this one) and ``overlap_pages`` (pfns shared with
    them, summed over the other zones). All in pages of ``page_size``."""
    return layout_frame(zones_of(rec), cma_areas_of(rec))


def df_cma_layout(rec: Recording) -> pd.DataFrame:
    """Per CMA area: ``node`` and ``zone`` it lies in (from the spans; where spans overlap,
    from the zoneinfo ``cma`` counts; null when neither decides), ``zones`` (every zone
    span it meets), ``base_pfn``, ``end_pfn``, ``count`` (pages), ``base_align_order``
    (largest order the base is aligned to), ``full_size_max_align`` (largest align order
    at which a request of the whole area fits), ``any_size_max_align`` (largest align
    order at which any request fits: above it, no position can ever fit) and
    ``placement`` (how the zone was decided: ``one span``, ``spans overlap: by cma
    count``, ``spans overlap: ambiguous``, ``outside every span``, ``no range (sysfs)``)."""
    return cma_layout_frame(zones_of(rec), cma_areas_of(rec))


def df_cma_fit(rec: Recording) -> pd.DataFrame:
    """Per CMA area and align order (0 up to the first order nothing fits): the largest
    request in pages that can ever fit (``max_pages``), all of the area free."""
    rows = []
    for a in cma_areas_of(rec):
        if a.base_pfn is None or a.count is None:
            continue
        for order, pages in fit_table(a.base_pfn, a.count):
            rows.append({"area": a.name, "align_order": order, "max_pages": pages})
    return pd.DataFrame(rows, columns=["area", "align_order", "max_pages"])


# --------------------------------------------------------------------------- text


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
    return "\n".join(out)


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
        vals: dict[str, str] = {}
        recs = list(s.recordings)
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
        if len(shapes) > 1:
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
