"""Column names and dtypes of every table in a recording: the written contract.

Stored tables hold raw kernel values (gfp bits, zone index, migratetype number, CMA
area index); :mod:`cmaprof.analysis.recording` decodes them into names with the format
files and /proc files saved in the same recording. Units are in the column names
(``pages`` = base pages, ``_ns`` = nanoseconds). Time in series is relative to the
recording start (CLOCK_MONOTONIC).

``page_alloc`` (final cube; one row per distinct allocation class)
    gfp_flags uint64, node uint16, zone_idx uint8, order uint8, migratetype_id uint8,
    cma_area_idx uint8 (255: not in a CMA area), allocs uint64, pages uint64.
``page_alloc_fail`` (allocations that returned no page)
    gfp_flags uint64, order uint8, migratetype_id uint8, allocs uint64,
    pages uint64 (pages that were asked for).
``page_alloc_bulk`` (bulk-allocator pages: counted in pgalloc_*, no mm_page_alloc event)
    node uint16, zone_idx uint8, calls uint64, pages uint64.
``series/page_alloc`` (per interval, deltas)
    t_start_ns int64, t_end_ns int64 + the ``page_alloc`` columns.
``series/vmstat`` (per interval, long form, cumulative kernel values)
    t_ns int64, counter string, value int64.
"""

from __future__ import annotations

import pyarrow as pa

CMA_AREA_NONE = 255

PAGE_ALLOC_KEYS = [
    ("gfp_flags", pa.uint64()),
    ("node", pa.uint16()),
    ("zone_idx", pa.uint8()),
    ("order", pa.uint8()),
    ("migratetype_id", pa.uint8()),
    ("cma_area_idx", pa.uint8()),
]
COUNTS = [("allocs", pa.uint64()), ("pages", pa.uint64())]

SCHEMAS: dict[str, pa.Schema] = {
    "page_alloc": pa.schema(PAGE_ALLOC_KEYS + COUNTS),
    "page_alloc_fail": pa.schema(
        [("gfp_flags", pa.uint64()), ("order", pa.uint8()), ("migratetype_id", pa.uint8())] + COUNTS
    ),
    "page_alloc_bulk": pa.schema(
        [
            ("node", pa.uint16()),
            ("zone_idx", pa.uint8()),
            ("calls", pa.uint64()),
            ("pages", pa.uint64()),
        ]
    ),
}

SERIES_SCHEMAS: dict[str, pa.Schema] = {
    "page_alloc": pa.schema(
        [("t_start_ns", pa.int64()), ("t_end_ns", pa.int64())] + PAGE_ALLOC_KEYS + COUNTS
    ),
    "vmstat": pa.schema([("t_ns", pa.int64()), ("counter", pa.string()), ("value", pa.int64())]),
}


def to_table(name: str, rows: dict[str, list], series: bool = False) -> pa.Table:
    """Build the Arrow table ``name`` from column lists, with the declared dtypes."""
    schema = (SERIES_SCHEMAS if series else SCHEMAS)[name]
    return pa.table(
        {f.name: pa.array(rows.get(f.name, []), type=f.type) for f in schema}, schema=schema
    )
