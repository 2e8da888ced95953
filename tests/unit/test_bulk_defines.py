"""Bulk-allocator probe detection on fake kernels: tracefs directory + kallsyms names."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmaprof import probes
from cmaprof.collectors import features

COMMON = {"__alloc_pages", "get_page_from_freelist", "cma_alloc"}
#: The 6.18 host: alloc_pages_bulk_noprof exists, CONFIG_KPROBES does not.
HOST = COMMON | {"alloc_pages_bulk_noprof", "alloc_pages_bulk_mempolicy_noprof"}
#: 6.1 .. 6.9: __alloc_pages_bulk(..., page_list, page_array).
V6_1 = COMMON | {"__alloc_pages_bulk"}
#: 6.10 .. 6.13: alloc_pages_bulk_noprof(..., page_list, page_array).
V6_10 = COMMON | {"alloc_pages_bulk_noprof", "alloc_pages_bulk_array_mempolicy_noprof"}
#: 6.14+: alloc_pages_bulk_noprof(..., page_array).
V6_14 = HOST
#: Before 5.13: no bulk allocator.
V5_10 = COMMON


def fake_tracefs(root: Path, kprobes: bool) -> Path:
    tfs = root / "tracing"
    for ev in ("kmem/mm_page_alloc", "cma/cma_alloc_start", "migrate/mm_migrate_pages"):
        d = tfs / "events" / ev
        d.mkdir(parents=True)
        (d / "format").write_text(f"name: {ev.split('/')[1]}\nID: 1\nformat:\n")
    if kprobes:
        (tfs / "kprobe_events").write_text("")
    return tfs


@pytest.fixture
def kallsyms(monkeypatch: pytest.MonkeyPatch):
    def use(names: set[str]) -> None:
        monkeypatch.setattr(features, "kallsyms_text_symbols", lambda: frozenset(names))

    return use


def test_registry_bulk_before_page_alloc() -> None:
    order = list(probes.PROBES)
    assert order.index("bulk") < order.index("page_alloc")
    assert probes.get("bulk").tracepoints == ()


def test_host_like_no_kprobes(tmp_path: Path, kallsyms) -> None:
    kallsyms(HOST)
    tfs = fake_tracefs(tmp_path, kprobes=False)
    assert features.bulk_symbol() == "alloc_pages_bulk_noprof"
    reason = features.bulk_unavailable_reason(tfs)
    assert reason is not None and reason.startswith("no kprobes (CONFIG_KPROBES off)")
    assert "\n" not in reason
    names = features.available_probes(tfs)
    assert "bulk" not in names
    assert names[0] == "page_alloc"


@pytest.mark.parametrize(
    ("syms", "symbol", "has_list"),
    [
        (V6_1, "__alloc_pages_bulk", 1),
        (V6_10, "alloc_pages_bulk_noprof", 1),
        (V6_14, "alloc_pages_bulk_noprof", 0),
    ],
    ids=["6.1", "6.10", "6.14+"],
)
def test_kernel_with_kprobes(tmp_path: Path, kallsyms, syms, symbol, has_list) -> None:
    kallsyms(syms)
    tfs = fake_tracefs(tmp_path, kprobes=True)
    assert features.bulk_symbol() == symbol
    assert features.bulk_unavailable_reason(tfs) is None
    assert features.available_probes(tfs) == ["bulk", "page_alloc", "cma", "migrate"]
    out = features.defines(tfs, ["bulk", "page_alloc"])
    assert out["BULK_HAS_LIST"] == has_list
    assert "BULK_HAS_LIST" not in features.defines(tfs, ["page_alloc"])


def test_no_bulk_allocator(tmp_path: Path, kallsyms) -> None:
    kallsyms(V5_10)
    tfs = fake_tracefs(tmp_path, kprobes=True)
    assert features.bulk_symbol() is None
    reason = features.bulk_unavailable_reason(tfs)
    assert reason is not None and "no bulk allocator" in reason
    assert "bulk" not in features.available_probes(tfs)


def test_kallsyms_unreadable(tmp_path: Path, kallsyms) -> None:
    kallsyms(set())
    tfs = fake_tracefs(tmp_path, kprobes=True)
    reason = features.bulk_unavailable_reason(tfs)
    assert reason is not None and "kallsyms" in reason


def test_cflags_enable_bulk() -> None:
    flags = probes.cflags(["page_alloc", "bulk"], {"BULK_HAS_LIST": 1})
    assert "-DENABLE_BULK=1" in flags and "-DBULK_HAS_LIST=1" in flags
    text = probes.text(["page_alloc", "bulk"])
    assert text.index("bulk.bpf.c") < text.index("page_alloc.bpf.c")
