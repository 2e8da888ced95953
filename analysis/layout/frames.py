"""The layout frames: the zones and CMA areas of a recording (:func:`zones_of`,
:func:`cma_areas_of`), zone spans with their holes and overlaps (:func:`df_layout`) and
where each CMA area lies and what it can ever serve (:func:`df_cma_layout`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmaprof.analysis.layout.fit import base_align_order, fit_table
from cmaprof.kernel import procfs
from cmaprof.recording.metadata import METADATA, Metadata

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording


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
