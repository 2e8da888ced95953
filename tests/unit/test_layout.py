"""The layout report: zones and CMA areas from checked-in recordings, real zoneinfo files
of every guest kernel, and a hand-written 2-node movablecore zoneinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmaprof.analysis import layout, load, tables
from cmaprof.analysis.compare import load_side
from cmaprof.kernel.procfs import CmaArea, Zone, parse_zoneinfo
from tests.conftest import DATA

REC = DATA / "recordings"
STOCK = REC / "guest-stock" / "iter-1"
MOVABLE = REC / "guest-movable" / "iter-1"
TWO_NODES = DATA / "layout" / "zoneinfo-2node-movablecore"
GUIDES = Path(__file__).resolve().parents[3] / "shared" / "guides" / "formats"


def _zone(df, node, zone):
    r = df[(df["node"] == node) & (df["zone"] == zone)]
    assert len(r) == 1
    return r.iloc[0]


def test_stock_recording_layout_matches_its_zoneinfo_and_debugfs():
    rec = load(STOCK)
    df = layout.df_layout(rec)
    # from the text of proc/start/zoneinfo: "Node 0, zone    DMA32", spanned 520159,
    # present 520159, managed 500997, cma 65536, start_pfn 4096
    dma32 = _zone(df, 0, "DMA32")
    assert (dma32.start_pfn, dma32.spanned, dma32.present, dma32.managed, dma32.cma) == (
        4096,
        520159,
        520159,
        500997,
        65536,
    )
    assert dma32.end_pfn == 4096 + 520159 and dma32.holes == 0
    dma = _zone(df, 0, "DMA")  # start_pfn 1, spanned 4095, present 3998
    assert (dma.start_pfn, dma.holes) == (1, 4095 - 3998)
    assert dma32.cma_areas == "reserved" and dma32.overlaps_same_node == ""
    assert _zone(df, 0, "Movable").start_pfn is pd_na()
    # the zones the collector stored in the metadata at the start say the same
    for z in rec.meta["zones"]:
        row = _zone(df, z["node"], z["name"])
        assert (row.spanned, row.present, row.managed) == (z["spanned"], z["present"], z["managed"])

    cma = layout.df_cma_layout(rec).set_index("area").loc["reserved"]
    debugfs_count = int((STOCK / "sys/start/cma/reserved/count").read_text())
    assert cma["count"] == debugfs_count == 65536
    assert (cma["zone"], cma["node"]) == ("DMA32", 0)
    # base 458240 = 0x6fe00 = 0x37f << 9, and 0x37f is odd
    assert cma["base_pfn"] == 458240 and cma["base_align_order"] == 9
    assert cma["full_size_max_align"] == 9
    # align 16: 0x70000 + 65536 pages <= 0x6fe00 + 65536; align 17: 0x80000 is past the end
    assert cma["any_size_max_align"] == 16


def pd_na():
    import pandas as pd

    return pd.NA


def test_zone_cma_line_matches_the_areas_inside_it():
    for path in (STOCK, MOVABLE, REC / "guest-6.1-cma", REC / "guest-6.1-blockers"):
        rec = load(path)
        df = layout.df_layout(rec)
        cdf = layout.df_cma_layout(rec)
        for a in cdf.itertuples():
            z = _zone(df, a.node, a.zone)
            assert z.cma == a.count, (path, a.area)  # the kernel's count for the zone
            assert z.start_pfn <= a.base_pfn and a.end_pfn <= z.end_pfn


def test_movable_recording_puts_the_area_in_zone_movable():
    cdf = layout.df_cma_layout(load(MOVABLE)).set_index("area")
    assert cdf.loc["reserved", "zone"] == "Movable"
    # base 359424 = 0x57c00 = 0x15f << 10
    assert cdf.loc["reserved", "base_align_order"] == 10


@pytest.mark.parametrize(
    "brute_base,brute_count",
    [(0, 64), (1, 64), (3, 13), (24, 40), (100, 28), (512, 512), (511, 515)],
)
def test_fit_arithmetic_against_every_position(brute_base, brute_count):
    end = brute_base + brute_count
    for order in range(11):
        step = 1 << order
        positions = [p for p in range(brute_base, end) if p % step == 0]
        want = max((end - p for p in positions), default=0)
        assert layout.max_fit_pages(brute_base, brute_count, order) == want
        for pages in range(1, brute_count + 2):
            fits = any(p + pages <= end for p in positions)
            assert layout.can_ever_fit(brute_base, brute_count, pages, order) == fits


def test_the_issue_gigantic_page_can_never_fit_in_hugetlb0():
    # issue 12: hugetlb0 at base pfn 261632 (1 GiB = 262144 pages), align 18 (1 GiB)
    assert layout.base_align_order(261632) == 9
    assert not layout.can_ever_fit(261632, 262144, 262144, 18)
    assert layout.max_fit_pages(261632, 262144, 18) == 261632 + 262144 - 262144
    assert layout.can_ever_fit(261632, 262144, 262144, 9)


TWO_NODE_AREAS = [
    CmaArea("hugetlb0", 0x180000, 65536, "debugfs"),
    CmaArea("hugetlb1", 0x1C0000, 65536, "debugfs"),
]


def test_two_node_movablecore_spans_overlap_across_nodes():
    zones = parse_zoneinfo(TWO_NODES.read_text())
    df = layout.layout_frame(zones, TWO_NODE_AREAS)
    n0m, n1n, n1m = _zone(df, 0, "Movable"), _zone(df, 1, "Normal"), _zone(df, 1, "Movable")
    # the text: N0 Movable start_pfn 1179648 (0x120000) spanned 655360 present 393216
    assert (n0m.start_pfn, n0m.end_pfn, n0m.holes) == (0x120000, 0x1C0000, 262144)
    assert n0m.overlaps_other_nodes == "N1 Normal,N1 Movable"
    assert n0m.overlaps_same_node == ""
    # all of N1 Normal (131072) and [0x160000, 0x1c0000) of N1 Movable
    assert n0m.overlap_pages == 131072 + 0x60000
    assert n1n.overlaps_other_nodes == "N0 Movable" and n1n.overlap_pages == 131072
    assert n1m.overlaps_other_nodes == "N0 Movable" and n1m.overlap_pages == 0x60000
    assert _zone(df, 0, "Normal").overlaps_other_nodes == ""
    assert _zone(df, 1, "DMA32").start_pfn is pd_na() and _zone(df, 1, "DMA32").spanned == 0
    assert n0m.cma_areas == "hugetlb0"  # hugetlb1 starts at 0x1c0000, where N0 Movable ends
    assert n1m.cma_areas == "hugetlb0,hugetlb1"  # both meet its span; only one is in it


@pytest.mark.parametrize("areas", [TWO_NODE_AREAS, TWO_NODE_AREAS[::-1]])
def test_two_node_area_zones_resolved_from_the_cma_counts(areas):
    zones = parse_zoneinfo(TWO_NODES.read_text())
    cdf = layout.cma_layout_frame(zones, areas).set_index("area")
    # hugetlb0 lies in both Movable spans; N1 Movable's "cma 65536" is hugetlb1's
    assert cdf.loc["hugetlb0", "zones"] == "N0 Movable,N1 Movable"
    assert (cdf.loc["hugetlb0", "node"], cdf.loc["hugetlb0", "zone"]) == (0, "Movable")
    assert cdf.loc["hugetlb0", "placement"] == "spans overlap: by cma count"
    assert (cdf.loc["hugetlb1", "node"], cdf.loc["hugetlb1", "zone"]) == (1, "Movable")
    assert cdf.loc["hugetlb1", "placement"] == "one span"
    assert cdf.loc["hugetlb0", "base_align_order"] == 19  # 0x180000 = 3 << 19
    assert cdf.loc["hugetlb1", "base_align_order"] == 18  # 0x1c0000 = 7 << 18


def test_overlap_without_cma_counts_is_left_ambiguous():
    zones = [
        Zone(0, 2, "Normal", 0x100000, 0x100000, 0x80000, 0x80000, None),
        Zone(0, 3, "Movable", 0x100000, 0x100000, 0x80000, 0x80000, None),
    ]
    df = layout.layout_frame(zones, [])
    assert _zone(df, 0, "Normal").overlaps_same_node == "N0 Movable"
    assert _zone(df, 0, "Normal").overlap_pages == 0x100000
    cdf = layout.cma_layout_frame(zones, [CmaArea("x", 0x140000, 1024, "debugfs")])
    assert cdf.loc[0, "zone"] is None and cdf.loc[0, "placement"] == "spans overlap: ambiguous"


@pytest.mark.parametrize("kernel", ["linux-6.1-guest", "linux-6.12-guest", "linux-7.3-guest"])
def test_real_guest_zoneinfo_of_every_kernel(kernel):
    path = GUIDES / kernel / "proc-zoneinfo"
    if not path.exists():
        pytest.skip(f"{path} not present (shared guides not checked out beside the tree)")
    text = path.read_text()
    df = layout.layout_frame(parse_zoneinfo(text), [])
    # each of these files has "cma      65536" in exactly one zone, and DMA "present 3998"
    assert text.count("cma      65536") == 1
    assert int(df["cma"].fillna(0).sum()) == 65536
    assert _zone(df, 0, "DMA").present == 3998 and _zone(df, 0, "DMA").holes == 97
    assert (df["overlap_pages"] == 0).all()


def test_host_zoneinfo_holes():
    text = (DATA / "formats/linux-6.18-host/proc/zoneinfo").read_text()
    df = layout.layout_frame(parse_zoneinfo(text), [])
    # DMA32: spanned 1044480, present 782336 in the text
    assert _zone(df, 0, "DMA32").holes == 1044480 - 782336


def test_text_layout_within_80_columns_and_says_what_never_fits():
    for path in (STOCK, MOVABLE, REC / "host-6.18-anon", REC / "guest-6.1-cma"):
        text = layout.table_layout(load(path))
        assert text.startswith("Memory layout")
        assert max(map(len, text.splitlines())) <= 80
    text = layout.table_layout(load(STOCK))
    assert "N0 DMA32" in text and "0x6fe00" in text
    assert "align<=9: any size <=65536; 10-16: <=65024; >=17: none" in text


def test_report_has_the_layout_and_redaction_hides_its_pfns():
    rec = load(STOCK)
    text = tables.table_report(rec)
    assert "Memory layout" in text and "0x6fe00" in text
    red = tables.table_report(rec, redact=True)
    assert "Memory layout" in red and "0x6fe00" not in red
    # the analysis is the same: the alignment and what fits do not depend on printing
    assert "align<=9: any size <=65536; 10-16: <=65024; >=17: none" in red
    frames = tables.report_tables(rec)
    assert frames["layout"]["spanned"].sum() == sum(z["spanned"] for z in rec.meta["zones"])
    assert list(frames["cma_layout"]["area"]) == ["reserved"]


def test_compare_puts_the_layouts_side_by_side():
    stock, movable = load_side(REC / "guest-stock"), load_side(REC / "guest-movable")
    text = layout.table_layout_compare([stock, movable])
    assert max(map(len, text.splitlines())) <= 80
    lines = {
        ln.split()[0] + " " + ln.split()[1]: ln
        for ln in text.splitlines()
        if ln[:2] in ("N0", "CM")
    }
    assert "N0 Movable:" in lines
    zone_line = next(ln for ln in text.splitlines() if ln.startswith("CMA reserved: zone"))
    assert zone_line.split()[-4:] == ["N0", "DMA32", "N0", "Movable"]
    # the two stock iterations come from two boots: the area's base differs between them
    assert "layouts differ between the recordings of: guest-stock" in text


def test_layout_from_the_metadata_zones_when_no_zoneinfo_copy(tmp_path):
    import shutil

    src = REC / "guest-6.1-cma"
    dst = tmp_path / "rec"
    shutil.copytree(src, dst)
    for which in ("start", "end"):
        (dst / "proc" / which / "zoneinfo").unlink()
    cols = ["node", "zone", "start_pfn", "spanned", "present", "managed", "cma"]
    a = layout.df_layout(load(src))[cols]
    b = layout.df_layout(load(dst))[cols]
    assert a.equals(b)
