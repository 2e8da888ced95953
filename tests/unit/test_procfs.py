from pathlib import Path

import pytest

from cmaprof.collectors import procfs as live_procfs
from cmaprof.errors import BadInput
from cmaprof.kernel import procfs

ZONEINFO_TWO_NODES_MOVABLE = """\
Node 0, zone      DMA
  pages free     3
        spanned  4095
        present  3998
        managed  3840
        cma      0
  start_pfn:           1
Node 0, zone    DMA32
        spanned  520192
        present  520192
        managed  500000
        cma      65536
  start_pfn:           4096
Node 0, zone   Normal
        spanned  0
        present  0
        managed  0
Node 0, zone  Movable
        spanned  262144
        present  262144
        managed  262144
        cma      0
  start_pfn:           393216
Node 1, zone      DMA
        spanned  0
        present  0
        managed  0
Node 1, zone    DMA32
        spanned  0
        present  0
        managed  0
Node 1, zone   Normal
        spanned  262144
        present  262144
        managed  262000
  start_pfn:           524288
"""


def test_zoneinfo_indexes_names_and_spans():
    zones = procfs.parse_zoneinfo(ZONEINFO_TWO_NODES_MOVABLE)
    assert [(z.node, z.idx, z.name) for z in zones] == [
        (0, 0, "DMA"),
        (0, 1, "DMA32"),
        (0, 2, "Normal"),
        (0, 3, "Movable"),
        (1, 0, "DMA"),
        (1, 1, "DMA32"),
        (1, 2, "Normal"),
    ]
    assert procfs.zone_names(zones) == {0: "DMA", 1: "DMA32", 2: "Normal", 3: "Movable"}
    dma32 = zones[1]
    assert (dma32.start_pfn, dma32.end_pfn, dma32.cma) == (4096, 4096 + 520192, 65536)
    assert zones[2].start_pfn is None and zones[2].cma is None
    assert [z.name for z in procfs.populated_spans(zones)] == ["DMA", "DMA32", "Movable", "Normal"]


def test_unambiguous_zone_refuses_overlaps():
    zones = procfs.parse_zoneinfo(ZONEINFO_TWO_NODES_MOVABLE)
    assert procfs.unambiguous_zone(zones, 5000).name == "DMA32"
    # Movable [393216, 655360) overlaps DMA32 [4096, 524288) and node 1 Normal
    assert procfs.unambiguous_zone(zones, 400000) is None
    assert procfs.unambiguous_zone(zones, 600000) is None
    assert procfs.unambiguous_zone(zones, 10_000_000) is None


@pytest.mark.parametrize("kernel", ["linux-6.18-host", "linux-6.1-guest"])
def test_real_proc_files_parse(kernel):
    d = Path(__file__).parents[1] / "data" / "formats" / kernel / "proc"
    zones = procfs.parse_zoneinfo((d / "zoneinfo").read_text())
    assert any(z.name == "Normal" or z.name == "DMA32" for z in zones)
    vm = procfs.parse_vmstat((d / "vmstat").read_text())
    assert "pgalloc_normal" in vm or "pgalloc_dma32" in vm


def test_vmstat_rejects_garbage():
    with pytest.raises(BadInput, match="x.txt:2: not a vmstat line"):
        procfs.parse_vmstat("nr_free_pages 1\nhello world again\n", "x.txt")


def test_zoneinfo_rejects_other_files():
    with pytest.raises(BadInput, match="not a /proc/zoneinfo"):
        procfs.parse_zoneinfo("nr_free_pages 1\n")


def test_cma_areas_from_debugfs_and_sysfs(tmp_path):
    d = tmp_path / "sys/kernel/debug/cma/reserved"
    d.mkdir(parents=True)
    (d / "base_pfn").write_text("0x44000\n")
    (d / "count").write_text("65536\n")
    (tmp_path / "sys/kernel/mm/cma/reserved").mkdir(parents=True)
    (tmp_path / "sys/kernel/mm/cma/hugetlb0").mkdir(parents=True)
    areas = {a.name: a for a in live_procfs.read_cma_areas(tmp_path)}
    assert areas["reserved"].base_pfn == 0x44000 and areas["reserved"].end_pfn == 0x44000 + 65536
    assert areas["reserved"].source == "debugfs"
    assert areas["hugetlb0"].end_pfn is None and areas["hugetlb0"].source == "sysfs"


def test_parsers_live_in_the_neutral_module_and_the_old_path_still_works():
    from cmaprof.kernel import procfs as neutral

    for name in ("Zone", "CmaArea", "parse_vmstat", "parse_zoneinfo", "unambiguous_zone"):
        assert getattr(procfs, name) is getattr(neutral, name)


def test_analysis_does_not_import_collectors():
    root = Path(__file__).parents[2] / "analysis"
    offenders = [
        p.name for p in root.glob("*.py") if "cmaprof.collectors" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_zoneinfo_counters_of_a_real_6_1_guest():
    from cmaprof.kernel.procfs import parse_zoneinfo_counters

    text = (Path(__file__).parents[1] / "data/formats/linux-6.1-guest/proc/zoneinfo").read_text()
    blocks = parse_zoneinfo_counters(text)
    movable = blocks[3]
    # the text: "Node 0, zone  Movable", "pages free 238533", "nr_free_cma 65398"
    assert (movable["node"], movable["idx"]) == (0, 3)
    assert (movable["free"], movable["nr_free_cma"], movable["cma"]) == (238533, 65398, 65536)
    # nr_inactive_anon of the per-node stats (in the DMA block) is not a zone counter
    assert "nr_inactive_anon" not in blocks[0] and blocks[0]["nr_zone_inactive_anon"] == 0
    # an unpopulated zone prints the span lines and no zone stats
    assert blocks[2]["spanned"] == 0 and "nr_free_pages" not in blocks[2]


def test_zoneinfo_with_a_damaged_number_names_the_line():
    text = ZONEINFO_TWO_NODES_MOVABLE.replace("spanned  520192", "spanned  52x192")
    with pytest.raises(BadInput, match=r"z.txt:9: spanned is not a number"):
        procfs.parse_zoneinfo(text, "z.txt")
