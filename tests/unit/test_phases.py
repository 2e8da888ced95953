"""Where the time of a cma_alloc() call went: the phase functions chosen by presence
(collectors/cma.py) and the per-call and per-area tables (analysis/phases.py) on a
recording made in the 6.1 guest (tests/data/recordings/guest-6.1-phases)."""

from __future__ import annotations

from pathlib import Path

from cmaprof.analysis import phases
from cmaprof.collectors.cma import PHASE_SYMBOLS, PHASES, phase_symbol_choice

DATA = Path(__file__).resolve().parents[1] / "data/recordings"


def test_vocabulary_and_symbols_agree():
    assert PHASES[-1] == "unattributed" and phases.PHASES == PHASES
    assert set(PHASE_SYMBOLS) == set(PHASES) - {"unattributed"}
    assert set(phases.PHASE_MEANING) == set(PHASES)


def test_newest_name_first_and_every_group():
    syms = {"alloc_contig_range_noprof", "alloc_contig_range", "drain_all_pages", "msleep"}
    found, missing = phase_symbol_choice(frozenset(syms | {"lru_cache_disable"}))
    assert found["contig"] == ["alloc_contig_range_noprof"]
    assert found["drain"] == ["drain_all_pages", "lru_cache_disable"]
    assert "search" in missing and "bitmap_find_next_zero_area_off" in missing["search"]
    assert "unattributed" not in found and "unattributed" not in missing
    assert set(found) | set(missing) == set(PHASE_SYMBOLS)


def test_a_compiler_clone_stands_for_its_function():
    found, _ = phase_symbol_choice(frozenset({"isolate_freepages_range.constprop.0"}))
    assert found["take"] == ["isolate_freepages_range.constprop.0"]
    found, missing = phase_symbol_choice(frozenset({"isolate_freepages_range.part.0"}))
    assert "take" in missing  # a .part clone is not the function's entry


def test_a_recording_without_phases_shows_none():
    import cmaprof.analysis as an

    rec = an.load(DATA / "guest-6.1-cma")
    assert not phases.has_phases(rec)
    assert phases.table_cma_phases(rec) == ""
    assert all(v for v in phases.phase_visibility(rec).values())
