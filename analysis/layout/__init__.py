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

The arithmetic is in :mod:`.fit`, the frames in :mod:`.frames`, the text in :mod:`.text`;
this package re-exports their public names.
"""

from __future__ import annotations

from cmaprof.analysis.layout.fit import (
    MAX_ORDER_CONSIDERED,
    align_up,
    base_align_order,
    can_ever_fit,
    fit_table,
    max_fit_pages,
)
from cmaprof.analysis.layout.frames import (
    CMA_LAYOUT_COLUMNS,
    LAYOUT_COLUMNS,
    cma_areas_of,
    cma_layout_frame,
    df_cma_fit,
    df_cma_layout,
    df_layout,
    layout_frame,
    zones_of,
)
from cmaprof.analysis.layout.text import WIDTH, table_layout, table_layout_compare

__all__ = [
    "CMA_LAYOUT_COLUMNS",
    "LAYOUT_COLUMNS",
    "MAX_ORDER_CONSIDERED",
    "WIDTH",
    "align_up",
    "base_align_order",
    "can_ever_fit",
    "cma_areas_of",
    "cma_layout_frame",
    "df_cma_fit",
    "df_cma_layout",
    "df_layout",
    "fit_table",
    "layout_frame",
    "max_fit_pages",
    "table_layout",
    "table_layout_compare",
    "zones_of",
]
