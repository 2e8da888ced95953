"""``cmaprof import``: trace text captured without cmaprof becomes a recording.

Input is the text of tracefs (``trace``/``trace_pipe``), ``trace-cmd report`` or
``perf script`` with ``kmem:mm_page_alloc`` (required) and, when present, ``cma:*``
and ``migrate:mm_migrate_pages``. The output is a recording of format version 1
(:mod:`cmaprof.recording.writer`), with the tables of
:mod:`cmaprof.recording.schema` built from the events:

- ``page_alloc``: the cube, one row per (gfp, node, zone, order, migratetype, CMA
  area); ``page_alloc_fail``: allocations that returned no page.
- ``cma_alloc``: ``cma_alloc_start`` paired with the same task's next
  ``cma_alloc_finish``; ``cma_alloc_busy_retry`` and ``mm_migrate_pages`` of that
  task in between are counted into the call. A start that the same task follows with
  another start, or that the capture ends before finishing, is a call without finish
  (``outcome_source`` 3, failed; 6.1's ``cma_alloc()`` returns early without a finish
  event, e.g. for a request larger than the area).
- ``cma_release`` and ``migrate`` (by reason and mode; no durations: the text has
  no ``mm_migrate_pages_start`` pairing).

Text holds names, not numbers: GFP flags, migrate reasons and modes are turned back
into the kernel's values with the ``__print_flags``/``__print_symbolic`` tables of the
format files (``--formats DIR``, or ``formats/``/``events/`` beside the input), the
inverse of what the kernel printed. The text has no zone and no CMA placement: zones
come from pfn spans of a ``/proc/zoneinfo`` copy (``--zoneinfo``; a pfn in no span or
in overlapping spans is zone "unknown"), CMA placement from ``--cma-ranges`` or a
saved debugfs ``cma`` directory; without them both are "unknown" and the metadata
says so. Kernel counters exist only if ``--vmstat-start``/``--vmstat-end`` give
/proc/vmstat copies read around the captured window; otherwise the report's check
says there are none.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cmaprof.errors import BadInput
from cmaprof.kernel import formats, procfs
from cmaprof.kernel.trace_fields import NULL_POINTERS, ValueEncoder, page_alloc_values
from cmaprof.kernel.trace_text import ParsedText, key_values, parse_files
from cmaprof.probes import abi
from cmaprof.recording import schema
from cmaprof.recording.writer import RecordingWriter

#: zone_idx / node of a page whose zone the text cannot tell.
ZONE_UNKNOWN = 255
NODE_UNKNOWN = 0xFFFF
#: cma_area_idx of a page whose CMA placement is unknown (no CMA ranges given).
CMA_AREA_UNKNOWN = schema.CMA_AREA_UNKNOWN
_U64 = (1 << 64) - 1
EVENT_SYSTEMS = ("kmem", "cma", "migrate")


@dataclass(frozen=True)
class CmaRange:
    """A CMA area: ``count`` pages from ``base_pfn`` (debugfs ``base_pfn``/``count``)."""

    name: str
    base_pfn: int
    count: int


def parse_cma_ranges(specs: list[str]) -> list[CmaRange]:
    """``NAME:BASE_PFN:COUNT`` (numbers in C notation) or a saved debugfs ``cma``
    directory (``<area>/base_pfn``, ``<area>/count``; or one area's directory)."""
    out: list[CmaRange] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            dirs = (
                [p] if (p / "base_pfn").exists() else sorted(d for d in p.iterdir() if d.is_dir())
            )
            for d in dirs:
                try:
                    base = int((d / "base_pfn").read_text().split()[0], 0)
                    count = int((d / "count").read_text().split()[0], 0)
                except (OSError, ValueError, IndexError):
                    raise BadInput(f"{d}: no readable base_pfn and count (debugfs cma copy)")
                name = d.name if d != p or p.name not in ("", ".") else "cma"
                out.append(CmaRange(name, base, count))
            continue
        parts = spec.split(":")
        try:
            name, base, count = parts[0], int(parts[1], 0), int(parts[2], 0)
            if len(parts) != 3 or not name or base < 0 or count <= 0:
                raise ValueError
        except (ValueError, IndexError):
            raise BadInput(
                f"--cma-ranges {spec!r}: want NAME:BASE_PFN:COUNT or a debugfs cma directory"
            ) from None
        out.append(CmaRange(name, base, count))
    if len({r.name for r in out}) != len(out):
        raise BadInput("--cma-ranges names an area twice")
    return out


def find_formats(inputs: list[Path], given: Path | None) -> Path:
    """The tracefs ``events`` directory to decode with: ``given`` (``DIR/events/<sys>``
    or ``DIR/<sys>`` layout), else ``formats/`` or ``events/`` beside an input."""
    cands = [given] if given else []
    if not given:
        for i in inputs:
            for d in (i.parent, i.parent.parent):
                cands += [d / "formats", d / "formats/events", d / "events"]
    for c in cands:
        for d in (c / "events", c):
            if (d / "kmem/mm_page_alloc/format").is_file():
                return d
    if given:
        raise BadInput(f"{given}: no kmem/mm_page_alloc/format below it (or below events/)")
    raise BadInput(
        "no format files beside the input: give --formats DIR, a copy of "
        "/sys/kernel/tracing/events (at least kmem/mm_page_alloc/format) from the traced kernel"
    )


class _Bad:
    """Malformed event lines: count and the first one."""

    def __init__(self, parsed: ParsedText) -> None:
        self.count = 0
        self.first: str | None = None
        self.at: tuple[int, int] | None = None
        #: cma_alloc_finish events whose start precedes the capture (not a call row)
        self.finish_without_start = 0
        self.inputs = parsed.inputs

    def add(self, n: int, file: int, line: int, text: str, why: str) -> None:
        if n <= 0:
            return
        self.count += n
        if self.at is None or (file, line) < self.at:
            self.first = f"{self.inputs[file]}:{line}: {why}: {text[:120]}"
            self.at = (file, line)


def _zone_of(pfns: np.ndarray, zones: list[procfs.Zone]) -> tuple[np.ndarray, np.ndarray]:
    """Zone index and node of each pfn from zone spans; unknown where no span or
    several spans hold it (overlapping spans: ZONE_MOVABLE beside Normal, multi-node)."""
    spans = [z for z in zones if z.start_pfn is not None and z.spanned]
    hits = np.zeros(len(pfns), dtype=np.int32)
    zone = np.full(len(pfns), ZONE_UNKNOWN, dtype=np.uint8)
    node = np.full(len(pfns), NODE_UNKNOWN, dtype=np.uint16)
    for z in spans:
        start = int(z.start_pfn or 0)
        inside = (pfns >= start) & (pfns < start + z.spanned)
        hits += inside
        zone[inside] = z.idx
        node[inside] = z.node
    amb = hits != 1
    zone[amb] = ZONE_UNKNOWN
    node[amb] = NODE_UNKNOWN
    return zone, node


def _cma_of(pfns: np.ndarray, ranges: list[CmaRange] | None) -> np.ndarray:
    if ranges is None:
        return np.full(len(pfns), CMA_AREA_UNKNOWN, dtype=np.uint8)
    out = np.full(len(pfns), schema.CMA_AREA_NONE, dtype=np.uint8)
    for i, r in enumerate(ranges):
        out[(pfns >= r.base_pfn) & (pfns < r.base_pfn + r.count)] = i
    return out


def _select(ev: pa.Table, name: str) -> pa.Table:
    return ev.filter(pc.equal(ev["event"], name))


def build_page_alloc(
    ev: pa.Table,
    fmt: formats.EventFormat,
    zones: list[procfs.Zone] | None,
    ranges: list[CmaRange] | None,
    bad: _Bad,
) -> tuple[pa.Table, pa.Table]:
    """The ``page_alloc`` cube and ``page_alloc_fail`` table of the mm_page_alloc events."""
    alloc = _select(ev, "mm_page_alloc")
    f = alloc["fields"].combine_chunks()
    v = page_alloc_values(f, fmt)
    ok = v["ok"] & (v["order"] < 64) & (v["migratetype"] < 256)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        g = v["gfp_text"][i]
        why = (
            f"gfp_flags {g!r} not in {fmt.source}'s table"
            if g is not None
            else "mm_page_alloc without readable pfn/order/migratetype/gfp_flags"
        )
        bad.add(
            int((~ok).sum()), alloc["file"][i].as_py(), alloc["line"][i].as_py(), f[i].as_py(), why
        )
    pfn = v["pfn"]
    # a failed allocation: pfn -1 (raw) or 6.1+'s rendering pfn=0x0 with a NULL page
    failed = ((pfn == np.uint64(_U64)) | ((pfn == 0) & v["page_null"]))[ok]
    df = pd.DataFrame(
        {
            "gfp_flags": v["gfp"][ok],
            "order": v["order"][ok].astype(np.uint8),
            "migratetype_id": v["migratetype"][ok].astype(np.uint8),
            "pfn": pfn[ok],
        }
    )
    df["pages"] = np.left_shift(np.uint64(1), df["order"].to_numpy(np.uint64))
    df["allocs"] = np.uint64(1)
    good = df[~failed]
    pfns = good["pfn"].to_numpy(dtype=np.uint64)
    good = good.assign(cma_area_idx=_cma_of(pfns, ranges))
    if zones is not None:
        zone, node = _zone_of(pfns, zones)
        good = good.assign(zone_idx=zone, node=node)
    else:
        good = good.assign(zone_idx=np.uint8(ZONE_UNKNOWN), node=np.uint16(NODE_UNKNOWN))
    keys = [k for k, _ in schema.PAGE_ALLOC_KEYS]
    cube = good.groupby(keys, sort=True)[["allocs", "pages"]].sum().reset_index()
    fail_keys = ["gfp_flags", "order", "migratetype_id"]
    fail = df[failed].groupby(fail_keys, sort=True)[["allocs", "pages"]].sum().reset_index()
    return (
        pa.Table.from_pandas(cube, schema=schema.SCHEMAS["page_alloc"], preserve_index=False),
        pa.Table.from_pandas(fail, schema=schema.SCHEMAS["page_alloc_fail"], preserve_index=False),
    )


def _rare_events(ev: pa.Table, names: tuple[str, ...]) -> list[dict[str, Any]]:
    sel = ev.filter(pc.is_in(ev["event"], pa.array(names)))
    return sel.select(["file", "line", "comm", "pid", "ts", "event", "fields"]).to_pylist()


def build_cma_migrate(
    ev: pa.Table,
    fmts: dict[tuple[str, str], formats.EventFormat],
    ranges: list[CmaRange] | None,
    t0: float,
    bad: _Bad,
) -> dict[str, pa.Table]:
    """``cma_alloc`` (paired per task), ``cma_release`` and ``migrate`` tables."""
    rows = _rare_events(
        ev,
        (
            "cma_alloc_start",
            "cma_alloc_finish",
            "cma_alloc_busy_retry",
            "cma_release",
            "mm_migrate_pages",
        ),
    )
    names = [r.name for r in ranges] if ranges else []
    mig_fmt = fmts.get(("migrate", "mm_migrate_pages"))
    reason_enc = ValueEncoder(mig_fmt, "reason", mig_fmt.source) if mig_fmt else None
    mode_enc = ValueEncoder(mig_fmt, "mode", mig_fmt.source) if mig_fmt else None
    calls: list[dict[str, Any]] = []
    open_: dict[int, dict[str, Any]] = {}
    release: dict[int, list[int]] = {}
    migrate: dict[tuple[int, int], list[int]] = {}

    def area_idx(name: str) -> int:
        return names.index(name) if name in names else schema.CMA_AREA_NONE

    def ns(ts: float) -> int:
        return round((ts - t0) * 1e9)

    def close(call: dict[str, Any]) -> None:
        calls.append(call)

    for r in rows:
        kv = key_values(r["fields"])
        e = r["event"]
        try:
            if e == "cma_alloc_start":
                if r["pid"] in open_:
                    close(open_.pop(r["pid"]))  # previous call ended without finish
                open_[r["pid"]] = {
                    "start_ns": ns(r["ts"]),
                    "latency_ns": 0,
                    "area_idx": area_idx(kv.get("name", "")),
                    "area": kv.get("name", ""),
                    # `request_count` since ~6.18 (with available/total counts), `count` before
                    "pages_requested": int(kv.get("request_count", kv.get("count", "")), 0),
                    "align": int(kv.get("align", "0"), 0),
                    "success": False,
                    "outcome_source": abi.CMA_OUTCOME_NO_FINISH,
                    "errno": None,
                    "busy_retries": 0,
                    "migrate_succeeded": 0,
                    "migrate_failed": 0,
                    "isolate_tests": 0,
                    "isolate_failures": 0,
                    "first_busy_pfn": None,
                    "pfn": None,
                    "pid": r["pid"],
                    "tgid": r["pid"],
                    "comm": r["comm"],
                }
            elif e == "cma_alloc_busy_retry":
                call = open_.get(r["pid"])
                if call is not None:
                    call["busy_retries"] += 1
                    if call["first_busy_pfn"] is None:
                        call["first_busy_pfn"] = int(kv["pfn"], 0) & _U64
            elif e == "cma_alloc_finish":
                call = open_.pop(r["pid"], None)
                if call is None:
                    bad.finish_without_start += 1  # the capture began inside this call
                    continue
                page = kv.get("page")
                if "errorno" in kv:
                    err = int(kv["errorno"], 0)
                    call["success"], call["outcome_source"] = err == 0, abi.CMA_OUTCOME_ERRORNO
                    call["errno"] = err or None
                elif page is not None:
                    call["success"], call["outcome_source"] = (
                        page not in NULL_POINTERS,
                        abi.CMA_OUTCOME_PAGE,
                    )
                else:
                    raise KeyError("page")
                call["pfn"] = int(kv["pfn"], 0) & _U64
                call["latency_ns"] = ns(r["ts"]) - call["start_ns"]
                close(call)
            elif e == "cma_release":
                acc = release.setdefault(area_idx(kv.get("name", "")), [0, 0])
                acc[0] += 1
                acc[1] += int(kv["count"], 0)
            elif e == "mm_migrate_pages":
                if reason_enc is None or mode_enc is None:
                    raise KeyError("migrate/mm_migrate_pages format file")
                reason, mode = reason_enc(kv["reason"]), mode_enc(kv["mode"])
                if reason is None or mode is None:
                    raise KeyError(f"mode/reason {kv['mode']}/{kv['reason']}")
                vals = [int(kv[k], 0) for k in ("nr_succeeded", "nr_failed")]
                thp = [
                    int(kv.get(k, "0"), 0)
                    for k in ("nr_thp_succeeded", "nr_thp_failed", "nr_thp_split")
                ]
                acc = migrate.setdefault((reason, mode), [0] * 8)
                for i, v in enumerate([1, *vals, *thp]):
                    acc[i] += v
                call = open_.get(r["pid"])
                if call is not None:
                    call["migrate_succeeded"] += vals[0]
                    call["migrate_failed"] += vals[1]
        except (KeyError, ValueError) as exc:
            bad.add(1, r["file"], r["line"], r["fields"], f"{e}: bad or missing {exc}")
    for call in open_.values():
        close(call)  # started, never finished within the capture
    calls.sort(key=lambda c: c["start_ns"])
    cma_t = schema.to_table("cma_alloc", {k: [c[k] for c in calls] for k in schema.CMA_ALLOC.names})
    rel_t = schema.to_table(
        "cma_release",
        {
            "area_idx": list(release),
            "calls": [v[0] for v in release.values()],
            "pages": [v[1] for v in release.values()],
        },
    )
    mig_cols: dict[str, list] = {
        "reason_id": [k[0] for k in migrate],
        "mode_id": [k[1] for k in migrate],
    }
    for i, c in enumerate(schema.MIGRATE_COUNTS):
        mig_cols[c] = [v[i] for v in migrate.values()]
    return {
        "cma_alloc": cma_t,
        "cma_release": rel_t,
        "migrate": schema.to_table("migrate", mig_cols),
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_KERNEL_ADDR = re.compile(r"\b(0x)?ffff[89a-f][0-9a-f]{11}\b", re.IGNORECASE)


def _refuse_unreadable(
    ev: pa.Table, parsed: ParsedText, cube: pa.Table, fail: pa.Table, bad: _Bad
) -> None:
    """Every mm_page_alloc line malformed is a layout cmaprof cannot read (e.g.
    ``perf script -F ...,ip,sym``: no event fields), not a capture without allocations.

    :raises BadInput: naming the layout seen and the layouts that are read.
    """
    allocs = int(pc.sum(pc.equal(ev["event"], "mm_page_alloc")).as_py() or 0)
    if not allocs or cube.num_rows or fail.num_rows:
        return
    text = _KERNEL_ADDR.sub("<address>", _select(ev, "mm_page_alloc")["fields"][0].as_py())
    raise BadInput(
        f"{', '.join(parsed.inputs)}: none of the {allocs} kmem:mm_page_alloc lines has "
        f"the event's fields (a {parsed.source} line whose event text is {text[:80]!r}); "
        f"cmaprof reads the event text as the kernel prints it "
        f"(pfn=... order=... migratetype=... gfp_flags=...) or raw fields: use plain "
        f"`perf script` (or -F comm,tid,cpu,time,event,trace), `trace-cmd report` or "
        f"`trace-cmd report -R`, or tracefs `trace`"
    )


def window_arg(
    window: tuple[float, float] | None, window_of: Path | None
) -> tuple[float, float] | None:
    """``--window START END`` or ``--window-of RECORDING``: the window in seconds.

    :param window_of: a cmaprof recording; its CLOCK_MONOTONIC counting window.
    :raises BadInput: both given; a recording without a counting window.
    """
    if window_of is None:
        return window
    if window is not None:
        raise BadInput("--window and --window-of exclude each other; give one")
    from cmaprof.recording import reader as recording

    win = recording.counting_window_s(recording.load(window_of).meta)
    if win is None:
        raise BadInput(
            f"{window_of}: the recording has no counting window (made before cmaprof kept "
            f"one, or killed before counting stopped); give --window START END instead"
        )
    return win


def import_text(
    inputs: list[Path],
    output: Path,
    *,
    source: str = "auto",
    formats_dir: Path | None = None,
    zoneinfo: Path | None = None,
    pagetypeinfo: Path | None = None,
    cma_ranges: list[str] | None = None,
    vmstat_start: Path | None = None,
    vmstat_end: Path | None = None,
    window: tuple[float, float] | None = None,
    kernel_release: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Import trace text into a new recording at ``output``; returns its metadata.

    :param inputs: text files of one kind (``.xz`` is decompressed)
    :param source: ``auto``, ``tracefs``, ``trace-cmd`` or ``perf``
    :param formats_dir: copy of the traced kernel's ``/sys/kernel/tracing/events``
    :param zoneinfo: copy of its ``/proc/zoneinfo`` (zones from pfn spans)
    :param pagetypeinfo: copy of its ``/proc/pagetypeinfo`` (migratetype names)
    :param cma_ranges: ``NAME:BASE_PFN:COUNT`` or debugfs ``cma`` directory copies
    :param vmstat_start: ``/proc/vmstat`` read right before the captured window
    :param vmstat_end: ``/proc/vmstat`` read right after it
    :param window: keep only events with ``start <= timestamp <= end`` (seconds, in the
        trace's own clock, as printed)
    :param kernel_release: ``uname -r`` of the traced machine, when known
    :raises BadInput: unreadable, empty or foreign input; missing or bad format files
    """
    t_begin = time.monotonic()
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise BadInput("no input files")
    if (vmstat_start is None) != (vmstat_end is None):
        raise BadInput("--vmstat-start and --vmstat-end go together (the window's two ends)")
    for p in inputs:
        if not p.is_file():
            raise BadInput(f"{p}: no such file")
    fdir = find_formats(inputs, formats_dir)
    fmts = formats.load_format_dir(fdir)
    page_fmt = fmts[("kmem", "mm_page_alloc")]
    formats.gfp_table(page_fmt)  # raises a clear error when it cannot decode
    zones = None
    zone_text = None
    if zoneinfo is not None:
        zone_text = _read(zoneinfo)
        zones = procfs.parse_zoneinfo(zone_text, str(zoneinfo))
        if not zones:
            raise BadInput(f"{zoneinfo}: no zones; not a /proc/zoneinfo copy")
    ranges = parse_cma_ranges(cma_ranges) if cma_ranges else None
    vm = {}
    for which, vp in (("start", vmstat_start), ("end", vmstat_end)):
        if vp is not None:
            text = _read(vp)
            if not procfs.parse_vmstat(text, str(vp)):
                raise BadInput(f"{vp}: no counters; not a /proc/vmstat copy")
            vm[which] = text
    pti_text = _read(pagetypeinfo) if pagetypeinfo else None
    if pti_text is not None:
        try:
            formats.migratetype_names_from_pagetypeinfo(pti_text)
        except formats.FormatError as exc:
            raise BadInput(f"{pagetypeinfo}: {exc}") from None

    parsed = parse_files(inputs, source)
    ev = parsed.events
    if ev.num_rows and not pc.any(pc.equal(ev["event"], "mm_page_alloc")).as_py():
        raise BadInput(
            f"{', '.join(parsed.inputs)}: no kmem:mm_page_alloc events (events seen: "
            f"{', '.join(sorted(set(ev['event'].to_pylist()))[:8])})"
        )
    bad = _Bad(parsed)
    if window is not None:
        lo, hi = window
        ev = ev.filter(pc.and_(pc.greater_equal(ev["ts"], lo), pc.less_equal(ev["ts"], hi)))
        if ev.num_rows == 0:
            raise BadInput(f"no event between {lo} and {hi} s (--window)")
    ts = ev["ts"].to_numpy()
    t0, t1 = float(ts.min()), float(ts.max())
    cube, fail = build_page_alloc(ev, page_fmt, zones, ranges, bad)
    _refuse_unreadable(ev, parsed, cube, fail, bad)
    rare = build_cma_migrate(ev, fmts, ranges, t0, bad)
    counts = pc.value_counts(ev["event"]).to_pylist()
    events = {c["values"]: c["counts"] for c in counts}
    known = {"mm_page_alloc", "cma_alloc_start", "cma_alloc_finish", "cma_alloc_busy_retry"}
    known |= {"cma_release", "mm_migrate_pages"}

    w = RecordingWriter(output, force=force)
    for (sysname, name), f in sorted(fmts.items()):
        if sysname in EVENT_SYSTEMS:
            w.write_bytes(f"formats/{sysname}/{name}/format", Path(f.source).read_bytes())
    for which in ("start", "end"):
        if zone_text is not None:
            w.write_text(f"proc/{which}/zoneinfo", zone_text)
        if pti_text is not None:
            w.write_text(f"proc/{which}/pagetypeinfo", pti_text)
        if which in vm:
            w.write_text(f"proc/{which}/vmstat", vm[which])
    w.write_table("page_alloc", cube)
    w.write_table("page_alloc_fail", fail)
    for name, table in rare.items():
        w.write_table(name, table)
    zone_names = procfs.zone_names(zones) if zones else {}
    if zones is None or ZONE_UNKNOWN in set(cube["zone_idx"].to_pylist()):
        zone_names = {**zone_names, ZONE_UNKNOWN: "unknown"}
    malformed = parsed.malformed + bad.count
    first_bad = parsed.first_malformed
    if bad.at is not None and (
        parsed.first_malformed_at is None or bad.at < parsed.first_malformed_at
    ):
        first_bad = bad.first
    meta: dict[str, Any] = {
        "kernel_release": kernel_release or "unknown (imported trace text)",
        "complete": True,
        "stop_reason": "imported",
        "duration_ns": round((t1 - t0) * 1e9),
        **({"cpus": parsed.cpus} if parsed.cpus else {}),
        "zones": [z.as_dict() for z in zones] if zones else [],
        "zone_names": {str(k): v for k, v in zone_names.items()},
        "cma_areas": [
            {"name": r.name, "base_pfn": r.base_pfn, "count": r.count} for r in ranges or []
        ],
        "lost": {"trace_buffer": parsed.lost},
        "dropped": {"malformed_lines": malformed},
        "page_alloc": {
            "zone_source": "pfn_spans" if zones else "unknown",
            "zone_source_reason": (
                f"pfn spans of {zoneinfo}"
                if zones
                else "trace text has no zone; no --zoneinfo given"
            ),
        },
        "imported": {
            "source": parsed.source,
            "inputs": [
                {"path": str(p), "sha256": _sha256(p), "bytes": p.stat().st_size} for p in inputs
            ],
            "formats": str(fdir),
            "lines": parsed.lines,
            "events": events,
            "events_not_used": {k: v for k, v in events.items() if k not in known},
            "cma_finish_without_start": bad.finish_without_start,
            "malformed_lines": malformed,
            "first_malformed": first_bad,
            "lost_events": parsed.lost,
            "lost_notes": parsed.lost_notes,
            "first_ts_s": t0,
            "last_ts_s": t1,
            "time_span_ns": round((t1 - t0) * 1e9),
            "vmstat_window": bool(vm),
            "window_s": list(window) if window is not None else None,
            "zone_source": "pfn_spans" if zones else "unknown",
            "cma_placement": "ranges" if ranges is not None else "unknown",
            "seconds": round(time.monotonic() - t_begin, 3),
        },
    }
    w.write_metadata(meta)
    return meta


def _read(path: Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a text file") from None


def summary(meta: dict[str, Any]) -> str:
    """What ``cmaprof import`` prints: events, span, malformed lines, unknowns."""
    imp = meta["imported"]
    ev = ", ".join(f"{k} {v}" for k, v in sorted(imp["events"].items()))
    out = [
        f"imported {imp['lines']} lines of {imp['source']} text: {ev}",
        f"time span {imp['time_span_ns'] / 1e9:.6f} s; lost (per the tool): {imp['lost_events']}",
        f"malformed lines: {imp['malformed_lines']}"
        + (f" (first: {imp['first_malformed']})" if imp["first_malformed"] else ""),
        (
            f"zone: {imp['zone_source']}; CMA placement: {imp['cma_placement']}; "
            f"kernel counters: {'vmstat window given' if imp['vmstat_window'] else 'none'}"
        ),
    ]
    if imp.get("cma_finish_without_start"):
        out.append(
            f"cma_alloc_finish without a start (the capture began inside the call): "
            f"{imp['cma_finish_without_start']}, not counted as calls"
        )
    out.append(f"parsed and written in {imp['seconds']:.2f} s")
    return "\n".join(out)
