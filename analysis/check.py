"""The check table: every count cmaprof traced next to a kernel counter it did not compute.

Columns: ``counter``, ``source`` (where the kernel's number comes from), ``unit``,
``traced`` (null where the probe that counts it did not run), ``kernel``, ``diff_pct`` =
(traced - kernel) / kernel (null where undefined: no probe, or the kernel counted 0 and
cmaprof did not), ``note`` (why a row is null, or compares fewer than all traced
events: a failed cma_alloc() the kernel did not count); page-allocator
rows also carry ``zone``, ``traced_pages`` (mm_page_alloc), ``bulk_pages`` (bulk
allocator fast path) and ``vmstat_pages``, with ``traced = traced_pages + bulk_pages``.
"""

from __future__ import annotations

import pandas as pd

from cmaprof.analysis import cma, migrate, page_alloc
from cmaprof.analysis.loaded import Recording

COLUMNS = [
    "counter",
    "source",
    "unit",
    "zone",
    "traced_pages",
    "bulk_pages",
    "vmstat_pages",
    "traced",
    "kernel",
    "diff_pct",
    "note",
]


def df_check(rec: Recording) -> pd.DataFrame:
    rows = []
    for r in page_alloc.df_check(rec).to_dict(orient="records"):
        traced = r["traced_pages"] + r["bulk_pages"]
        kernel = r["vmstat_pages"]
        rows.append(
            {
                "counter": f"pgalloc_{str(r['zone']).lower()}",
                "source": "/proc/vmstat",
                "unit": "pages",
                **r,
                "traced": traced,
                "kernel": kernel,
                "note": "",
            }
        )
    rows += cma.check_rows(rec) + migrate.check_rows(rec)
    return pd.DataFrame(rows, columns=COLUMNS)
