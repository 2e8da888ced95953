"""Workload specs, ordering and clean-up, and the CMA debugfs driver against a fake tree.

The kernel-side effects (loop devices, ext4, real cma_alloc) are exercised in
tests/live/test_workloads.py and tests/vm/test_scenario.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from cmaprof import workloads as wl
from cmaprof.errors import BadInput, CmaprofError, EnvironmentProblem
from cmaprof.workloads import cma as wl_cma
from cmaprof.workloads import memory as wl_memory


def test_legacy_name_mib_specs_still_parse():
    s = wl.parse_spec("anon:1024")
    assert s.name == "anon" and s.kwargs == {"size": 1024}
    assert wl.parse_spec("pagecache:256").kwargs == {"size": 256}
    assert wl.parse_spec("bulk:64").kwargs == {"size": 64}
    assert wl.parse_spec("anon").kwargs == {"size": 512}


def test_key_value_specs():
    s = wl.parse_spec("anon:1200,hold=1")
    assert s.kwargs == {"size": 1200, "hold": True}
    s = wl.parse_spec("cma-alloc:pages=23+90%,cycles=3,period=0.5,area=reserved")
    assert s.kwargs == {"pages": ["23", "90%"], "cycles": 3, "period": 0.5, "area": "reserved"}
    s = wl.parse_spec("bdev-metadata:64,files=100,seconds=5,dir=/tmp")
    assert s.kwargs == {"size": 64, "files": 100, "seconds": 5.0, "dir": "/tmp"}


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nosuch:1", "unknown workload"),
        ("anon:0", "between 1 and"),
        ("anon:x", "size='x'"),
        ("anon:hold=maybe", "not a boolean"),
        ("anon:64,color=red", "unknown parameter 'color'"),
        ("anon:64,128", "not KEY=VALUE"),
        ("cma-alloc:cycles=0", "must be positive"),
        ("bdev-metadata:seconds=-1", "between 0 and"),
    ],
)
def test_bad_specs_are_bad_input(spec, words):
    with pytest.raises(BadInput, match=words):
        wl.parse_spec(spec)


def test_every_workload_documents_its_parameters():
    text = wl.help_text()
    for w in wl.WORKLOADS.values():
        assert f"{w.name}: " in text
        for p in w.params:
            assert f"    {p.name}: " in text


def test_state_lasts_until_all_ran_and_is_removed_in_reverse(monkeypatch):
    log: list[str] = []

    def make(name):
        @contextlib.contextmanager
        def factory(size):
            log.append(f"enter {name}")
            yield name
            log.append(f"exit {name}")

        return factory

    for name in ("anon", "pagecache", "bulk"):
        w = wl.WORKLOADS[name]
        monkeypatch.setitem(
            wl.WORKLOADS, name, wl.Workload(w.name, make(name), w.params, w.help, w.main)
        )
    out: list[str] = []
    wl.run([wl.parse_spec(s) for s in ("anon:1", "pagecache:1", "bulk:1")], echo=out.append)
    assert log == [
        "enter anon",
        "enter pagecache",
        "enter bulk",
        "exit bulk",
        "exit pagecache",
        "exit anon",
    ]
    assert len(out) == 3 and out[0].startswith("cmaprof workload: anon:1: anon")


def test_a_failing_workload_still_cleans_up_the_earlier_ones(tmp_path):
    spec = wl.parse_spec(f"pagecache:1,keep=1,dir={tmp_path}")
    with pytest.raises(CmaprofError):  # no CMA here, or a bad size where there is
        wl.run([spec, wl.parse_spec("cma-alloc:pages=nonsense")])
    assert list(tmp_path.iterdir()) == []


def test_anon_hold_keeps_the_mapping_until_exit():
    with wl.anon(2, hold=True) as summary:
        assert "512 pages touched, mapped until the end" == summary
    with wl.anon(2) as summary:
        assert "unmapped" in summary


def test_pagecache_removes_its_file(tmp_path):
    with wl.pagecache(2, dir=str(tmp_path), keep=True) as summary:
        assert summary.startswith("2 MiB read back")
        assert len(list(tmp_path.iterdir())) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def fake_cma(tmp_path, monkeypatch):
    """A debugfs tree with one area whose alloc/free files are plain files."""
    d = tmp_path / "cma" / "reserved"
    d.mkdir(parents=True)
    (d / "count").write_text("65536\n")
    (d / "base_pfn").write_text("458240\n")
    (d / "used").write_text("0\n")
    (d / "alloc").write_text("")
    (d / "free").write_text("")
    monkeypatch.setattr(wl_cma, "DEBUGFS", tmp_path)
    return d


def test_cma_alloc_sizes_percentages_and_free(fake_cma, monkeypatch):
    writes: list[tuple[str, int]] = []
    monkeypatch.setattr(wl_cma, "_cma_write", lambda p, n: writes.append((Path(p).name, n)) or True)
    with wl.cma_alloc(pages=["23", "90%"], cycles=2) as summary:
        pass
    assert writes == [("alloc", 23), ("free", 23), ("alloc", 58982), ("free", 58982)] * 2
    assert "4 calls (23+58982 pages), 4 succeeded, 0 failed" in summary


def test_cma_alloc_counts_refusals_and_frees_held_pages_at_exit(fake_cma, monkeypatch):
    writes: list[tuple[str, int]] = []

    def fake(p, n):
        writes.append((Path(p).name, n))
        return not (Path(p).name == "alloc" and n > 1000)

    monkeypatch.setattr(wl_cma, "_cma_write", fake)
    with wl.cma_alloc(pages=["7", "60000", "11"], hold=True) as summary:
        assert writes == [("alloc", 7), ("alloc", 60000), ("alloc", 11)]
    assert writes[-1] == ("free", 18)
    assert "3 calls" in summary and "2 succeeded, 1 failed" in summary


def test_cma_alloc_errors(fake_cma, tmp_path, monkeypatch):
    with (
        pytest.raises(BadInput, match="no CMA area 'other'; areas: reserved"),
        wl.cma_alloc(area="other"),
    ):
        pass
    with pytest.raises(BadInput, match="must be in"), wl.cma_alloc(pages=["150%"]):
        pass
    monkeypatch.setattr(wl_cma, "DEBUGFS", tmp_path / "nothing")
    with pytest.raises(EnvironmentProblem, match="no CMA debugfs"), wl.cma_alloc():
        pass


def test_cma_write_refused_is_false_not_an_error(tmp_path):
    # the kernel's refusal is an errno from write(); /dev/full gives ENOSPC the same way
    assert wl_cma._cma_write(Path("/dev/full"), 5) is False
    with pytest.raises(EnvironmentProblem, match="cannot open"):
        wl_cma._cma_write(tmp_path / "missing" / "alloc", 5)


OWNER = """\
Page allocated via order 0, mask 0x101c08(GFP_NOFS|__GFP_NOFAIL|__GFP_HARDWALL|__GFP_MOVABLE), \
pid 321, tgid 321 (python3), ts 1234 ns, free_ts 0 ns
PFN 460001 type Movable Block 898 type CMA Flags 0x4000000000002036(referenced|uptodate|lru)
 post_alloc_hook+0x91/0xa0
 get_page_from_freelist+0x3a1/0x1150
 __alloc_pages+0x14d/0x2c0
 __filemap_get_folio+0x18b/0x3a0
 __getblk_gfp+0x10b/0x2e0
 ext4_getblk+0x88/0x1c0
