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
read as well, and so is ``trace-cmd report -R`` (raw fields as ``name=value``, longs in
``0x`` hex, no print fmt: the most exact input there is). Splitting lines is done with RE2 over Arrow arrays
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
import pyarrow.csv as pacsv

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
_COMMENT = re.compile(r"^\s*(#.*|cpus=\d+|version\s*=\s*\S+|CPU \d+ is empty|)\s*$")
_LOST = re.compile(r"^\s*CPU:\s*(?P<cpu>\d+)\s+\[LOST (?P<n>\d+) EVENTS\]\s*$")
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
    first_malformed_at: tuple[int, int] | None = None


def read_array(path: Path) -> pa.StringArray:
    """The lines of a text file (``.xz`` decompressed) as one Arrow string array;
    element ``i`` is line ``i + 1`` (empty lines kept).

    :raises BadInput: unreadable, or binary
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
    if len(data) < 4096 and not data.strip():
        raise BadInput(f"{path}: empty; nothing to import")
    try:
        # Arrow's CSV reader splits lines in C++ (one column: no delimiter, no quoting).
        t = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=["line"], block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter="\x1f", quote_char=False, escape_char=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={"line": pa.string()}, strings_can_be_null=False
            ),
        )
        arr = t["line"].combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # odd bytes (invalid UTF-8, the separator): split in Python instead
        arr = pa.array(data.decode("utf-8", errors="replace").splitlines(), pa.string())
    return arr


def detect_source(lines: pa.Array, where: str) -> str:
    """Which tool printed ``lines``: the format whose line shape matches most of the
    first 2000 lines; trace-cmd is told from tracefs by its ``cpus=``/``version =``
    header."""
    sample = lines.slice(0, 2000)
    perf = pc.sum(pc.match_substring_regex(sample, _PERF_RE)).as_py() or 0
    ftrace = pc.sum(pc.match_substring_regex(sample, _FTRACE_RE)).as_py() or 0
    if not perf and not ftrace:
        first = next(
            (ln for ln in sample.to_pylist() if ln.strip() and not ln.lstrip().startswith("#")), ""
        )
        what = f"first line {first[:100]!r}" if first else "no event lines"
        raise BadInput(
            f"{where}: not trace text from tracefs, trace-cmd report or perf script ({what})"
        )
    if perf > ftrace:
        return "perf"
    head = [str(h).strip() for h in sample.slice(0, 20).to_pylist()]
    if any(h.startswith(("cpus=", "version =")) for h in head):
        return "trace-cmd"
    return "tracefs"


def split_parts(
    arr: pa.Array, pattern: str, k: int, reverse: bool = False
) -> tuple[list[pa.Array], np.ndarray]:
    """Split each string into exactly ``k`` parts at ``pattern`` (from the right when
    ``reverse``); rows that do not give ``k`` parts are masked out (their parts are
    placeholders)."""
    n = len(arr)
    lists = pc.split_pattern(arr, pattern, max_splits=k - 1, reverse=reverse)
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    ok = lengths == k
    values = lists.values
    if len(values) == 0:
        return [pa.array([""] * n, pa.string()) for _ in range(k)], np.zeros(n, bool)
    starts = np.frombuffer(lists.buffers()[1], dtype=np.int32)[lists.offset : lists.offset + n]
    out = []
    for j in range(k):
        idx = np.where(ok, starts + j, 0)
        out.append(values.take(pa.array(idx)))
    return out, ok


def _digits(arr: pa.Array, pattern: str = r"^\d+$") -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(arr, pattern), False).to_numpy(
        zero_copy_only=False
    )


def split_lines(arr: pa.Array, src: str) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Split event lines into comm, pid, cpu, ts, sys, event, fields with string
    kernels (no per-line Python, no regex capture over the whole line).

    :returns: the columns (placeholders where not ok) and the mask of rows split
    """
    (head, event, fields), ok = split_parts(arr, ": ", 3)
    (rest, ts), ok2 = split_parts(pc.utf8_rtrim_whitespace(head), " ", 2, reverse=True)
    ok &= ok2 & _digits(ts, r"^\d+\.\d+$")
    (who, cpu_part), ok3 = split_parts(rest, "[", 2, reverse=True)
    ok &= ok3
    (cpu, _flags), ok4 = split_parts(cpu_part, "]", 2)
    ok &= ok4 & _digits(cpu)
    who = pc.utf8_trim_whitespace(who)
    if src == "perf":
        (comm, pid), ok5 = split_parts(who, " ", 2, reverse=True)
        (_, pid), _ = split_parts(pc.binary_join_element_wise("0/", pid, ""), "/", 2, reverse=True)
        (sysname, event), ok6 = split_parts(event, ":", 2)
        ok &= ok6
    else:
        tgid = pc.ends_with(who, ")").to_numpy(zero_copy_only=False)
        if tgid.any():  # "comm-pid (tgid)" with the record-tgid option
            (no_tgid, _), _ = split_parts(who, "(", 2, reverse=True)
            who = pc.if_else(pa.array(tgid), pc.utf8_rtrim_whitespace(no_tgid), who)
        (comm, pid), ok5 = split_parts(who, "-", 2, reverse=True)
        sysname = pa.array([""] * len(arr), pa.string())
    ok &= ok5 & _digits(pid) & _digits(event, r"^\w+$")
    cols = {
        "comm": pc.utf8_trim_whitespace(comm),
        "pid": pid,
        "cpu": cpu,
        "ts": ts,
        "sys": sysname,
        "event": event,
        "fields": pc.utf8_trim_whitespace(fields),
    }
    return cols, ok


