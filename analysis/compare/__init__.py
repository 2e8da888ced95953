"""Compare sides (kernels, layouts), each a recording or a directory of iterations.

A *side* is what one column of ``cmaprof compare`` shows: one recording, or a directory of
recordings taken as iterations of the same run (:func:`load_side`). The table has the
shape of mmtests' compare-kernels, which linux-mm readers know: per metric the Amean,
Stddev, CoeffVar, Min and Max over the side's iterations (latency: those and p50/p90/p99
over all of the side's cma_alloc() calls pooled), the baseline (the first side) first,
each other side with its change against the baseline's same statistic (an absolute
difference where the baseline is <= 0 or the change beyond +-1000%), and a ``*`` only
where a test says the difference is significant (:mod:`cmaprof.analysis.stats`:
Mann-Whitney U on per-iteration values, a bootstrap interval for percentiles). Metrics
with a better direction (failures, latency, lost events) say which.

Kernels need not have the same zones: rows are the union over all sides and a side whose
kernel lacks a zone, counter or probe shows ``-``. The **logical CMA** row lines up CMA
memory however the kernel lays it out: pages in CMA pageblocks inside DMA32/Normal/
Movable (``cma_area`` from the pfn) on one kernel, pages in a zone named CMA on another.
Those pages are also counted in their zone's row. GFP classes are spelled in the
baseline kernel's flag order (:func:`gfp_label`).

:func:`check_sides` refuses one side or one path twice and warns where the sides differ
in kernel, layout or workload. :func:`df_compare` gives the long table (one row per
metric, statistic and side, with the per-iteration values and the test) that
``--format json|csv`` prints; :func:`table_compare` the text.

Sides are in :mod:`.sides`, per-iteration metrics in :mod:`.metrics`, the long table in
:mod:`.frame`, the text in :mod:`.text`, JSON and CSV in :mod:`.export`; this package
re-exports their public names.
"""

from __future__ import annotations

from cmaprof.analysis.compare.export import FORMATS, compare_csv, compare_json
from cmaprof.analysis.compare.frame import (
    COLUMNS,
    LATENCY_STATS,
    MAX_PCT,
    STATS,
    change,
    df_compare,
    direction,
    gfp_order,
    zone_key,
)
from cmaprof.analysis.compare.metrics import (
    IterationMetrics,
    Key,
    check_sides,
    failures_table,
    gfp_label,
    iteration_metrics,
    latencies_ns,
    metrics_copy,
    zone_gfp_label,
)
from cmaprof.analysis.compare.sides import (
    LOGICAL_CMA,
    QUANTILES,
    SECTIONS,
    TOP_GFP,
    VMSTAT_PREFIXES,
    WIDTH,
    ZONE_ORDER,
    Side,
    layout_of,
    load_side,
    workload_of,
)
from cmaprof.analysis.compare.text import COL_W, LABEL_W, STAT_W, table_compare

__all__ = [
    "COLUMNS",
    "COL_W",
    "FORMATS",
    "LABEL_W",
    "LATENCY_STATS",
    "LOGICAL_CMA",
    "MAX_PCT",
    "QUANTILES",
    "SECTIONS",
    "STATS",
    "STAT_W",
    "TOP_GFP",
    "VMSTAT_PREFIXES",
    "WIDTH",
    "ZONE_ORDER",
    "IterationMetrics",
    "Key",
    "Side",
    "change",
    "check_sides",
    "compare_csv",
    "compare_json",
    "df_compare",
    "direction",
    "failures_table",
    "gfp_label",
    "gfp_order",
    "iteration_metrics",
    "latencies_ns",
    "layout_of",
    "load_side",
    "metrics_copy",
    "table_compare",
    "workload_of",
    "zone_gfp_label",
    "zone_key",
]
