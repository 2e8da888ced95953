"""Parse captured trace text (tracefs, ``trace-cmd report``, ``perf script``) into events.

The three tools print one event per line with the same parts in slightly different
shapes (6.1 examples)::

    tracefs trace / trace_pipe:
        sh-246     [001] .....    52.133541: mm_page_alloc: page=... pfn=0x1cb8c order=0 ...
    trace-cmd report:
        sh-246     [001]    52.133541: mm_page_alloc:        page=... pfn=0x1cb8c order=0 ...
    perf script:
        sh   246 [001]    52.133541: kmem:mm_page_alloc: page=... pfn=0x1cb8c order=0 ...

The event text after the name is what the kernel's (or libtraceevent's) rendering of the
event's ``print fmt`` gives; when libtraceevent cannot evaluate a print fmt it prints
``[FAILED TO PARSE]`` followed by the raw fields as ``name=value`` (decimal), which is
read as well. Splitting lines is done with RE2 over Arrow arrays
(``pyarrow.compute.extract_regex``), not per line in Python; only the rare cma and
migrate events are handled per line.

Lines are classified: comments and headers (``#...``, ``cpus=N``, ``version = N``),
loss markers (``CPU:N [LOST N EVENTS]``), event lines, and malformed lines (neither);
malformed lines are counted and the first one is quoted, never dropped silently.
"""

from __future__ import annotations

import lzma
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmaprof.errors import BadInput

SOURCES = ("tracefs", "trace-cmd", "perf")

# tracefs and trace-cmd: COMM-PID [(TGID)] [CPU] [FLAGS] TS: EVENT: FIELDS
_FTRACE_RE = (
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*(?:\d+|-+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:[^\s\d]\S*\s+)?(?P<ts>\d+\.\d+):\s+(?P<sys>)(?P<event>\w+):\s*(?P<fields>.*)$"
)
# perf script: COMM PID[/TID] [CPU] TS: [PERIOD] SYS:EVENT: FIELDS
_PERF_RE = (
    r"^\s*(?P<comm>.*?)\s+(?:\d+/)?(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<ts>\d+\.\d+):\s+"
    r"(?:\d+\s+)?(?P<sys>\w+):(?P<event>\w+):\s*(?P<fields>.*)$"
)
_LINE_RES = {"tracefs": _FTRACE_RE, "trace-cmd": _FTRACE_RE, "perf": _PERF_RE}
_COMMENT_RE = r"^\s*(#.*|cpus=\d+|version\s*=\s*\S+|CPU \d+ is empty|)\s*$"
_LOST_RE = r"^\s*CPU:\s*(?P<cpu>\d+)\s+\[LOST (?P<n>\d+) EVENTS\]\s*$"
_ENTRIES_RE = re.compile(r"entries-in-buffer/entries-written:\s*(\d+)/(\d+)")
_CPUS_RE = re.compile(r"^(?:#.*#P:|cpus=)(\d+)")
_FAILED = "[FAILED TO PARSE]"


@dataclass
class ParsedText:
    """Everything read from the input files.

    :param events: one row per event line: ``file`` (index into ``inputs``), ``line``
        (1-based), ``comm``, ``pid`` (task id), ``cpu``, ``ts`` (seconds as printed),
        ``sys`` (empty when the tool does not print it), ``event``, ``fields`` (the
        event text)
    :param malformed: number of lines that are neither comments nor events
    :param first_malformed: ``file:line: text`` of the first of them
    :param lost: events the tool says it lost (``[LOST N EVENTS]``, tracefs
        ``entries-written`` above ``entries-in-buffer``)
    """

    source: str
    inputs: list[str]
    lines: int
    events: pa.Table
    malformed: int = 0
    first_malformed: str | None = None
    lost: int = 0
    lost_notes: list[str] = field(default_factory=list)
    cpus: int | None = None


def read_lines(path: Path) -> list[str]:
    """The lines of a text file (``.xz`` decompressed), as text.

    :raises BadInput: unreadable, or not text
    """
    try:
        data = path.read_bytes()
        if path.suffix == ".xz":
            data = lzma.decompress(data)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror or exc})") from None
    except lzma.LZMAError as exc:
        raise BadInput(f"{path}: not a valid .xz file ({exc})") from None
    if b"\0" in data[:65536]:
        raise BadInput(
            f"{path}: binary data, not trace text (for trace.dat run `trace-cmd report`, "
            f"for perf.data `perf script`, and import their output)"
        )
    return data.decode("utf-8", errors="replace").splitlines()


