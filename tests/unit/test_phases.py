"""Where the time of a cma_alloc() call went: the phase functions chosen by presence
(collectors/cma.py) and the per-call and per-area tables (analysis/phases.py) on a
recording made in the 6.1 guest (tests/data/recordings/phases/guest-6.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def rec():
    """cmaprof record in the 6.1.192 guest of tests/vm/test_cma.py (--cma 256M, 2 GiB):
    20 calls, among them one larger than the area and one of 32768 pages that
    migrates; the kernel refused the kprobe on bitmap_find_next_zero_area_off."""
    import cmaprof.analysis as an

    return an.load(DATA / "phases/guest-6.1")


def test_every_call_adds_up_exactly(rec):
    from cmaprof.analysis.cma import df_cma_calls

    chk = phases.df_cma_phase_check(rec)
    assert len(chk) == len(df_cma_calls(rec)) == 20
    assert (chk["attributed_ns"] + chk["unattributed_ns"] == chk["latency_ns"]).all()
    assert (chk["diff_ns"] == 0).all() and chk["lost"].sum() == 0
    # the request larger than the area reaches no phase
    assert (chk["attributed_ns"] == 0).sum() == 1


def test_summary_of_the_area(rec):
    s = phases.df_cma_phase_summary(rec).set_index("phase")
    assert list(s.index) == list(PHASES)
    assert not s.loc["search", "seen"] and "bitmap_find_next_zero_area_off" in str(
        s.loc["search", "reason"]
    )
    assert s.loc["search", ["total_ns", "p50_ns", "max_ns"]].isna().all()
    seen = s[s["seen"]]
    assert seen["share_pct"].sum() == pytest.approx(100, abs=0.1)
    # the 32768-page call spends its 5.7 s migrating
    assert s.loc["migrate", "share_pct"] > 90
    # 20 calls: p50 estimable, p90 (50 calls) not
    assert seen["p50_ns"].notna().all() and s["p90_ns"].isna().all()
    assert s.loc["sleep", "seen"] and s.loc["sleep", "calls_in"] == 0
    assert s.loc["unattributed", "calls_in"] == 20


def test_per_call_rows_join_their_call(rec):
    df = phases.df_cma_call_phases(rec)
    # 11 attached phases and the rest, for each of the 20 calls
    assert len(df) == 20 * 12
    assert set(df["phase"]) == set(PHASES) - {"search"}
    per = df.groupby(["start_ns", "pid"], observed=True)["ns"].sum()
    lat = df.groupby(["start_ns", "pid"], observed=True)["latency_ns"].first()
    assert (per == lat).all()


def test_text_table(rec):
    text = phases.table_cma_phases(rec)
    lines = text.splitlines()
    assert lines[0].startswith("Where the time of cma_alloc() went")
    assert all(len(line) <= 80 for line in lines), [x for x in lines if len(x) > 80]
    row = {line.split()[0]: line.split() for line in lines if line[:1].isalpha()}
    assert row["search"][1:] == ["-", "-", "-"]
    assert row["migrate"][1] == "19" and row["unattributed"][1] == "20"
    assert "the phases of 20 of 20 calls add up to their latency" in " ".join(lines)
    from cmaprof.analysis.tables import report_tables, table_report

    assert text in table_report(rec)
    assert list(report_tables(rec)["cma_phases"]["phase"].unique()) == list(PHASES)
