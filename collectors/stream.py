"""Collector for probes/stream.bpf.c: per-event page allocations (``record --events``).

The BPF program fills a per-CPU batch of ``STREAM_BATCH`` events and hands the whole
batch to a ring buffer, so Python wakes once per batch. Batches are kept as raw
bytes; every chunk interval (or ``CHUNK_EVENTS`` events) they become one numpy
structured array (``np.frombuffer``, no per-event Python object), then one Arrow
record batch, written as ``events/page_alloc/chunk-NNNNNN.arrow`` (Arrow IPC file,
lz4) under a temporary name and renamed: a recording killed at any moment keeps
every completed chunk. At the end the chunks become ``events/page_alloc.parquet``
(written under a temporary name, renamed, then the chunks are removed; the loader
prefers the Parquet file when both exist).

Accounting per CPU, stored in ``metadata.json`` under ``stream``: the BPF counters
(examined, filtered, sampled_out, unreadable, selected, submitted, dropped) and the
rows this collector wrote, so that ``selected = written + dropped`` can be checked.

The filter syntax (``--events page_alloc[:COND,...]``) is parsed by
:func:`parse_events` and resolved against the running kernel's zones and GFP flag
names by :func:`resolve_filter`.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.errors import BadInput, EnvironmentProblem
from cmaprof.probes import abi
from cmaprof.recording import schema
from cmaprof.recording.metadata import Metadata, StreamInfo

#: Indexes of the per-CPU ``stream_stats`` array (probes/events.h STREAM_*).
STAT_NAMES = abi.enum("STREAM_STAT_")
#: Chunk boundaries: whichever comes first.
CHUNK_SECONDS = 1.0
CHUNK_EVENTS = 1 << 20
EVENTS_DIR = "events"
STREAMS = ("page_alloc",)

#: struct stream_event (probes/events.h); checked against BCC's own layout at load.
EVENT_DTYPE = abi.dtype("stream_event")


def batch_dtype(batch: int) -> np.dtype:
    """struct stream_batch with ``batch`` events."""
    return abi.dtype("stream_batch", STREAM_BATCH=batch)


# -- the --events syntax ----------------------------------------------------------
EVENTS_HELP = """\
Stream every page allocation as one row (a per-event table beside the
aggregate), optionally filtered: page_alloc[:COND,COND,...] with COND one of
zone=NAME[|NAME]  (as in /proc/zoneinfo: DMA, DMA32, Normal, Movable),
gfp=FLAG[|FLAG]   (every bit of each flag set; names as the kernel prints them,
e.g. __GFP_MOVABLE or GFP_HIGHUSER_MOVABLE), nogfp=FLAG[|FLAG] (none set),
order=N or order=N-M, cma=yes|no (page inside a CMA area or not), sample=N
(keep every Nth matching event on each CPU). Example:
--events 'page_alloc:zone=Normal,gfp=__GFP_MOVABLE,order=0,sample=10'"""


@dataclass
class EventSpec:
    """A parsed ``--events`` argument (names not yet checked against the kernel)."""

    stream: str
    zones: list[str] = field(default_factory=list)
    gfp_all: list[str] = field(default_factory=list)
    gfp_none: list[str] = field(default_factory=list)
    order_min: int = 0
    order_max: int = 255
    cma: str = "any"
    sample: int = 1
    text: str = ""


def parse_events(text: str) -> EventSpec:
    """Parse ``page_alloc[:COND,...]`` (see :data:`EVENTS_HELP`).

    :raises BadInput: unknown stream or condition, malformed value.
    """
    name, _, conds = text.partition(":")
    name = name.strip()
    if name not in STREAMS:
        raise BadInput(f"--events {text!r}: unknown event stream {name!r}; known: {STREAMS}")
    spec = EventSpec(stream=name, text=text)
    for cond in filter(None, (c.strip() for c in conds.split(","))):
        key, eq, val = cond.partition("=")
        key, val = key.strip(), val.strip()
        if not eq or not val:
            raise BadInput(f"--events {text!r}: condition {cond!r} is not KEY=VALUE")
        names = [v.strip() for v in val.split("|") if v.strip()]
        if key == "zone":
            spec.zones += names
        elif key == "gfp":
            spec.gfp_all += names
        elif key == "nogfp":
            spec.gfp_none += names
        elif key == "order":
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", val)
            if not m or int(m.group(1)) > 255 or int(m.group(2) or m.group(1)) > 255:
                raise BadInput(f"--events {text!r}: order wants N or N-M (0-255), got {val!r}")
            spec.order_min = int(m.group(1))
            spec.order_max = int(m.group(2) or m.group(1))
            if spec.order_max < spec.order_min:
                raise BadInput(f"--events {text!r}: order range {val!r} is empty")
        elif key == "cma":
            if val not in ("yes", "no"):
                raise BadInput(f"--events {text!r}: cma wants yes or no, got {val!r}")
            spec.cma = "in" if val == "yes" else "out"
        elif key == "sample":
            if not val.isdigit() or not 1 <= int(val) < 2**32:
                raise BadInput(f"--events {text!r}: sample wants a whole number >= 1, got {val!r}")
            spec.sample = int(val)
        else:
            raise BadInput(
                f"--events {text!r}: unknown condition {key!r} "
                f"(zone, gfp, nogfp, order, cma, sample)"
            )
    return spec


@dataclass
class ResolvedFilter:
    """The filter as the BPF program reads it (struct stream_filter)."""

    zone_mask: int = 0
    gfp_all: int = 0
    gfp_none: int = 0
    order_min: int = 0
    order_max: int = 255
    cma: int = 0  # STREAM_CMA_ANY / IN / OUT
    sample: int = 1

    def as_metadata(self) -> dict[str, int]:
        return dict(self.__dict__)


def resolve_filter(
    spec: EventSpec, zone_names: dict[int, str], gfp_entries: tuple[tuple[int, str], ...]
) -> ResolvedFilter:
    """Turn names into the zone mask and gfp bit masks of the running kernel.

    :param zone_names: zone index -> name (/proc/zoneinfo).
    :param gfp_entries: ``(mask, name)`` of the kernel's ``mm_page_alloc`` print fmt.
    :raises BadInput: a zone or flag name this kernel does not have.
    """
    by_zone = {v.lower(): k for k, v in zone_names.items()}
    by_flag = {name: mask for mask, name in gfp_entries}
    out = ResolvedFilter(order_min=spec.order_min, order_max=spec.order_max, sample=spec.sample)
    for z in spec.zones:
        if z.lower() not in by_zone:
            raise BadInput(
                f"--events {spec.text!r}: no zone {z!r} on this kernel; "
                f"zones: {', '.join(zone_names[k] for k in sorted(zone_names))}"
            )
        out.zone_mask |= 1 << by_zone[z.lower()]

    def mask(names: list[str]) -> int:
        m = 0
        for n in names:
            if n not in by_flag:
                raise BadInput(
                    f"--events {spec.text!r}: this kernel has no GFP flag {n!r} "
                    f"(names as in /sys/kernel/tracing/events/kmem/mm_page_alloc/format)"
                )
            m |= by_flag[n]
        return m

    out.gfp_all, out.gfp_none = mask(spec.gfp_all), mask(spec.gfp_none)
    out.cma = abi.bits("STREAM_CMA_")[spec.cma]
    return out


# -- numpy -> arrow ---------------------------------------------------------------
def batches_to_table(raw: bytes, batch: int, t0_ns: int) -> pa.Table:
    """Arrow table (``schema.EVENT_SCHEMAS["page_alloc"]``) of concatenated batch
    records; only the first ``n`` events of each batch are used."""
    arr = np.frombuffer(raw, dtype=batch_dtype(batch))
    if len(arr) == 0:
        return schema.EVENT_SCHEMAS["page_alloc"].empty_table()
    ns = arr["n"].astype(np.int64)
    if (ns > batch).any():
        raise ValueError(f"batch record claims more than {batch} events")
    if (ns == batch).all():
        ev = arr["ev"].reshape(-1)
        cpu = np.repeat(arr["cpu"], batch)
    else:
        keep = (np.arange(batch)[None, :] < ns[:, None]).reshape(-1)
        ev = arr["ev"].reshape(-1)[keep]
        cpu = np.repeat(arr["cpu"], ns)
    return events_table(ev, cpu, t0_ns)


def events_table(ev: np.ndarray, cpu: np.ndarray, t0_ns: int) -> pa.Table:
    """Columns of ``EVENT_DTYPE`` rows, times made relative to ``t0_ns``."""
    cols = {
        "t_ns": ev["ts_ns"].astype(np.int64) - np.int64(t0_ns),
        "__cpu": cpu.astype(np.uint16),
        "__tgid": ev["tgid"],
        "pfn": ev["pfn"],
        "gfp_flags": ev["gfp_flags"].astype(np.uint64),
        "node": ev["node"],
        "zone_idx": ev["zone_idx"],
        "order": ev["order"],
        "migratetype_id": ev["migratetype_id"],
        "cma_area_idx": ev["cma_area_idx"],
    }
    want = schema.EVENT_SCHEMAS["page_alloc"]
    return pa.table(
        [pa.array(np.ascontiguousarray(cols[f.name]), type=f.type) for f in want], schema=want
    )


def ipc_bytes(table: pa.Table) -> pa.Buffer:
    """One Arrow IPC file (lz4-compressed buffers) holding ``table``."""
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_file(sink, table.schema, options=opts) as w:
        w.write_table(table)
    return sink.getvalue()


#: Parquet layout of the final per-event table: dictionary pages for the small
#: columns, delta encoding for time (sorted per CPU); zstd on top.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": [
        "__cpu",
        "__tgid",
        "gfp_flags",
        "node",
        "zone_idx",
        "order",
        "migratetype_id",
        "cma_area_idx",
    ],
    "column_encoding": {"t_ns": "DELTA_BINARY_PACKED", "pfn": "DELTA_BINARY_PACKED"},
    "write_statistics": ["t_ns", "__cpu"],
}


def chunks_to_parquet(chunks: list[Path], target: Path) -> int:
    """Write the IPC ``chunks`` as one Parquet file (one row group per chunk, rows of
    each chunk ordered by CPU then time), atomically; return the rows written."""
    tmp = target.with_name(f".{target.name}.tmp")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    rows = 0
    want = schema.EVENT_SCHEMAS["page_alloc"]
    with os.fdopen(fd, "wb") as f:
        with pq.ParquetWriter(f, want, **PARQUET_OPTIONS) as w:
            for c in chunks:
                with pa.memory_map(str(c)) as src:
                    t = pa.ipc.open_file(src).read_all()
                if t.num_rows == 0:
                    continue
                order = np.argsort(t.column("__cpu").to_numpy(), kind="stable")
                w.write_table(t.take(pa.array(order)))
                rows += t.num_rows
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return rows


class StreamCollector(Collector):
    """Drains the ring buffer into IPC chunks; writes the final Parquet file.

    :param writer: the recording's :class:`~cmaprof.recording.writer.RecordingWriter`.
    :param batch: ``STREAM_BATCH`` the program was compiled with.
    """

    name = "stream"
    STREAM = "page_alloc"

    def __init__(self, bpf: Any, writer: Any, spec: EventSpec, batch: int) -> None:
        self.bpf = bpf
        self.writer = writer
        self.spec = spec
        self.batch = batch
        self.dtype = batch_dtype(batch)
        self.t0_ns = 0
        self._fd: int | None = None
        #: stream_btf (tp_btf) or stream_raw, as attached
        self.program = ""
        self._pending: list[bytes] = []
        self._pending_events = 0
        self._last_chunk = time.monotonic()
        self.chunks: list[Path] = []
        self.written: dict[int, int] = {}
        self.received_batches = 0
        self.seq_gaps = 0
        self._next_seq: dict[int, int] = {}
        self.filter = ResolvedFilter()
        self._wanted: ResolvedFilter | None = None
        self.accounting: dict[str, Any] | None = None

    @classmethod
    def create(cls, ctx: CollectorContext) -> StreamCollector | None:
        """None without ``--events`` (``ctx.options["stream"]``: the spec and the
        resolved filter)."""
        spec, filt = ctx.options.get("stream") or (None, None)
        if spec is None or filt is None:
            return None
        from cmaprof import probes

        batch = ctx.defines.get("STREAM_BATCH") or probes.get("stream").options["STREAM_BATCH"]
        out = cls(ctx.bpf, ctx.writer, spec, int(batch))
        out._wanted = filt
        return out

    def configure(self, filt: ResolvedFilter | None = None) -> None:
        """Write the filter (default: the one given at creation) into the program's
        ``stream_filter`` map."""
        filt = filt if filt is not None else (self._wanted or ResolvedFilter())
        leaf_t = self.bpf[b"stream_batch"].sLeaf  # one CPU's value
        if ctypes.sizeof(leaf_t) != self.dtype.itemsize:
            raise EnvironmentProblem(
                f"struct stream_batch is {ctypes.sizeof(leaf_t)} bytes in BPF, "
                f"{self.dtype.itemsize} in collectors/stream.py: layouts differ"
            )
        self.filter = filt
        t = self.bpf[b"stream_filter"]
        leaf = t.Leaf()
        for k, v in filt.as_metadata().items():
            setattr(leaf, {"cma": "cma"}.get(k, k), v)
        t[t.Key(0)] = leaf

    def attach(self) -> None:
        """Attach ``stream_btf`` as tp_btf on mm_page_alloc where the kernel loads it
        (collectors/bccload.py), else ``stream_raw`` as a raw tracepoint.

        BCC's ``attach_raw_tracepoint`` keeps one program per tracepoint name, and the
        page_alloc program may already hold it; the kernel takes any number, so this
        attaches through BCC's library call and keeps the link fd itself.
        """
        from bcc import BPF, lib

        from cmaprof.collectors import bccload

        try:
            if os.environ.get("CMAPROF_TP_BTF", "1") == "0":
                raise bccload.TpBtfUnavailable("CMAPROF_TP_BTF=0 in the environment")
            self._fd = bccload.attach_tp_btf(self.bpf, "stream_btf", "mm_page_alloc")
            self.program = "stream_btf"
            return
        except bccload.TpBtfUnavailable:
            self.program = "stream_raw"
        fn = self.bpf.load_func(b"stream_raw", BPF.RAW_TRACEPOINT)
        fd = lib.bpf_attach_raw_tracepoint(fn.fd, b"mm_page_alloc")
        if fd < 0:
            raise EnvironmentProblem("cannot attach stream_raw to raw tracepoint mm_page_alloc")
        self._fd = fd

    def open(self, t0_ns: int) -> None:
        self.t0_ns = t0_ns
        self.bpf[b"stream_ring"].open_ring_buffer(self._on_batch)

    def start(self, t0_ns: int) -> None:
        self.open(t0_ns)

    def drain(self) -> None:
        """Counting is off: write the last chunk and the Parquet file (:meth:`finish`)."""
        self.accounting = self.finish()

    def metadata(self, meta: Metadata, final: bool) -> None:
        if self.accounting is not None:
            meta.stream = StreamInfo.from_json({**self.accounting, "program": self.program})

    def _on_batch(self, ctx: Any, data: Any, size: int) -> int:
        self._pending.append(ctypes.string_at(data, size))
        self._pending_events += self.batch
        return 0

    def poll(self, force: bool = False) -> None:
        """Drain the ring buffer; write a chunk when one is due (or ``force``)."""
        self.bpf.ring_buffer_consume()
        due = (
            self._pending_events >= CHUNK_EVENTS
            or time.monotonic() - self._last_chunk >= CHUNK_SECONDS
        )
        if self._pending and (due or force):
            self._write_chunk(b"".join(self._pending))
            self._pending, self._pending_events = [], 0
        if due:
            self._last_chunk = time.monotonic()

    def _write_chunk(self, raw: bytes) -> None:
        arr = np.frombuffer(raw, dtype=self.dtype)
        self.received_batches += len(arr)
        for cpu, n, seq in zip(arr["cpu"].tolist(), arr["n"].tolist(), arr["seq"].tolist()):
            self.written[cpu] = self.written.get(cpu, 0) + n
            expect = self._next_seq.get(cpu, 0)
            if seq > expect:
                self.seq_gaps += seq - expect
            self._next_seq[cpu] = seq + 1
        table = batches_to_table(raw, self.batch, self.t0_ns)
        rel = f"{EVENTS_DIR}/{self.STREAM}/chunk-{len(self.chunks) + 1:06d}.arrow"
        self.chunks.append(self.writer.write_bytes(rel, ipc_bytes(table)))

    def finish(self) -> dict[str, Any]:
        """After counting stopped: drain, write each CPU's partial batch, convert to
        Parquet; return the accounting for ``metadata.json``."""
        time.sleep(0.01)  # programs that passed the enabled check before it closed
        self.poll(force=True)
        self.bpf.ring_buffer_consume()
        partial = b"".join(
            bytes(leaf) for leaf in self.bpf[b"stream_batch"][self.bpf[b"stream_batch"].Key(0)]
        )
        parts = np.frombuffer(partial, dtype=self.dtype)
        # each CPU's remainder is its last batch: after everything it submitted
        tail = b"".join(p.tobytes() for p in parts if p["n"])
        raw = b"".join(self._pending) + tail
        self._pending, self._pending_events = [], 0
        if raw:
            self._write_chunk(raw)
        stats_t = self.bpf[b"stream_stats"]
        per_cpu: list[dict[str, int]] = []
        for i, name in enumerate(STAT_NAMES):
            vals = list(stats_t[stats_t.Key(i)])
            for cpu, v in enumerate(vals):
                while len(per_cpu) <= cpu:
                    per_cpu.append({"cpu": len(per_cpu)})
                per_cpu[cpu][name] = int(v)
        for row in per_cpu:
            row["written"] = self.written.get(row["cpu"], 0)
        target = self.writer.path / EVENTS_DIR / f"{self.STREAM}.parquet"
        rows = chunks_to_parquet(self.chunks, target) if self.chunks else 0
        for c in self.chunks:
            c.unlink()
        chunk_dir = self.writer.path / EVENTS_DIR / self.STREAM
        if chunk_dir.is_dir() and not any(chunk_dir.iterdir()):
            chunk_dir.rmdir()
        return accounting(self.spec, self.filter, per_cpu, rows, self.seq_gaps)

    def detach(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def accounting(
    spec: EventSpec, filt: ResolvedFilter, per_cpu: list[dict[str, int]], rows: int, gaps: int
) -> dict[str, Any]:
    """The ``stream`` entry of metadata.json."""
    totals = {
        k: sum(r.get(k, 0) for r in per_cpu)
        for k in STAT_NAMES + ("written",)
        if k not in ("batches", "dropped_batches")
    }
    balanced = all(r.get("selected", 0) == r["written"] + r.get("dropped", 0) for r in per_cpu)
    return {
        "events": spec.stream,
        "spec": spec.text,
        "filter": filt.as_metadata(),
        "per_cpu": per_cpu,
        "totals": totals,
        "rows_in_parquet": rows,
        "batch_seq_gaps": gaps,
        "balanced": balanced and rows == totals["written"],
    }