def detect_source(lines: list[str], where: str) -> str:
    """Which tool printed ``lines``: the format whose line shape matches most of the
    first 2000 lines; trace-cmd is told from tracefs by its ``cpus=``/``version =``
    header."""
    sample = pa.array(lines[:2000], pa.string())
    perf = pc.sum(pc.match_substring_regex(sample, _PERF_RE)).as_py() or 0
    ftrace = pc.sum(pc.match_substring_regex(sample, _FTRACE_RE)).as_py() or 0
    if not perf and not ftrace:
        first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
        what = f"first line {first[:100]!r}" if first else "no event lines"
        raise BadInput(
            f"{where}: not trace text from tracefs, trace-cmd report or perf script ({what})"
        )
    if perf > ftrace:
        return "perf"
    head = [ln.strip() for ln in lines[:20]]
    if any(h.startswith(("cpus=", "version =")) for h in head):
        return "trace-cmd"
    return "tracefs"


def parse_files(paths: list[Path], source: str = "auto") -> ParsedText:
    """Split every line of ``paths`` (all of one ``source``) into event parts.

    :param source: ``auto``, ``tracefs``, ``trace-cmd`` or ``perf``
    :raises BadInput: an input is unreadable, binary, foreign or holds no event
    """
    tables = []
    malformed = 0
    first_bad: str | None = None
    lost = 0
    notes: list[str] = []
    total = 0
    cpus: int | None = None
    sources = set()
    for i, path in enumerate(paths):
        lines = read_lines(path)
        if not any(ln.strip() for ln in lines):
            raise BadInput(f"{path}: empty; nothing to import")
        src = detect_source(lines, str(path)) if source == "auto" else source
        sources.add(src)
        total += len(lines)
        arr = pa.array(lines, pa.string())
        parts = pc.extract_regex(arr, _LINE_RES[src])
        ok = parts.is_valid()
        comment = pc.match_substring_regex(arr, _COMMENT_RE)
        lost_mask = pc.match_substring_regex(arr, _LOST_RE)
        bad = pc.and_(pc.invert(ok), pc.invert(pc.or_(comment, lost_mask)))
        nbad = pc.sum(bad).as_py() or 0
        if nbad:
            idx = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
            if first_bad is None:
                first_bad = f"{path}:{idx + 1}: {lines[idx][:160]}"
            malformed += nbad
        if pc.any(lost_mask).as_py():
            for ln in pc.filter(arr, lost_mask).to_pylist():
                m = re.match(_LOST_RE, ln)
                if m:
                    lost += int(m.group("n"))
            notes.append(f"{path}: [LOST N EVENTS] markers")
        for ln in lines[:20]:
            c = _CPUS_RE.match(ln.strip())
            if c:
                cpus = max(cpus or 0, int(c.group(1)))
            m = _ENTRIES_RE.search(ln)
            if m and int(m.group(2)) > int(m.group(1)):
                # the ring buffer overwrote the oldest events (tracefs overrun)
                lost += int(m.group(2)) - int(m.group(1))
                notes.append(f"{path}: entries-in-buffer/entries-written {m.group(1)}/{m.group(2)}")
        ev = pc.filter(parts, ok)
        if len(ev) == 0:
            raise BadInput(
                f"{path}: no {src} event lines found"
                + (f" (first line not understood: {first_bad})" if first_bad else "")
            )
        line_no = pc.filter(pa.array(np.arange(1, len(lines) + 1, dtype=np.int64)), ok)
        flat = ev.flatten()
        names = [f.name for f in ev.type]
        cols = dict(zip(names, flat))
        tables.append(
            pa.table(
                {
                    "file": pa.array(np.full(len(ev), i, dtype=np.int32)),
                    "line": line_no,
                    "comm": cols["comm"],
                    "pid": pc.cast(cols["pid"], pa.int64()),
                    "cpu": pc.cast(cols["cpu"], pa.int32()),
                    "ts": pc.cast(cols["ts"], pa.float64()),
                    "sys": cols["sys"],
                    "event": cols["event"],
                    "fields": cols["fields"],
                }
            )
        )
    if len(sources) > 1:
        raise BadInput(
            f"inputs are of different kinds ({', '.join(sorted(sources))}); import them apart"
        )
    return ParsedText(
        source=sources.pop(),
        inputs=[str(p) for p in paths],
        lines=total,
        events=pa.concat_tables(tables),
        malformed=malformed,
        first_malformed=first_bad,
        lost=lost,
        lost_notes=notes,
        cpus=cpus,
    )


_KV_RE = re.compile(r"(\w+)=(\S*)")


def key_values(text: str) -> dict[str, str]:
    """``name=value`` pairs of an event's text (``[FAILED TO PARSE]`` stripped)."""
    return dict(_KV_RE.findall(text.replace(_FAILED, " ")))


def extract_field(fields: pa.Array, name: str) -> pa.Array:
    """The value text of ``name=`` in each event text (null where absent)."""
    return pc.struct_field(pc.extract_regex(fields, rf"(?:^|\s){name}=(?P<v>\S*)"), [0])
