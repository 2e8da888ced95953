"""Blocking-page tables and the dump_page() parser, on a recording and a dmesg capture
from one real 6.1 guest run of tests/vm/test_blockers.py (see tests/data/dmesg/README.md).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import cmaprof.analysis as an
from cmaprof.analysis import blockers as blk
from cmaprof.analysis import tables
from cmaprof.recording import schema

DATA = Path(__file__).resolve().parents[1] / "data"
REC = DATA / "recordings" / "guest-6.1-blockers"
DMESG = DATA / "dmesg" / "guest-6.1-blockers.txt"


@pytest.fixture(scope="module")
def rec():
    return an.load(REC)


@pytest.fixture(scope="module")
def blockers(rec):
    return rec.df_cma_blockers()


@pytest.fixture(scope="module")
def dump():
    return blk.parse_dump_pages(DMESG.read_text())


def test_state_priority():
    assert blk.state_name(0) == "none"
    assert blk.state_name(0x1 | 0x10) == "bh_busy"  # locked and buffer heads in use
    assert blk.state_name(0x4 | 0x8) == "writeback"
    assert blk.state_names(0x1 | 0x2) == "locked|dirty"
    assert next(iter(schema.BLOCKER_STATES)) == "writeback"


def test_vocabulary_matches_events_h():
    text = (Path(schema.__file__).resolve().parents[2] / "probes" / "events.h").read_text()
    for i, cause in enumerate(schema.BLOCKER_CAUSES):
        assert f"#define BLK_CAUSE_{cause.upper()} {i}\n" in text
    for i, stage in enumerate(schema.BLOCKER_STAGES):
        assert f"#define BLK_STAGE_{stage.upper()} {i}" in text
    for name, bit in schema.BLOCKER_STATES.items():
        assert f"#define BLK_STATE_{name.upper()} 0x{bit:x}\n" in text


def test_stored_summaries_equal_recomputed(rec):
    raw = rec.table("cma_blockers").to_pandas()
    assert len(raw) > 0
    stored = rec.df_cma_failures()
    again = blk.failures_table(raw).to_pandas()
    pd.testing.assert_frame_equal(stored, again)
    assert int(stored["events"].sum()) == len(raw)
    org = rec.table("cma_blockers_origin").to_pandas()
    pd.testing.assert_frame_equal(org, blk.origin_table(raw).to_pandas())
    assert int(org["events"].sum()) == len(raw)


def test_counts_equal_in_kernel_counters(rec, blockers):
    counts = blockers.groupby(["stage", "cause"]).size()
    assert {f"{s}/{c}": int(n) for (s, c), n in counts.items()} == rec.meta["blockers"]["counts"]


def test_bdev_buffer_heads_and_their_gfp(rec, blockers):
    bh = blockers[blockers["cause"] == "bdev_buffer_head"]
    assert len(bh) > 0
    assert bh["page_flag_names"].str.contains("private").all()
    assert (bh["bh_count"] > 0).all()
    org = rec.df_cma_blockers_origin()
    placed = org[(org["cause"] == "bdev_buffer_head") & org["origin_known"]]
    assert len(placed) > 0
    for gfp in placed["gfp"]:
        assert "__GFP_MOVABLE" in gfp and "HIGHMEM" not in gfp


def test_parse_dump_pages(dump):
    assert len(dump) > 0
    assert (dump["reason"] == "migration failure").all()
    assert dump["pfn"].gt(0).all()
    assert set(dump["cause"]) <= set(schema.BLOCKER_CAUSES)
    bdev = dump[dump["aops"] == "def_blk_aops"]
    assert len(bdev) > 0 and bdev["cause"].str.startswith("bdev").all()
    assert dump["owner_gfp_mask"].notna().any()


def test_dump_agrees_with_probe(blockers, dump):
    both = blk.compare_with_dump(blockers, dump)
    assert len(both) > 0
    assert both["agree"].all(), both[~both["agree"]].to_string()


def test_text_tables_fit_80_columns(rec):
    report = tables.table_report(rec)
    for text in (blk.table_cma_failures(rec), blk.table_cma_blockers_origin(rec)):
        assert "bdev_buffer_head" in text
        assert max(len(line) for line in text.splitlines()) <= 80
        assert text in report


def test_json_report_has_both_tables(rec):
    t = tables.report_tables(rec)
    assert {"cma_failures", "cma_blockers_origin"} <= set(t)
    assert list(t["cma_failures"].columns[:4]) == ["area", "stage", "cause", "state"]


def test_recording_without_blockers_has_no_tables():
    host = an.load(DATA / "recordings" / "host-6.18-anon")
    assert not blk.has_blockers(host)
    assert blk.table_cma_failures(host) == ""
    assert "cma_failures" not in tables.report_tables(host)
