"""The format files of every matrix kernel (6.1, 6.12, 7.3 guests) load, decode, and
turn into the probes' -D options as the guest kernels need them.

The 6.12 and 7.3 files are copied from ../shared/guides/formats/ (see
tests/data/formats/README.md). The buffer-head class is spelled in each kernel's own
``show_gfp_flags()`` order: 7.3 lists __GFP_MOVABLE before __GFP_NOFAIL, 6.1 after
__GFP_HARDWALL.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from cmaprof.collectors import features
from cmaprof.kernel.formats import gfp_table, load_format_dir

FORMATS = Path(__file__).resolve().parents[1] / "data" / "formats"
GUESTS = ("linux-6.1-guest", "linux-6.12-guest", "linux-7.3-guest")
BH = ("GFP_NOFS", "__GFP_MOVABLE", "__GFP_NOFAIL", "__GFP_COMP", "__GFP_HARDWALL")


@functools.cache
def formats(kernel):
    return load_format_dir(FORMATS / kernel)


@pytest.mark.parametrize("kernel", GUESTS)
def test_every_event_cmaprof_reads_is_there(kernel):
    fmts = formats(kernel)
    for ev in (
        ("kmem", "mm_page_alloc"),
        ("cma", "cma_alloc_start"),
        ("cma", "cma_alloc_finish"),
        ("cma", "cma_alloc_busy_retry"),
        ("cma", "cma_release"),
        ("migrate", "mm_migrate_pages"),
        ("page_isolation", "test_pages_isolated"),
    ):
        assert ev in fmts, f"{kernel}: {ev}"
    assert gfp_table(fmts[("kmem", "mm_page_alloc")]).unresolved == ()


@pytest.mark.parametrize("kernel", GUESTS)
def test_gfp_table_decodes_its_own_composites(kernel):
    table = gfp_table(formats(kernel)[("kmem", "mm_page_alloc")])
    for name in ("GFP_KERNEL", "GFP_HIGHUSER_MOVABLE", "GFP_NOFS", "GFP_ATOMIC"):
        assert table.decode(table.mask_of(name)) == name, (kernel, name)


def test_buffer_head_class_as_7_3_prints_it():
    """The stock scenario's buffer heads on 7.3 (issue 11), in 7.3's table order."""
    table = gfp_table(formats("linux-7.3-guest")[("kmem", "mm_page_alloc")])
    value = 0
    for name in BH:
        value |= table.mask_of(name)
    assert table.decode(value) == "|".join(BH)


def test_buffer_head_class_as_6_1_prints_it():
    table = gfp_table(formats("linux-6.1-guest")[("kmem", "mm_page_alloc")])
    value = 0
    for name in BH:
        value |= table.mask_of(name)
    assert table.decode(value) == "GFP_NOFS|__GFP_NOFAIL|__GFP_COMP|__GFP_HARDWALL|__GFP_MOVABLE"


def _tracefs(tmp_path, kernel):
    tfs = tmp_path / kernel
    tfs.mkdir()
    (tfs / "events").symlink_to(FORMATS / kernel)
    return tfs


@pytest.mark.parametrize(
    "kernel, start_count, errorno",
    [
        ("linux-6.1-guest", "count", 0),
        ("linux-6.12-guest", "count", 1),
        ("linux-7.3-guest", "request_count", 1),
    ],
)
def test_cma_defines_by_presence(tmp_path, kernel, start_count, errorno):
    d = features.defines(_tracefs(tmp_path, kernel), ["cma", "migrate"])
    assert d["HAVE_CMA_START"] == 1 and d["HAVE_CMA_FINISH"] == 1
    assert d["CMA_START_COUNT"] == start_count
    assert d["HAVE_CMA_ERRORNO"] == errorno
    assert d["HAVE_CMA_BUSY_RETRY"] == 1 and d["HAVE_OLD_CMA_ALLOC"] == 0
    assert d["HAVE_TEST_PAGES_ISOLATED"] == 1 and d["HAVE_MIGRATE_START"] == 1


def test_7_3_start_event_fields():
    start = formats("linux-7.3-guest")[("cma", "cma_alloc_start")]
    for f in ("request_count", "available_count", "total_count", "align"):
        assert start.has_field(f)
    assert not start.has_field("count")


def test_cma_call_symbol_newest_first(monkeypatch, tmp_path):
    (tmp_path / "kprobe_events").write_text("")
    for syms, want in (
        ({"__cma_alloc_frozen", "cma_alloc", "__cma_alloc"}, "__cma_alloc_frozen"),
        ({"__cma_alloc", "cma_alloc"}, "__cma_alloc"),
        ({"cma_alloc"}, "cma_alloc"),
        (set(), None),
    ):
        monkeypatch.setattr(features, "kallsyms_text_symbols", lambda s=syms: frozenset(s))
        assert features.cma_call_symbol(tmp_path) == want
