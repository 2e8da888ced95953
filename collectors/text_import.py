"""``cmaprof import``: trace text captured without cmaprof becomes a recording.

Input is the text of tracefs (``trace``/``trace_pipe``), ``trace-cmd report`` or
``perf script`` with ``kmem:mm_page_alloc`` (required) and, when present, ``cma:*``
and ``migrate:mm_migrate_pages``. The output is a recording of format version 1
(:mod:`cmaprof.recording.writer`), with the tables of
:mod:`cmaprof.recording.schema` built from the events (by
:mod:`cmaprof.collectors.trace_tables`):

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

import pyarrow as pa
import pyarrow.compute as pc

from cmaprof.collectors.trace_tables import (
    ZONE_UNKNOWN,
    BadLines,
    CmaRange,
    build_cma_migrate,
    build_page_alloc,
    parse_cma_ranges,
    select_event,
)
from cmaprof.errors import BadInput
from cmaprof.kernel import formats, procfs
from cmaprof.kernel.trace_text import ParsedText, parse_files
from cmaprof.recording.writer import RecordingWriter

EVENT_SYSTEMS = ("kmem", "cma", "migrate")


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_KERNEL_ADDR = re.compile(r"\b(0x)?ffff[89a-f][0-9a-f]{11}\b", re.IGNORECASE)


def _refuse_unreadable(
    ev: pa.Table, parsed: ParsedText, cube: pa.Table, fail: pa.Table, bad: BadLines
) -> None:
    """Every mm_page_alloc line malformed is a layout cmaprof cannot read (e.g.
    ``perf script -F ...,ip,sym``: no event fields), not a capture without allocations.

    :raises BadInput: naming the layout seen and the layouts that are read.
    """
    allocs = int(pc.sum(pc.equal(ev["event"], "mm_page_alloc")).as_py() or 0)
    if not allocs or cube.num_rows or fail.num_rows:
        return
    text = _KERNEL_ADDR.sub("<address>", select_event(ev, "mm_page_alloc")["fields"][0].as_py())
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
    src = _Sources.read(
        [Path(p) for p in inputs],
        formats_dir,
        zoneinfo,
        pagetypeinfo,
        cma_ranges,
        vmstat_start,
        vmstat_end,
    )
    parsed = parse_files(src.inputs, source)
    ev = _events_in_window(parsed, window)
    bad = BadLines(parsed)
    page_fmt = src.fmts[("kmem", "mm_page_alloc")]
    ts = ev["ts"].to_numpy()
    t0, t1 = float(ts.min()), float(ts.max())
    cube, fail = build_page_alloc(ev, page_fmt, src.zones, src.ranges, bad)
    _refuse_unreadable(ev, parsed, cube, fail, bad)
    tables = {"page_alloc": cube, "page_alloc_fail": fail}
    tables.update(build_cma_migrate(ev, src.fmts, src.ranges, t0, bad))
    w = RecordingWriter(output, force=force)
    src.write(w)
    for name, table in tables.items():
        w.write_table(name, table)
    meta = _metadata(src, parsed, ev, cube, bad, (t0, t1), kernel_release)
    meta["imported"]["window_s"] = list(window) if window is not None else None
    meta["imported"]["seconds"] = round(time.monotonic() - t_begin, 3)
    w.write_metadata(meta)
    return meta


@dataclass
class _Sources:
    """The files beside the trace text, read and checked before the text is parsed."""

    inputs: list[Path]
    fdir: Path
    fmts: dict[tuple[str, str], formats.EventFormat]
    zoneinfo: Path | None
    zone_text: str | None
    zones: list[procfs.Zone] | None
    ranges: list[CmaRange] | None
    vm: dict[str, str]
    pti_text: str | None

    @classmethod
    def read(
        cls,
        inputs: list[Path],
        formats_dir: Path | None,
        zoneinfo: Path | None,
        pagetypeinfo: Path | None,
        cma_ranges: list[str] | None,
        vmstat_start: Path | None,
        vmstat_end: Path | None,
    ) -> _Sources:
        if not inputs:
            raise BadInput("no input files")
        if (vmstat_start is None) != (vmstat_end is None):
            raise BadInput("--vmstat-start and --vmstat-end go together (the window's two ends)")
        for p in inputs:
            if not p.is_file():
                raise BadInput(f"{p}: no such file")
        fdir = find_formats(inputs, formats_dir)
        fmts = formats.load_format_dir(fdir)
        formats.gfp_table(fmts[("kmem", "mm_page_alloc")])  # a clear error if it cannot decode
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
        return cls(inputs, fdir, fmts, zoneinfo, zone_text, zones, ranges, vm, pti_text)

    def write(self, w: RecordingWriter) -> None:
        """The format files and /proc copies, as a recording keeps them."""
        for (sysname, name), f in sorted(self.fmts.items()):
            if sysname in EVENT_SYSTEMS:
                w.write_bytes(f"formats/{sysname}/{name}/format", Path(f.source).read_bytes())
        for which in ("start", "end"):
            if self.zone_text is not None:
                w.write_text(f"proc/{which}/zoneinfo", self.zone_text)
            if self.pti_text is not None:
                w.write_text(f"proc/{which}/pagetypeinfo", self.pti_text)
            if which in self.vm:
                w.write_text(f"proc/{which}/vmstat", self.vm[which])


def _events_in_window(parsed: ParsedText, window: tuple[float, float] | None) -> pa.Table:
    ev = parsed.events
    if ev.num_rows and not pc.any(pc.equal(ev["event"], "mm_page_alloc")).as_py():
        raise BadInput(
            f"{', '.join(parsed.inputs)}: no kmem:mm_page_alloc events (events seen: "
            f"{', '.join(sorted(set(ev['event'].to_pylist()))[:8])})"
        )
    if window is not None:
        lo, hi = window
        ev = ev.filter(pc.and_(pc.greater_equal(ev["ts"], lo), pc.less_equal(ev["ts"], hi)))
        if ev.num_rows == 0:
            raise BadInput(f"no event between {lo} and {hi} s (--window)")
    return ev


#: the events the import turns into tables; others are counted in events_not_used
_USED = {"mm_page_alloc", "cma_alloc_start", "cma_alloc_finish", "cma_alloc_busy_retry"}
_USED |= {"cma_release", "mm_migrate_pages"}


def _metadata(
    src: _Sources,
    parsed: ParsedText,
    ev: pa.Table,
    cube: pa.Table,
    bad: BadLines,
    span: tuple[float, float],
    kernel_release: str | None,
) -> dict[str, Any]:
    """metadata.json of the import, less ``imported.window_s`` and ``.seconds``."""
    zones, ranges, (t0, t1) = src.zones, src.ranges, span
    events = {c["values"]: c["counts"] for c in pc.value_counts(ev["event"]).to_pylist()}
    zone_names = procfs.zone_names(zones) if zones else {}
    if zones is None or ZONE_UNKNOWN in set(cube["zone_idx"].to_pylist()):
        zone_names = {**zone_names, ZONE_UNKNOWN: "unknown"}
    malformed = parsed.malformed + bad.count
    first_bad = parsed.first_malformed
    if bad.at is not None and (
        parsed.first_malformed_at is None or bad.at < parsed.first_malformed_at
    ):
        first_bad = bad.first
    return {
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
                f"pfn spans of {src.zoneinfo}"
                if zones
                else "trace text has no zone; no --zoneinfo given"
            ),
        },
        "imported": _imported(src, parsed, events, bad, malformed, first_bad, span),
    }


def _imported(
    src: _Sources,
    parsed: ParsedText,
    events: dict[str, int],
    bad: BadLines,
    malformed: int,
    first_bad: str | None,
    span: tuple[float, float],
) -> dict[str, Any]:
    """The ``imported`` section: where the recording came from."""
    t0, t1 = span
    zones, ranges = src.zones, src.ranges
    return {
        "source": parsed.source,
        "inputs": [
            {"path": str(p), "sha256": _sha256(p), "bytes": p.stat().st_size} for p in src.inputs
        ],
        "formats": str(src.fdir),
        "lines": parsed.lines,
        "events": events,
        "events_not_used": {k: v for k, v in events.items() if k not in _USED},
        "cma_finish_without_start": bad.finish_without_start,
        "malformed_lines": malformed,
        "first_malformed": first_bad,
        "lost_events": parsed.lost,
        "lost_notes": parsed.lost_notes,
        "first_ts_s": t0,
        "last_ts_s": t1,
        "time_span_ns": round((t1 - t0) * 1e9),
        "vmstat_window": bool(src.vm),
        "window_s": None,
        "zone_source": "pfn_spans" if zones else "unknown",
        "cma_placement": "ranges" if ranges is not None else "unknown",
        "seconds": None,
    }


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