@dataclass
class _NonEvents:
    """What the lines that are not events said: headers, loss markers, malformed."""

    malformed: int = 0
    first_bad: str | None = None
    first_at: tuple[int, int] | None = None
    lost: int = 0
    notes: list[str] = field(default_factory=list)
    cpus: int | None = None

    def take(self, path: Path, file_idx: int, idx: int, ln: str) -> None:
        """Account line ``idx`` (0-based) of input ``file_idx``."""
        if _COMMENT.match(ln):
            c = _CPUS_RE.match(ln.strip())
            if c:
                self.cpus = max(self.cpus or 0, int(c.group(1)))
            m = _ENTRIES_RE.search(ln)
            if m and int(m.group(2)) > int(m.group(1)):
                # the ring buffer overwrote the oldest events (tracefs overrun)
                self.lost += int(m.group(2)) - int(m.group(1))
                self.notes.append(
                    f"{path}: entries-in-buffer/entries-written {m.group(1)}/{m.group(2)}"
                )
            return
        m = _LOST.match(ln)
        if m:
            self.lost += int(m.group("n"))
            self.notes.append(f"{path}:{idx + 1}: {ln.strip()}")
            return
        self.malformed += 1
        if self.first_bad is None:
            self.first_bad = f"{path}:{idx + 1}: {ln[:160]}"
            self.first_at = (file_idx, idx + 1)


def _refit_odd_lines(arr: pa.Array, cols: dict, ok: np.ndarray, src: str) -> None:
    """Lines the fast split missed (a comm with ": " in it...): the full line pattern,
    row by row; ``cols`` and ``ok`` are updated in place, rows kept in file order."""
    rest = np.flatnonzero(~ok)
    got = pc.extract_regex(arr.take(pa.array(rest)), _LINE_RES[src])
    hit = got.is_valid().to_numpy(zero_copy_only=False)
    if not hit.any():
        return
    gcols = dict(zip([f.name for f in got.type], got.flatten()))
    order = np.arange(len(arr))
    order[rest[hit]] = len(arr) + np.arange(int(hit.sum()))
    for k, col in list(cols.items()):
        extra = pc.filter(gcols[k], pa.array(hit))
        cols[k] = pa.concat_arrays([col, extra.cast(pa.string())]).take(pa.array(order))
    ok[rest[hit]] = True


def _event_table(cols: dict, ok: np.ndarray, file_idx: int) -> pa.Table:
    """The event rows of one input (``ok``), typed."""
    mask = pa.array(ok)
    nev = int(ok.sum())
    line_no = np.flatnonzero(ok).astype(np.int64) + 1
    cols = {k: pc.filter(v, mask) for k, v in cols.items()}
    return pa.table(
        {
            "file": pa.array(np.full(nev, file_idx, dtype=np.int32)),
            "line": pa.array(line_no),
            "comm": cols["comm"],
            "pid": pc.cast(cols["pid"], pa.int64()),
            "cpu": pc.cast(cols["cpu"], pa.int32()),
            "ts": pc.cast(cols["ts"], pa.float64()),
            "sys": cols["sys"],
            "event": cols["event"],
            "fields": cols["fields"],
        }
    )


def parse_files(paths: list[Path], source: str = "auto") -> ParsedText:
    """Split every line of ``paths`` (all of one ``source``) into event parts.

    :param source: ``auto``, ``tracefs``, ``trace-cmd`` or ``perf``
    :raises BadInput: an input is unreadable, binary, foreign or holds no event
    """
    tables = []
    other = _NonEvents()
    total = 0
    sources = set()
    for i, path in enumerate(paths):
        arr = read_array(path)
        src = detect_source(arr, str(path)) if source == "auto" else source
        sources.add(src)
        total += len(arr)
        cols, ok = split_lines(arr, src)
        if not ok.all():
            _refit_odd_lines(arr, cols, ok, src)
        for bad_idx in np.flatnonzero(~ok):
            other.take(path, i, int(bad_idx), arr[int(bad_idx)].as_py())
        if not ok.any():
            raise BadInput(
                f"{path}: no {src} event lines found"
                + (f" (first line not understood: {other.first_bad})" if other.first_bad else "")
            )
        tables.append(_event_table(cols, ok, i))
    if len(sources) > 1:
        raise BadInput(
            f"inputs are of different kinds ({', '.join(sorted(sources))}); import them apart"
        )
    return ParsedText(
        source=sources.pop(),
        inputs=[str(p) for p in paths],
        lines=total,
        events=pa.concat_tables(tables),
        malformed=other.malformed,
        first_malformed=other.first_bad,
        lost=other.lost,
        lost_notes=other.notes,
        cpus=other.cpus,
        first_malformed_at=other.first_at,
    )


_KV_RE = re.compile(r"(\w+)=(\S*)")


def key_values(text: str) -> dict[str, str]:
    """``name=value`` pairs of an event's text (``[FAILED TO PARSE]`` stripped)."""
    return dict(_KV_RE.findall(text.replace(_FAILED, " ")))


def extract_field(fields: pa.Array, name: str) -> pa.Array:
    """The value text of ``name=`` in each event text (null where absent)."""
    return pc.struct_field(pc.extract_regex(fields, rf"(?:^|\s){name}=(?P<v>\S*)"), [0])
