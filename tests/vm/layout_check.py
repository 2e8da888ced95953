"""The layout report (issue 12 item 3) against the guest's own /proc/zoneinfo and CMA
debugfs, read by the guest script outside cmaprof and parsed here independently of
cmaprof's parser (a few regular expressions, not ``cmaprof.kernel.procfs``).

Used by a 1-node guest (test_coexist) and a 2-node guest with ``movablecore=`` and a
per-node ``hugetlb_cma=`` area (test_causes).
"""

from __future__ import annotations

import re

import pandas as pd

from cmaprof.analysis.layout import MAX_ORDER_CONSIDERED

#: The guest script's lines that save what this module checks against.
SAVE_SCRIPT = r"""
cat /proc/zoneinfo >"$out/zoneinfo"
for a in /sys/kernel/debug/cma/*/; do
    echo "$(basename $a) $(cat $a/base_pfn) $(cat $a/count)" >>"$out/cma_debugfs"
done
"""


def kernel_zones(zoneinfo: str) -> dict[tuple[int, str], dict[str, int | None]]:
    """(node, zone) -> spanned, present, managed, start_pfn, cma as /proc/zoneinfo says."""
    zones: dict[tuple[int, str], dict[str, int | None]] = {}
    cur: dict[str, int | None] | None = None
    for line in zoneinfo.splitlines():
        m = re.match(r"Node (\d+), zone\s+(\S+)", line)
        if m:
            cur = {"start_pfn": None, "cma": None}
            zones[(int(m.group(1)), m.group(2))] = cur
            continue
        m = re.match(r"\s+(spanned|present|managed|cma)\s+(\d+)$", line)
        if m and cur is not None:
            cur[m.group(1)] = int(m.group(2))
        m = re.match(r"\s+start_pfn:\s+(\d+)$", line)
        if m and cur is not None:
            cur["start_pfn"] = int(m.group(1))
    return zones


def kernel_areas(text: str) -> dict[str, tuple[int, int]]:
    """CMA area -> (base_pfn, count) from debugfs."""
    out = {}
    for line in text.splitlines():
        name, base, count = line.split()
        out[name] = (int(base), int(count))
    return out


def _align_order(pfn: int) -> int:
    return (pfn & -pfn).bit_length() - 1 if pfn else 64


def assert_layout_is_the_kernels(
    layout: pd.DataFrame, cma_layout: pd.DataFrame, zoneinfo: str, debugfs: str
) -> None:
    """Every zone row and every CMA area row of cmaprof's layout equals the kernel's."""
    zones = kernel_zones(zoneinfo)
    got = {(int(r.node), str(r.zone)): r for r in layout.itertuples()}
    assert set(got) == set(zones), (sorted(got), sorted(zones))
    for key, k in zones.items():
        r = got[key]
        for col in ("spanned", "present", "managed"):
            assert int(getattr(r, col)) == k[col], (key, col, getattr(r, col), k[col])
        assert int(r.holes) == k["spanned"] - k["present"], key
        if k["start_pfn"] is not None:
            assert int(r.start_pfn) == k["start_pfn"], key
            assert int(r.end_pfn) == k["start_pfn"] + k["spanned"], key
        if k["cma"] is not None:
            assert int(r.cma) == k["cma"], (key, r.cma, k["cma"])
    areas = kernel_areas(debugfs)
    rows = {str(r.area): r for r in cma_layout.itertuples()}
    assert set(rows) == set(areas), (sorted(rows), sorted(areas))
    for name, (base, count) in areas.items():
        r = rows[name]
        assert (int(r.base_pfn), int(r.count)) == (base, count), name
        assert int(r.base_align_order) == min(_align_order(base), MAX_ORDER_CONSIDERED), name
        # the populated zone(s) whose span holds the area's first page
        holders = [
            z
            for (node, z), k in zones.items()
            if k["present"]
            and k["start_pfn"] is not None
            and k["start_pfn"] <= base < k["start_pfn"] + k["spanned"]
        ]
        assert str(r.zone) in holders, (name, r.zone, holders)
        (node,) = {
            n
            for (n, z), k in zones.items()
            if z == r.zone
            and k["present"]
            and k["start_pfn"] is not None
            and k["start_pfn"] <= base < k["start_pfn"] + k["spanned"]
        }
        assert int(r.node) == node, name
    # CMA pages per zone (the zoneinfo `cma` line) add up to the areas' pages
    cma_kernel = sum(k["cma"] or 0 for k in zones.values())
    assert cma_kernel == sum(c for _, c in areas.values()), (cma_kernel, areas)
