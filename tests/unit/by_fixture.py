"""A hand-made ``record --by comm,tgid,stack`` recording (issue 17): the host-6.18-anon
recording with its cube replaced by three classes whose who-allocates tables are easy
to check by hand.

Cube (Node 0 Normal):
  A = GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP, order 0: 900 pages outside CMA,
      200 pages in the CMA area ``reserved``
  B = GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP, order 0: 100 pages
page_alloc_by (comm, tgid, stack; self_tgid 200 = cmaprof):
  A outside CMA: memhog/100 stack 1 500, cmaprof/200 stack 1 100, sh/300 stack 2 50,
      sh/300 no stack (EFAULT) 50; 200 pages not keyed (the map was full)
  A in CMA: memhog/100 stack 4 200
  B: cmaprof/200 stack 3 60, memhog/100 stack 3 40
Stacks 1 and 4: do_anonymous_page (two call sites), 2: do_wp_page, 3: pte_alloc_one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[1] / "data" / "recordings"
A, B = 1314250, 4459968
A_TEXT = "GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP"
B_TEXT = "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP"
EFAULT = 14

_GLUE = ["bpf_prog_6deef7357e7b4530_page_alloc+0x9a [bpf]", "__traceiter_mm_page_alloc+0x41"]
_ENTRY = ["__alloc_frozen_pages_noprof+0x2b7", "alloc_pages_mpol+0x86"]
_FAULT = ["__handle_mm_fault+0xa6c", "handle_mm_fault+0xd3", "exc_page_fault+0x176"]
STACKS = {
    1: _GLUE + _ENTRY + ["vma_alloc_folio_noprof+0x6a", "do_anonymous_page+0x1ff"] + _FAULT,
    2: _GLUE + _ENTRY + ["vma_alloc_folio_noprof+0x6a", "do_wp_page+0x2c0"] + _FAULT,
    3: _GLUE
    + _ENTRY
    + ["alloc_pages_noprof+0x4c", "pte_alloc_one+0x19", "__pte_alloc+0x26"]
    + ["do_anonymous_page+0x80f"]
    + _FAULT,
    4: _GLUE + _ENTRY + ["vma_alloc_folio_noprof+0x6a", "do_anonymous_page+0x300"] + _FAULT,
}

# gfp, cma_area_idx, migratetype_id, pages (order 0: allocs = pages)
CUBE = [(A, 255, 1, 900), (A, 0, 1, 200), (B, 255, 0, 100)]
# gfp, cma_area_idx, migratetype_id, tgid, comm, stack_id, stack_errno, pages
BY = [
    (A, 255, 1, 100, "memhog", 1, 0, 500),
    (A, 255, 1, 200, "cmaprof", 1, 0, 100),
    (A, 255, 1, 300, "sh", 2, 0, 50),
    (A, 255, 1, 300, "sh", None, EFAULT, 50),
    (A, 0, 1, 100, "memhog", 4, 0, 200),
    (B, 255, 0, 200, "cmaprof", 3, 0, 60),
    (B, 255, 0, 100, "memhog", 3, 0, 40),
]
BY_META = {
    "by_keys": ["comm", "tgid", "stack"],
    "max_entries": 16384,
    "entries_used": len(BY),
    "overflow_allocs": 200,
    "overflow_pages": 200,
    "self_tgid": 200,
    "workload_tgid": 100,
    "stack_map": "pa_stacks",
}


def _keys(rows: list[tuple]) -> dict[str, pa.Array]:
    n = len(rows)
    return {
        "gfp_flags": pa.array([r[0] for r in rows], pa.uint64()),
        "node": pa.array([0] * n, pa.uint16()),
        "zone_idx": pa.array([2] * n, pa.uint8()),
        "order": pa.array([0] * n, pa.uint8()),
        "migratetype_id": pa.array([r[2] for r in rows], pa.uint8()),
        "cma_area_idx": pa.array([r[1] for r in rows], pa.uint8()),
    }


def _counts(pages: list[int]) -> dict[str, pa.Array]:
    return {"allocs": pa.array(pages, pa.uint64()), "pages": pa.array(pages, pa.uint64())}


def make(tmp: Path, name: str = "by", by: list[tuple] | None = None, scale: int = 1) -> Path:
    """Write the recording under ``tmp/name``; ``by`` replaces :data:`BY`, ``scale``
    multiplies every count (a second side for compare)."""
    by = BY if by is None else by
    rec = tmp / name
    shutil.copytree(DATA / "host-6.18-anon", rec)
    t = rec / "tables"
    cube = _keys(CUBE) | _counts([r[3] * scale for r in CUBE])
    pq.write_table(pa.table(cube), t / "page_alloc.parquet")
    cols = (
        _keys(by)
        | {
            "tgid": pa.array([r[3] for r in by], pa.uint32()),
            "comm": pa.array([r[4] for r in by], pa.string()),
            "stack_id": pa.array([r[5] for r in by], pa.int32()),
            "stack_errno": pa.array([r[6] or None for r in by], pa.int32()),
        }
        | _counts([r[7] * scale for r in by])
    )
    pq.write_table(pa.table(cols), t / "page_alloc_by.parquet")
    rows = [(sid, lvl, f) for sid, frames in STACKS.items() for lvl, f in enumerate(frames)]
    stacks = {
        "map": pa.array(["pa_stacks"] * len(rows), pa.string()),
        "stack_id": pa.array([r[0] for r in rows], pa.int32()),
        "level": pa.array([r[1] for r in rows], pa.uint16()),
        "frame": pa.array([r[2] for r in rows], pa.string()),
    }
    pq.write_table(pa.table(stacks), t / "stacks.parquet")
    meta = json.loads((rec / "metadata.json").read_text())
    meta["cma_areas"] = [{"name": "reserved", "base_pfn": 0x200000, "count": 16384}]
    meta["page_alloc"]["by"] = dict(
        BY_META, overflow_pages=200 * scale, overflow_allocs=200 * scale
    )
    (rec / "metadata.json").write_text(json.dumps(meta, indent=2))
    return rec
