"""Per-event tables of ``record --events``: loading, decoding, accounting, report text.

Contract (see :mod:`cmaprof.recording.schema` ``EVENT_SCHEMAS``): a finished recording
holds ``events/page_alloc.parquet``; a recording killed while streaming holds the
Arrow IPC chunks ``events/page_alloc/chunk-NNNNNN.arrow`` written so far (each one
complete: written under a temporary name and renamed). The Parquet file wins when
both exist (a kill between writing it and removing the chunks).

Decoded frames carry the stored columns plus ``zone``, ``migratetype``, ``gfp`` and
``cma_area`` as categoricals (one decode per distinct value, not per row), named from
the recording's own format files and /proc copies, as the cube is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cmaprof.errors import BadInput
from cmaprof.recording import schema

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording
    from cmaprof.recording.metadata import Metadata

EVENTS_DIR = "events"


def event_files(path: Path, name: str = "page_alloc") -> tuple[Path | None, list[Path]]:
    """The Parquet file (or None) and the IPC chunks of stream ``name``."""
    parquet = path / EVENTS_DIR / f"{name}.parquet"
    d = path / EVENTS_DIR / name
    chunks = sorted(d.glob("chunk-*.arrow")) if d.is_dir() else []
    return (parquet if parquet.exists() else None), chunks


def has_events(path: Path, name: str = "page_alloc") -> bool:
    parquet, chunks = event_files(path, name)
    return parquet is not None or bool(chunks)


def read_chunk(path: Path, want: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """One IPC chunk, checked against the schema.

    :raises BadInput: truncated or not an Arrow IPC file of this schema.
    """
    try:
        with pa.memory_map(str(path)) as src:
            t = pa.ipc.open_file(src).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(
            f"{path}: unreadable Arrow IPC chunk ({' '.join(str(exc).split())[:160]}); "
            f"the file is truncated or corrupt (remove it to read the others)"
        ) from None
    if t.schema != want:
        raise BadInput(f"{path}: columns {t.schema.names} are not the {want.names} of this format")
    return t.select(columns) if columns else t


def events_table(
    rec: Recording, name: str = "page_alloc", columns: list[str] | None = None
) -> pa.Table:
    """The raw per-event table of stream ``name`` (empty when the recording has none)."""
    want = schema.EVENT_SCHEMAS[name]
    cols = columns or want.names
    parquet, chunks = event_files(rec.path, name)
    if parquet is not None:
        try:
            f = pq.ParquetFile(parquet)
            have = f.schema_arrow
            for fld in want:
                if have.get_field_index(fld.name) < 0 or have.field(fld.name).type != fld.type:
                    raise BadInput(
                        f"{parquet}: column {fld.name!r} missing or not {fld.type}; "
                        f"not a cmaprof event table of this format version"
                    )
            return f.read(columns=cols)
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(
                f"{parquet}: unreadable Parquet ({' '.join(str(exc).split())[:160]}); "
                f"the file is corrupt or truncated"
            ) from None
    if not chunks:
        return want.empty_table().select(cols)
    return pa.concat_tables([read_chunk(c, want, cols) for c in chunks])


def _codes(t: pa.Table, col: str) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index of each row's value): Arrow's hash dictionary encoding,
    linear in rows (numpy's unique sorts)."""
    col_ = t.column(col)
    arr = col_.chunk(0) if col_.num_chunks == 1 else col_.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr.dictionary.to_numpy(zero_copy_only=False), arr.indices.to_numpy(zero_copy_only=False)


def _categorical(values: np.ndarray, idx: np.ndarray, labels: list[str | None]) -> pd.Categorical:
    """Categorical of rows whose value is ``values[idx]``, labelled ``labels[k]`` for
    ``values[k]`` (None: missing). The codes are made once, in the narrowest integer
    type pandas keeps for that many categories (no per-row conversion after)."""
    cats = list(dict.fromkeys(lbl for lbl in labels if lbl is not None))
    code_t = next(t for t in (np.int8, np.int16, np.int32, np.int64) if len(cats) < np.iinfo(t).max)
    pos = {lbl: k for k, lbl in enumerate(cats)}
    lut = np.array([pos[lbl] if lbl is not None else -1 for lbl in labels] or [-1], dtype=code_t)
    # every code is -1 or a category's index: nothing for pandas to validate per row
    return pd.Categorical.from_codes(lut[idx], categories=cats, validate=False)