"""


def test_parse_page_owner_record():
    r = wl.parse_page_owner(OWNER)
    assert r == {
        "pfn": 460001,
        "order": 0,
        "gfp_mask": "0x101c08",
        "gfp": "GFP_NOFS|__GFP_NOFAIL|__GFP_HARDWALL|__GFP_MOVABLE",
        "pid": 321,
        "page_type": "Movable",
        "block_type": "CMA",
        "flags": "0x4000000000002036(referenced|uptodate|lru)",
        "buffer_head": True,
    }
    assert wl.parse_page_owner("garbage") is None


def test_parse_page_owner_hex_pfn_of_newer_kernels():
    """6.12/7.3 print ``PFN 0x%lx`` (mm/page_owner.c print_page_owner())."""
    r = wl.parse_page_owner(OWNER.replace("PFN 460001", f"PFN {460001:#x}"))
    assert r is not None and r["pfn"] == 460001 and r["block_type"] == "CMA"


def test_hugetlb_cma_needs_a_hugetlb_cma_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(wl_cma, "SYSFS_MM", tmp_path)
    with pytest.raises(EnvironmentProblem, match="hugepages-1048576kB"), wl.hugetlb_cma():
        pass
    with pytest.raises(BadInput, match="use 1G or 2M"), wl.hugetlb_cma(size="3G"):
        pass


def test_snapshot_writes_numbered_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(wl_cma, "DEBUGFS", tmp_path / "none")
    with wl.snapshot(dir=str(tmp_path / "s")) as s1:
        pass
    with wl.snapshot(dir=str(tmp_path / "s")) as s2:
        pass
    assert s1.endswith("s/00") and s2.endswith("s/01")
    assert (tmp_path / "s" / "01" / "vmstat").read_text().startswith("nr_free_pages")


def test_cma_alloc_percent_of_free_is_read_at_request_time(fake_cma, monkeypatch):
    writes: list[tuple[str, int]] = []

    def fake(p, n):
        writes.append((Path(p).name, n))
        if Path(p).name == "alloc":
            (fake_cma / "used").write_text(f"{int((fake_cma / 'used').read_text()) + n}\n")
        return True

    (fake_cma / "used").write_text("138\n")
    monkeypatch.setattr(wl_cma, "_cma_write", fake)
    with wl.cma_alloc(pages=["100%free", "50%free"], hold=True):
        pass
    assert writes == [("alloc", 65398), ("alloc", 1), ("free", 65399)]


def test_anon_leave_sizes_from_memfree(monkeypatch):
    monkeypatch.setattr(wl_memory, "_meminfo_kib", lambda key: 100 << 10)
    with wl.anon(leave=96) as summary:
        assert summary == "1024 pages touched and unmapped"
    with pytest.raises(EnvironmentProblem, match="only 100 MiB free"), wl.anon(leave=200):
        pass


def test_page_owner_table_keeps_the_range(tmp_path):
    other = OWNER.replace("PFN 460001", "PFN 600000").replace("__getblk_gfp", "shmem_alloc")
    f = tmp_path / "page_owner.txt"
    f.write_text(OWNER + "\n" + other + "\n")
    (row,) = wl.page_owner_table(f, 458240, 65536)
    assert row["pfn"] == 460001 and row["buffer_head"]
    assert [r["pfn"] for r in wl.page_owner_table(f, 0, 1 << 30)] == [460001, 600000]
