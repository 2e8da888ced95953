"""The page_alloc cube's slot array as the collector reads it, and the cache of the mm
header constants that lets a later compile skip the headers (no BCC, no root)."""

from __future__ import annotations

import numpy as np

from cmaprof.collectors import bccload
from cmaprof.collectors.page_alloc import KEY_FIELDS, cube_delta, slots_to_cube
from cmaprof.probes import abi


def _slots(entries, n=8):
    arr = np.zeros(n, dtype=abi.dtype("page_alloc_slot"))
    for i, (key, allocs, pages) in entries.items():
        for f, v in zip(KEY_FIELDS, key):
            arr[i]["key"][f] = v
        arr[i]["val"]["allocs"], arr[i]["val"]["pages"] = allocs, pages
    return arr


def test_slot_layout_is_key_then_value():
    dt = abi.dtype("page_alloc_slot")
    assert dt.itemsize == abi.sizeof("page_alloc_key") + abi.sizeof("page_alloc_val") == 32
    assert dt.fields["val"][1] == abi.sizeof("page_alloc_key")


def test_slots_of_every_cpu_sum_by_key_and_empty_slots_are_skipped():
    k1 = (0xCC0, 0, 2, 0, 1, abi.CMA_AREA_NONE)  # gfp, node, zone, order, mt, cma
    k2 = (0x100CCA, 0, 2, 3, 1, 0)
    # CPU 0 owns slots 0..3, CPU 1 slots 4..7: the same key in both regions
    arr = _slots({1: (k1, 5, 5), 2: (k2, 2, 16), 6: (k1, 7, 7)})
    arr[3]["key"]["gfp_flags"] = 0x999  # a key written, allocs still 0: not in use yet
    cube = slots_to_cube(arr)
    assert cube == {k1: (12, 12), k2: (2, 16)}
    assert cube_delta(cube, {k1: (10, 10)}) == {k1: (2, 2), k2: (2, 16)}


def test_header_free_flags_restate_every_layout_constant():
    layout = {f: i + 1 for i, f in enumerate(bccload.LAYOUT_FIELDS)}
    flags = bccload.header_free_cflags(layout)
    assert flags[0] == "-DCMAPROF_HEADERS_CACHED=1"
    assert len(flags) == 1 + len(bccload.LAYOUT_FIELDS)
    assert "-DZONES_PGSHIFT_OVERRIDE=1" in flags
    # calib_raw fills every field the cache stores
    assert set(bccload.LAYOUT_FIELDS) <= {f.name for f in abi.fields("layout_info")}


def test_layout_cache_is_keyed_by_source_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    layout = {f: 7 for f in bccload.LAYOUT_FIELDS}
    k = bccload.layout_key(["page_alloc"], ["-DMAX_KEYS=16"])
    assert k != bccload.layout_key(["page_alloc"], ["-DMAX_KEYS=32"])
    assert k != bccload.layout_key(["page_alloc", "stream"], ["-DMAX_KEYS=16"])
    assert bccload.cached_layout(k) is None
    bccload.remember_layout(k, layout)
    assert bccload.cached_layout(k) == layout
    bccload.remember_layout(k, {"zones_pgshift": 1})  # incomplete: not stored
    assert bccload.cached_layout(k) == layout
    (tmp_path / "cmaprof" / "layout.json").write_text("not json")
    assert bccload.cached_layout(k) is None
