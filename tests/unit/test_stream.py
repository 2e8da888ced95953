"""Streaming mode without BPF: --events syntax, batch records -> Arrow -> IPC chunks ->
Parquet, truncated and killed recordings, decoding and the report section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cmaprof.analysis import load, tables
from cmaprof.analysis import stream as astream
from cmaprof.collectors import stream
from cmaprof.errors import BadInput
from cmaprof.kernel import formats
from cmaprof.recording.writer import RecordingWriter

DATA = Path(__file__).resolve().parent.parent / "data"
TEMPLATE = DATA / "recordings" / "host-6.18-anon"
HOST_FORMAT = DATA / "formats" / "linux-6.18-host" / "kmem" / "mm_page_alloc" / "format"
BATCH = 8
T0 = 1_000_000


def gfp_entries():
    fmt = formats.parse_format(HOST_FORMAT.read_text(), "kmem", "mm_page_alloc", str(HOST_FORMAT))
    return formats.gfp_table(fmt).entries


# -- syntax -------------------------------------------------------------------------
def test_parse_events_full_syntax():
    s = stream.parse_events(
        "page_alloc:zone=Normal|DMA32,gfp=__GFP_MOVABLE,nogfp=__GFP_HIGHMEM,order=1-3,"
        "cma=yes,sample=7"
    )
    assert s.zones == ["Normal", "DMA32"]
    assert s.gfp_all == ["__GFP_MOVABLE"] and s.gfp_none == ["__GFP_HIGHMEM"]
    assert (s.order_min, s.order_max, s.cma, s.sample) == (1, 3, "in", 7)
    plain = stream.parse_events("page_alloc")
    assert (plain.order_min, plain.order_max, plain.sample, plain.cma) == (0, 255, 1, "any")


@pytest.mark.parametrize(
    "text, msg",
    [
        ("page_free", "unknown event stream"),
        ("page_alloc:zone", "not KEY=VALUE"),
        ("page_alloc:order=3-1", "empty"),
        ("page_alloc:order=x", "order wants"),
        ("page_alloc:sample=0", "sample wants"),
        ("page_alloc:cma=maybe", "cma wants"),
        ("page_alloc:pid=1", "unknown condition"),
    ],
)
def test_parse_events_rejects(text, msg):
    with pytest.raises(BadInput, match=msg):
        stream.parse_events(text)


def test_resolve_filter_uses_kernel_names():
    zones = {0: "DMA", 1: "DMA32", 2: "Normal", 3: "Movable"}
    f = stream.resolve_filter(
        stream.parse_events("page_alloc:zone=normal|Movable,gfp=__GFP_MOVABLE,nogfp=__GFP_HIGHMEM"),
        zones,
        gfp_entries(),
    )
    by_name = {n: m for m, n in gfp_entries()}
    assert f.zone_mask == (1 << 2) | (1 << 3)
    assert f.gfp_all == by_name["__GFP_MOVABLE"] and f.gfp_none == by_name["__GFP_HIGHMEM"]
    with pytest.raises(BadInput, match="no zone 'HighMem'"):
        stream.resolve_filter(stream.parse_events("page_alloc:zone=HighMem"), zones, ())
    with pytest.raises(BadInput, match="no GFP flag '__GFP_NOPE'"):
        stream.resolve_filter(
            stream.parse_events("page_alloc:gfp=__GFP_NOPE"), zones, gfp_entries()
        )


# -- batch records -> arrow ---------------------------------------------------------
def make_batches(spec: list[tuple[int, int, int]]) -> bytes:
    """Batch records (cpu, n, seq); event k of a batch has pfn = cpu*1e6 + seq*BATCH + k."""
    arr = np.zeros(len(spec), dtype=stream.batch_dtype(BATCH))
    for i, (cpu, n, seq) in enumerate(spec):
        arr[i]["cpu"], arr[i]["n"], arr[i]["seq"] = cpu, n, seq
        ev = arr[i]["ev"]
        k = np.arange(BATCH)
        ev["pfn"] = cpu * 1_000_000 + seq * BATCH + k
        ev["ts_ns"] = T0 + 1000 * (seq * BATCH + k)
        ev["gfp_flags"] = 0xCC0
        ev["order"] = k % 3
        ev["zone_idx"] = 2
        ev["migratetype_id"] = 1
        ev["cma_area_idx"] = 255
        ev["tgid"] = 42
    return arr.tobytes()


def test_event_dtype_is_the_c_struct():
    # struct stream_event is 32 bytes, stream_batch 16 + 32 * STREAM_BATCH (events.h)
    assert stream.EVENT_DTYPE.itemsize == 32
    assert stream.batch_dtype(256).itemsize == 16 + 32 * 256
    assert stream.EVENT_DTYPE.fields["gfp_flags"][1] == 16
    assert stream.EVENT_DTYPE.fields["node"][1] == 24


def test_batches_to_table_full_and_partial():
    raw = make_batches([(0, BATCH, 0), (1, BATCH, 0), (0, 3, 1)])
    t = stream.batches_to_table(raw, BATCH, T0)
    assert t.schema == stream.schema.EVENT_SCHEMAS["page_alloc"]
    assert t.num_rows == 2 * BATCH + 3
    cpu = t.column("__cpu").to_numpy()
    assert (cpu == [0] * BATCH + [1] * BATCH + [0] * 3).all()
    assert t.column("pfn").to_pylist()[-3:] == [BATCH, BATCH + 1, BATCH + 2]
    assert t.column("t_ns").to_pylist()[:2] == [0, 1000]  # relative to T0
    assert t.column("gfp_flags").type == pa.uint64()
    assert stream.batches_to_table(b"", BATCH, T0).num_rows == 0


def test_batch_claiming_too_many_events_is_refused():
    with pytest.raises(ValueError, match="more than"):
        stream.batches_to_table(make_batches([(0, BATCH + 1, 0)]), BATCH, T0)


def test_ipc_chunks_to_parquet_roundtrip(tmp_path):
    w = RecordingWriter(tmp_path / "r")
    chunks = []
    for i, spec in enumerate([[(1, BATCH, 0), (0, BATCH, 0)], [(0, 5, 1), (1, 2, 1)]]):
        t = stream.batches_to_table(make_batches(spec), BATCH, T0)
        chunks.append(w.write_bytes(f"events/page_alloc/chunk-{i:06d}.arrow", stream.ipc_bytes(t)))
    want = stream.schema.EVENT_SCHEMAS["page_alloc"]
    first = astream.read_chunk(chunks[0], want)
    assert first.num_rows == 2 * BATCH
    target = tmp_path / "r" / "events" / "page_alloc.parquet"
    assert stream.chunks_to_parquet(chunks, target) == 2 * BATCH + 7
    import pyarrow.parquet as pq

    t = pq.read_table(target)
    assert t.schema == want
    # within each chunk (row group) rows are ordered by CPU, each CPU's in time order
    rg0 = pq.ParquetFile(target).read_row_group(0)
    assert rg0.column("__cpu").to_pylist() == [0] * BATCH + [1] * BATCH
    assert rg0.column("t_ns").to_pylist()[:BATCH] == sorted(rg0.column("t_ns").to_pylist()[:BATCH])
    assert sorted(t.column("pfn").to_pylist()) == sorted(
        first.column("pfn").to_pylist()
        + [BATCH + k for k in range(5)]
        + [1_000_000 + BATCH + k for k in range(2)]
    )
    assert not list(tmp_path.rglob(".*.tmp"))


# -- recordings: complete, killed, truncated -----------------------------------------
def streamed_recording(tmp_path: Path, complete: bool, parquet: bool) -> Path:
    """The checked-in host recording plus streamed events (2 chunks: 2*BATCH + 3 rows)."""
    out = tmp_path / "rec"
    shutil.copytree(TEMPLATE, out)
    w = RecordingWriter.__new__(RecordingWriter)
    w.path, w._parts = out, {}
    chunks = [
        w.write_bytes(
            f"events/page_alloc/chunk-{i:06d}.arrow",
            stream.ipc_bytes(stream.batches_to_table(make_batches(spec), BATCH, T0)),
        )
        for i, spec in enumerate([[(0, BATCH, 0), (1, BATCH, 0)], [(0, 3, 1)]], start=1)
    ]
    meta = json.loads((out / "metadata.json").read_text())
    meta["complete"] = complete
    if parquet:
        stream.chunks_to_parquet(chunks, out / "events" / "page_alloc.parquet")
    if complete:
        per_cpu = [
            {"cpu": 0, "examined": 20, "filtered": 9, "selected": 11, "written": 11, "dropped": 0},
            {"cpu": 1, "examined": 8, "selected": 8, "written": 8, "dropped": 0},
        ]
        spec = stream.parse_events("page_alloc:order=0-1")
        meta["stream"] = stream.accounting(spec, stream.ResolvedFilter(), per_cpu, 19, 0)
    (out / "metadata.json").write_text(json.dumps(meta))
    return out


def test_killed_recording_keeps_every_completed_chunk(tmp_path):
    out = streamed_recording(tmp_path, complete=False, parquet=False)
    # a kill while a chunk was being written leaves only its temporary file
    (out / "events" / "page_alloc" / ".chunk-000003.arrow.tmp").write_bytes(b"ARROW1\0\0partial")
    rec = load(out)
    df = rec.df_page_alloc_events()
    assert len(df) == 2 * BATCH + 3
    assert set(df["zone"].astype(str)) == {"Normal"}
    assert set(df["gfp"].astype(str)) == {"GFP_KERNEL"}
    assert set(df["migratetype"].astype(str)) == {"Movable"}
    assert df["cma_area"].isna().all()
    text = tables.table_report(rec)
    assert "INCOMPLETE" in text
    assert "2 Arrow IPC chunks (not converted: recording killed)" in text


def test_truncated_chunk_names_the_file(tmp_path):
    out = streamed_recording(tmp_path, complete=False, parquet=False)
    chunk = out / "events" / "page_alloc" / "chunk-000002.arrow"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match=r"chunk-000002\.arrow: unreadable Arrow IPC chunk"):
        load(out).df_page_alloc_events()


def test_parquet_wins_over_leftover_chunks(tmp_path):
    out = streamed_recording(tmp_path, complete=True, parquet=True)
    # a kill between writing the Parquet file and removing the chunks: chunks remain
    extra = out / "events" / "page_alloc" / "chunk-000009.arrow"
    extra.write_bytes(b"garbage")
    rec = load(out)
    assert len(rec.df_page_alloc_events()) == 2 * BATCH + 3
    text = tables.table_report(rec)
    assert "Streamed events: page_alloc:order=0-1" in text
    assert "selected = written + dropped on every CPU" in text
    acc = astream.df_stream_accounting(rec)
    assert list(acc["selected"]) == [11, 8]


def test_unbalanced_accounting_is_reported(tmp_path):
    out = streamed_recording(tmp_path, complete=True, parquet=True)
    meta = json.loads((out / "metadata.json").read_text())
    meta["stream"]["per_cpu"][0]["written"] = 10
    per_cpu = meta["stream"]["per_cpu"]
    meta["stream"] = stream.accounting(
        stream.parse_events("page_alloc"), stream.ResolvedFilter(), per_cpu, 18, 0
    )
    assert meta["stream"]["balanced"] is False
    (out / "metadata.json").write_text(json.dumps(meta))
    assert "WARNING: selected != written + dropped" in tables.table_report(load(out))


def test_bad_stream_metadata_is_one_clear_error(tmp_path):
    out = streamed_recording(tmp_path, complete=True, parquet=True)
    meta = json.loads((out / "metadata.json").read_text())
    meta["stream"]["per_cpu"] = [{"cpu": "zero"}]
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BadInput, match="stream.per_cpu"):
        load(out)


def test_recording_without_events_has_empty_typed_frame():
    rec = load(TEMPLATE)
    df = rec.df_page_alloc_events()
    assert df.empty
    assert "t_ns" in df and "gfp" in df
    assert astream.table_stream(rec) == ""
