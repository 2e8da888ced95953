"""cmaprof.recording.metadata: every checked-in recording's metadata round-trips, and
loads through the reader with the same tables as the raw files hold."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cmaprof.analysis import load
from cmaprof.recording import FORMAT_VERSION, Metadata, reader, schema
from cmaprof.recording.metadata import CmaAreaInfo, CountingWindow

DATA = Path(__file__).resolve().parents[1] / "data" / "recordings"
RECORDINGS = sorted(p.parent for p in DATA.rglob("metadata.json"))


@pytest.mark.parametrize("rec", RECORDINGS, ids=lambda p: str(p.relative_to(DATA)))
def test_round_trip(rec):
    raw = json.loads((rec / "metadata.json").read_text())
    meta = Metadata.from_json(raw)
    assert meta.to_json() == raw
    assert not meta.extra  # every key written today is a typed field
    assert meta.format_version == FORMAT_VERSION


@pytest.mark.parametrize("rec", RECORDINGS, ids=lambda p: str(p.relative_to(DATA)))
def test_checked_in_recordings_load_with_their_tables(rec):
    r = load(rec)
    assert isinstance(r, reader.Recording)
    assert r.meta.kernel_release and r.zone_names
    for path in sorted((rec / "tables").glob("*.parquet")):
        stored = pq.read_table(path)
        names = [n for n in schema.SCHEMAS[path.stem].names if n in stored.schema.names]
        got = r.table(path.stem)
        assert got.select(names).equals(stored.select(names)), path
        for added in set(got.schema.names) - set(names):  # schema.ADDED_COLUMNS: null
            assert added in schema.ADDED_COLUMNS[path.stem], (path, added)
            assert got.column(added).null_count == got.num_rows, (path, added)


def test_absent_and_null_keys_stay_as_written():
    meta = Metadata.from_json({"label": None, "zone_names": {"0": "DMA"}, "future": [1]})
    assert meta.zone_names == {0: "DMA"} and meta.label is None
    assert meta.to_json() == {"label": None, "zone_names": {"0": "DMA"}, "future": [1]}
    assert "stream" not in meta and "label" in meta


def test_attributes_assigned_are_written():
    meta = Metadata()
    meta.cma_areas = [CmaAreaInfo(name="reserved", base_pfn=1, count=2)]
    meta.counting_window = CountingWindow(clock="CLOCK_MONOTONIC", on_ns=10, off_ns=20)
    meta.complete = False
    out = meta.for_writing()
    assert out["cma_areas"] == [{"name": "reserved", "base_pfn": 1, "count": 2}]
    assert out["counting_window"] == {"clock": "CLOCK_MONOTONIC", "on_ns": 10, "off_ns": 20}
    assert out["complete"] is False and out["tool"] == "cmaprof"
    assert meta.counting_window.seconds() == (10e-9, 20e-9)


def test_wrong_shape_is_kept_not_typed():
    meta = Metadata.from_json({"blockers": 5, "zones": "x"})
    assert meta.blockers is None and meta.zones == []
    assert meta.to_json() == {"blockers": 5, "zones": "x"}


def test_mapping_view_of_earlier_versions():
    meta = Metadata.from_json({"cma_areas": [{"name": "a", "count": 4}], "hostname": "h"})
    meta["cma_areas"] = meta["cma_areas"] + [{"name": "b", "count": 8}]
    assert meta.cma_area_names == ["a", "b"]
    assert meta.pop("hostname") == "h" and "hostname" not in meta