def decode(rec: Recording, t: pa.Table) -> pd.DataFrame:
    """Typed frame of an event table with zone, migratetype, gfp, cma_area added."""
    df = t.to_pandas(split_blocks=True)  # a block per column: no copy into 2-D blocks
    names = t.column_names
    if "zone_idx" in names:
        zn = rec.zone_names
        v, i = _codes(t, "zone_idx")
        df["zone"] = _categorical(v, i, [zn.get(int(x), f"zone{int(x)}") for x in v])
    if "migratetype_id" in names:
        mt = rec.migratetype_names
        v, i = _codes(t, "migratetype_id")
        df["migratetype"] = _categorical(
            v, i, [mt[int(x)] if int(x) < len(mt) else f"mt{int(x)}" for x in v]
        )
    if "gfp_flags" in names:
        v, i = _codes(t, "gfp_flags")
        table = rec.gfp_table if len(v) else None
        df["gfp"] = _categorical(v, i, [table.decode(int(x)) for x in v] if table else [])
    if "cma_area_idx" in names:
        an = rec.cma_area_names
        v, i = _codes(t, "cma_area_idx")
        df["cma_area"] = _categorical(
            v,
            i,
            [
                None
                if int(x) == schema.CMA_AREA_NONE
                else (an[int(x)] if int(x) < len(an) else f"cma{int(x)}")
                for x in v
            ],
        )
    return df


def df_page_alloc_events(rec: Recording, columns: list[str] | None = None) -> pd.DataFrame:
    """One row per streamed allocation, decoded (``t_ns`` since the recording start)."""
    return decode(rec, events_table(rec, "page_alloc", columns))


def df_stream_accounting(rec: Recording) -> pd.DataFrame:
    """Per CPU: examined, filtered, sampled_out, unreadable, selected, written, dropped
    (``record --events``; empty when the recording streamed nothing)."""
    st = rec.meta.stream
    rows = (st.per_cpu if st is not None else None) or []
    cols = ["cpu", "examined", "filtered", "sampled_out", "unreadable", "selected"]
    cols += ["written", "dropped"]
    return pd.DataFrame([{c: r.get(c, 0) for c in cols} for r in rows], columns=cols)


def df_events_by_zone(rec: Recording) -> pd.DataFrame:
    """Streamed events and pages per node and zone (computed in Arrow, not per row)."""
    t = events_table(rec, "page_alloc", ["node", "zone_idx", "order"])
    if t.num_rows == 0:
        return pd.DataFrame(columns=["node", "zone", "events", "pages"])
    # count per (node, zone, order) over the rows, pages = count << order on the groups
    g = t.group_by(["node", "zone_idx", "order"]).aggregate([("order", "count")]).to_pandas()
    g["pages"] = np.left_shift(g["order_count"].to_numpy(np.uint64), g["order"].to_numpy(np.uint64))
    df = g.groupby(["node", "zone_idx"], as_index=False).agg(
        events=("order_count", "sum"), pages=("pages", "sum")
    )
    zn = rec.zone_names
    df["zone"] = [zn.get(int(i), f"zone{int(i)}") for i in df["zone_idx"]]
    return df.sort_values(["node", "zone_idx"])[["node", "zone", "events", "pages"]]


def table_stream(rec: Recording) -> str:
    """Report section: what was streamed and whether every event is accounted for."""
    st = rec.meta.stream
    chunks_only = event_files(rec.path)[0] is None and has_events(rec.path)
    if st is None and not has_events(rec.path):
        return ""
    out = []
    if st is not None:
        tot = st.totals or {}
        out.append(f"Streamed events: {st.spec if st.has('spec') else 'page_alloc'}")
        out.append(
            f"{'cpu':>4} {'examined':>11} {'filtered':>10} {'sampled':>10} {'selected':>11} "
            f"{'written':>11} {'dropped':>9}"
        )
        acc = df_stream_accounting(rec)
        rows = list(acc.itertuples(index=False)) + (
            [("all",) + tuple(tot.get(c, 0) for c in acc.columns[1:])] if len(acc) > 1 else []
        )
        for r in rows:
            d = dict(zip(acc.columns, r))
            out.append(
                f"{d['cpu']!s:>4} {d['examined']:>11} {d['filtered'] + d['unreadable']:>10} "
                f"{d['sampled_out']:>10} {d['selected']:>11} {d['written']:>11} {d['dropped']:>9}"
            )
        ok = st.balanced
        out.append(
            "selected = written + dropped on every CPU"
            if ok
            else "WARNING: selected != written + dropped (events unaccounted for)"
        )
    else:
        out.append("Streamed events: page_alloc (recording killed: accounting not written)")
    if chunks_only:
        chunks = event_files(rec.path)[1]
        out.append(f"events in {len(chunks)} Arrow IPC chunks (not converted: recording killed)")
    by_zone = df_events_by_zone(rec)
    for r in by_zone.itertuples(index=False):
        out.append(
            f"  node {r.node} {r.zone!s:<8} {int(r.events):>11} events {int(r.pages):>11} pages"
        )
    return "\n".join(out)


def stream_summary(meta: Metadata) -> dict[str, Any]:
    """Totals for the JSON report's ``recording`` row (empty without streaming)."""
    tot = (meta.stream.totals if meta.stream is not None else None) or {}
    if not tot:
        return {}
    return {
        "stream_selected": tot.get("selected"),
        "stream_written": tot.get("written"),
        "stream_dropped": tot.get("dropped"),
    }
