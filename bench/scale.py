"""Analysis at scale, and the streaming pipeline's own capacity.

:func:`generate` makes an N-event recording in the exact format streaming mode
writes: a real recording (its metadata, format files and /proc copies) as the
template, events drawn from the template's cube (its allocation classes, weighted
by their counts), per-CPU timestamps with exponential gaps, pfns in runs like the
per-CPU page lists hand them out, packed into ``STREAM_BATCH`` batch records and
sent through the collector's own code (``batches_to_table`` -> IPC chunks ->
``chunks_to_parquet``). Its metadata says ``"generated"``. The cube table is
rewritten from the generated events so that the report is consistent.

:func:`pipeline_capacity` times the user-space half of streaming mode (batch bytes
-> numpy -> Arrow -> lz4 IPC chunk on disk) on generated batches: the rate it can
sustain on one core, independent of how fast this machine can allocate pages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmaprof.collectors import stream
from cmaprof.recording import schema
from cmaprof.recording.writer import RecordingWriter

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "data" / "recordings" / "host-6.18-anon"
BATCH = 256


def _batches(n: int, cube: pa.Table, cpus: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` events (rounded up to whole batches) as stream_batch records."""
    nb = -(-n // BATCH)
    dt = stream.batch_dtype(BATCH)
    arr = np.zeros(nb, dtype=dt)
    arr["n"] = BATCH
    arr["cpu"] = np.arange(nb) % cpus
    arr["seq"] = np.arange(nb) // cpus
    ev = arr["ev"]  # (nb, BATCH) view: assign fields through it, never through a reshape copy
    size = nb * BATCH
    allocs = cube.column("allocs").to_numpy().astype(np.float64)
    pick = rng.choice(len(allocs), size=size, p=allocs / allocs.sum()).reshape(nb, BATCH)
    for col in ("gfp_flags", "node", "zone_idx", "order", "migratetype_id", "cma_area_idx"):
        ev[col] = cube.column(col).to_numpy()[pick]  # struct stream_event's names are the columns
    # per CPU: 5 us mean gaps; pfns in descending runs of ~32 with random jumps
    per_cpu_t = np.cumsum(rng.exponential(5000.0, size=(nb, BATCH)).astype(np.uint64), axis=1)
    per_cpu_t += (np.arange(nb) // cpus * BATCH * 5000).astype(np.uint64)[:, None]
    ev["ts_ns"] = 10**12 + per_cpu_t
    idx = np.arange(size)
    jumps = rng.random(size) < 1 / 32
    jumps[0] = True
    run_start = np.maximum.accumulate(np.where(jumps, idx, 0))
    base = rng.integers(0x100000, 0x200000, size=size, dtype=np.int64)
    ev["pfn"] = (base[run_start] - (idx - run_start)).astype(np.uint64).reshape(nb, BATCH)
    tgids = np.array([1, 412, 5850, 9001, 12345], dtype=np.uint32)
    ev["tgid"] = rng.choice(tgids, size=(nb, BATCH))
    return arr


def generate(out: Path, n: int, cpus: int = 2, seed: int = 1, chunk_events: int = 1 << 20) -> Path:
    """Write an ``n``-event streaming recording at ``out`` (replaced if it exists)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(TEMPLATE, out)
    meta = json.loads((out / "metadata.json").read_text())
    cube = pq.read_table(out / "tables" / "page_alloc.parquet")
    rng = np.random.default_rng(seed)
    w = RecordingWriter.__new__(RecordingWriter)
    w.path, w._parts = out, {}
    t0 = 10**12
    chunks: list[Path] = []
    written = {c: 0 for c in range(cpus)}
    left = n
    i = 0
    keys = [f for f, _ in schema.PAGE_ALLOC_KEYS]
    agg: dict[tuple, list[int]] = {}
    while left > 0:
        m = min(left, chunk_events)
        arr = _batches(m, cube, cpus, rng)
        raw = arr.tobytes()
        t = stream.batches_to_table(raw, BATCH, t0)
        t = t.slice(0, m)
        for c, cnt in zip(*np.unique(t.column("__cpu").to_numpy(), return_counts=True)):
            written[int(c)] += int(cnt)
        g = t.group_by(keys).aggregate([("order", "count")])
        for row in g.to_pylist():
            k = tuple(row[f] for f in keys)
            a = agg.setdefault(k, [0, 0])
            a[0] += row["order_count"]
            a[1] += row["order_count"] << row["order"]
        i += 1
        chunks.append(w.write_bytes(f"events/page_alloc/chunk-{i:06d}.arrow", stream.ipc_bytes(t)))
        left -= m
    rows = stream.chunks_to_parquet(chunks, out / "events" / "page_alloc.parquet")
    for c in chunks:
        c.unlink()
    (out / "events" / "page_alloc").rmdir()
    cols: dict[str, list] = {f: [] for f in keys + ["allocs", "pages"]}
    for k, (a, p) in sorted(agg.items()):
        for f, v in zip(keys, k):
            cols[f].append(v)
        cols["allocs"].append(a)
        cols["pages"].append(p)
    (out / "tables" / "page_alloc.parquet").unlink()
    w.write_table("page_alloc", schema.to_table("page_alloc", cols))
    per_cpu = [
        {"cpu": c, "examined": v, "selected": v, "submitted": v, "written": v, "dropped": 0}
        for c, v in written.items()
    ]
    spec = stream.EventSpec(stream="page_alloc", text="page_alloc")
    meta["stream"] = stream.accounting(spec, stream.ResolvedFilter(), per_cpu, rows, 0)
    meta["generated"] = {
        "by": "bench/scale.py",
        "events": n,
        "seed": seed,
        "template": str(TEMPLATE.relative_to(REPO)),
        "note": "synthetic events; vmstat and /proc copies are the template's",
    }
    meta["label"] = f"generated-{n}"
    (out / "metadata.json").unlink()
    w.write_metadata(meta)
    return out


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    v = fn()
    return time.perf_counter() - t, v


#: What bounds start-up and the report CLI, each timed in a fresh interpreter: the
#: interpreter alone, the imports every report needs, record's imports up to the compile.
FLOOR_IMPORTS = {
    "python_s": "pass",
    "report_imports_s": "import pandas, pyarrow.parquet",
    "record_imports_s": "import bcc, cmaprof.cli, cmaprof.collectors.record",
}


def _median_of(n: int, fn: Any) -> tuple[float, list[float], Any]:
    """Median seconds of ``n`` runs of ``fn`` (a shared host is noisy), all runs, last value."""
    runs, v = [], None
    for _ in range(n):
        dt, v = _timed(fn)
        runs.append(dt)
    return sorted(runs)[n // 2], runs, v


def rt_prefix() -> list[str]:
    """``chrt -f`` as the fault loop runs (:data:`bench.run.RT_PRIORITY`): on a shared
    host the neighbours then cannot preempt what is timed; [] where chrt cannot."""
    from bench import run

    rt = ["chrt", "-f", str(run.RT_PRIORITY)]
    if shutil.which("chrt") is None or subprocess.run([*rt, "true"], check=False).returncode:
        return []
    return rt


def import_floor(n: int = 3, rt: list[str] | None = None) -> dict[str, float]:
    """Seconds of :data:`FLOOR_IMPORTS` (median of ``n`` fresh interpreters each, run
    with the ``rt`` prefix; a figure whose imports fail here, e.g. no BCC, is left out)."""
    out = {}
    for key, code in FLOOR_IMPORTS.items():
        cmd = [*(rt or []), sys.executable, "-c", code]
        med, _, done = _median_of(
            n, lambda cmd=cmd: subprocess.run(cmd, capture_output=True, check=False)
        )
        if done.returncode == 0:
            out[key] = med
    return out


#: load + decode timed in a fresh interpreter, its imports done first (untimed).
_LOAD = """import json, sys, time
from cmaprof.analysis import load
t, c = time.perf_counter(), time.process_time()
n = len(load(sys.argv[1]).df_page_alloc_events())
print(json.dumps([time.perf_counter() - t, time.process_time() - c, n]))
"""


def _load_in(rt: list[str], rec: Path) -> tuple[float, float, int]:
    out = subprocess.run(
        [*rt, sys.executable, "-c", _LOAD, str(rec)], capture_output=True, text=True, check=True
    ).stdout
    wall, cpu, n = json.loads(out)
    return float(wall), float(cpu), int(n)


def analysis_at_scale(out: Path, n: int, repeat: int = 3) -> dict[str, Any]:
    """Generate ``n`` events; time load, the decoded frame, report, compare (CLI); the
    load and the report CLI are the median of ``repeat`` runs (SCHED_FIFO where chrt
    can), beside what bounds them."""
    from cmaprof.analysis import load, tables

    gen_s, rec_path = _timed(lambda: generate(out, n))
    size = (out / "events" / "page_alloc.parquet").stat().st_size
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    res: dict[str, Any] = {"events": n, "generate_s": gen_s}
    res["events_parquet_bytes"] = size
    res["bytes_per_event"] = size / n
    res["recording_bytes_per_event"] = total / n
    # load = open + validate + the decoded per-event frame (what a user's first line
    # does), in a fresh interpreter; that, the report CLI and the bounds under chrt -f
    rt = rt_prefix()
    res["sched"] = "SCHED_FIFO" if rt else "SCHED_OTHER"
    loads = sorted(_load_in(rt, rec_path) for _ in range(repeat))
    res["load_s"], res["load_cpu_s"], rows = loads[repeat // 2]  # CPU: all threads
    res["load_runs_s"] = [x[0] for x in loads]
    assert rows == n, (rows, n)
    c0 = time.process_time()
    res["report_s"], text = _timed(lambda: tables.table_report(load(rec_path)))
    res["report_cpu_s"] = time.process_time() - c0
    res["report_cli_s"], res["report_cli_runs_s"], _ = _median_of(
        repeat,
        lambda: subprocess.run(
            [*rt, sys.executable, "-m", "cmaprof", "report", str(rec_path)],
            capture_output=True,
            check=True,
        ),
    )
    res["compare_cli_s"], cp = _timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "cmaprof", "compare", str(rec_path), str(rec_path)],
            capture_output=True,
            text=True,
            check=False,
        )
    )
    res["compare_exit"] = cp.returncode
    res["report_mentions_events"] = f"{n:>11}" in text or str(n) in text
    res["floor"] = import_floor(rt=rt)
    return res


def pipeline_capacity(events: int = 4 << 20, tmp: Path | None = None) -> dict[str, Any]:
    """Events per second through batches -> Arrow -> lz4 IPC chunk on disk, one core."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="cmaprof-pipe-", dir=tmp))
    try:
        rec = TEMPLATE
        cube = pq.read_table(rec / "tables" / "page_alloc.parquet")
        arr = _batches(events, cube, 2, np.random.default_rng(2))
        per_chunk = (1 << 20) // BATCH
        raws = [arr[i : i + per_chunk].tobytes() for i in range(0, len(arr), per_chunk)]
        w = RecordingWriter(d / "rec")
        t = time.perf_counter()
        for i, raw in enumerate(raws):
            tab = stream.batches_to_table(raw, BATCH, 10**12)
            w.write_bytes(f"events/page_alloc/chunk-{i:06d}.arrow", stream.ipc_bytes(tab))
        chunk_s = time.perf_counter() - t
        chunks = sorted((d / "rec" / "events" / "page_alloc").glob("chunk-*.arrow"))
        t = time.perf_counter()
        stream.chunks_to_parquet(chunks, d / "rec" / "events" / "page_alloc.parquet")
        parquet_s = time.perf_counter() - t
        n = len(arr) * BATCH
        return {
            "events": n,
            "chunk_write_s": chunk_s,
            "events_per_s_to_chunks": n / chunk_s,
            "parquet_convert_s": parquet_s,
            "events_per_s_to_parquet": n / parquet_s,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)
