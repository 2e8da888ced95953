"""``cmaprof report --redact``: output that can be pasted into a public post.

What is hidden, and why:

* **pfns**: physical page frame numbers (any column named ``pfn`` or containing ``pfn``,
  such as ``first_busy_pfn``, ``base_pfn``, ``end_pfn``) give the physical memory layout
  of the machine, which KASLR of the physical base and of the memory map is meant to
  hide. JSON and CSV keep the column with null values (so a reader sees it was
  hidden); text prints :data:`PFN_MARK`. The analysis (CMA placement, distinct
  blocking pages) is computed before redaction, so no count changes.
* **pids and tgids** (``pid``, ``tgid``, ``__pid``, ``__tgid``): meaningless outside the
  machine, and they tell what ran there and when.
* **local paths**: the recording's directory becomes its last component, absolute paths
  in the recorded command become their file names (``/home/me/venv/bin/python`` ->
  ``python``); the host name, the kernel command line and ``argv`` are dropped from the
  metadata the report reads, and the host name is removed from any text.

Kept: ``comm`` (task names such as ``jbd2/vda-8`` or ``kworker/u4:1`` are the analysis:
who placed a page in CMA), the kernel release, GFP flags, zones and every count.

Kernel virtual addresses (``struct page *``, function addresses) are not in any output,
redacted or not; ``tests/unit/test_redact.py`` and the live tests scan for them.

Writers of text tables print pfns through :func:`fmt_pfn`, which honours
:func:`active`; :func:`redact_text` also replaces ``pfn`` followed by a number and any
hexadecimal number that is a pfn of the recording, as a safety net.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cmaprof.analysis.loaded import Recording
from cmaprof.recording.metadata import Metadata

PFN_MARK = "<pfn>"
#: Metadata keys never shown in a redacted report.
DROPPED_META = ("hostname", "cmdline", "argv")
_PID_COLUMNS = {"pid", "tgid", "__pid", "__tgid", "ppid"}

_active: contextvars.ContextVar[bool] = contextvars.ContextVar("cmaprof_redact", default=False)


@contextlib.contextmanager
def active(on: bool = True) -> Iterator[None]:
    """Within the block, :func:`fmt_pfn` prints :data:`PFN_MARK` instead of pfns."""
    token = _active.set(on)
    try:
        yield
    finally:
        _active.reset(token)


def is_active() -> bool:
    return _active.get()


def fmt_pfn(pfn: int | None, spec: str = "#x") -> str:
    """A pfn for a text table: ``format(pfn, spec)``, ``-`` for none, or
    :data:`PFN_MARK` while redacting."""
    if pfn is None or pd.isna(pfn):
        return "-"
    return PFN_MARK if is_active() else format(int(pfn), spec)


def is_pfn_column(name: str) -> bool:
    return "pfn" in str(name).lower()


def is_sensitive_column(name: str) -> bool:
    """Columns :func:`redact_frame` nulls: pfns, pids and tgids."""
    return is_pfn_column(name) or str(name).lower() in _PID_COLUMNS


def redact_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with pfn, pid and tgid columns set to null (same columns), and
    a ``path`` column cut to its last component."""
    cols = [c for c in df.columns if is_sensitive_column(c)]
    if not cols and "path" not in df.columns:
        return df
    out = df.copy()
    for c in cols:
        out[c] = pd.Series([None] * len(out), index=out.index, dtype=object)
    if "path" in out.columns:
        out["path"] = out["path"].map(lambda p: None if p is None else Path(str(p)).name)
    return out


def redact_tables(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """:func:`redact_frame` applied to every table of a report."""
    return {name: redact_frame(df) for name, df in tables.items()}


def _basename_paths(args: list[str]) -> list[str]:
    return [os.path.basename(a) if a.startswith("/") and len(a) > 1 else a for a in args]


def redacted_meta(meta: Metadata | dict[str, Any]) -> Metadata:
    """Metadata as a redacted report sees it (the file on disk is not changed)."""
    out = Metadata.coerce(meta).to_json()
    for k in DROPPED_META:
        out.pop(k, None)
    if isinstance(out.get("command"), list):
        out["command"] = _basename_paths([str(a) for a in out["command"]])
    for area in out.get("cma_areas") or []:
        if isinstance(area, dict):
            for k in [k for k in area if is_pfn_column(k)]:
                area[k] = None
    return Metadata.from_json(out)


def view(rec: Recording) -> Recording:
    """The same recording (same files, same numbers) with :func:`redacted_meta`."""
    out = copy.copy(rec)
    out.meta = redacted_meta(rec.meta)
    return out


def _pfn_columns(path: Path) -> list[str]:
    try:
        return [n for n in pq.read_schema(path).names if is_pfn_column(n)]
    except (OSError, pa.ArrowException):  # unreadable: holds no pfn an output could show
        return []


def known_pfns(rec: Recording) -> set[int]:
    """Every pfn stored in the recording: CMA area bounds in the metadata and the
    values of every pfn column of its tables and series."""
    pfns: set[int] = set()
    for area in rec.meta.cma_areas:
        for k, v in area.to_json().items():
            if is_pfn_column(k) and isinstance(v, int) and not isinstance(v, bool):
                pfns.add(v)
    files = list(rec.path.glob("tables/*.parquet")) + list(rec.path.glob("series/*/*.parquet"))
    for f in sorted(files):
        cols = _pfn_columns(f)
        if not cols:
            continue
        try:
            values = [v for c in cols for v in pq.read_table(f, columns=[c]).column(c).to_pylist()]
        except (OSError, pa.ArrowException):
            values = []  # unreadable: holds no pfn that an output could show
        pfns.update(int(v) for v in values if isinstance(v, int))
    return pfns


_PFN_LABELLED = re.compile(r"(?i)(\bpfns?\b\s*[:=]?\s*)(0x[0-9a-f]+|\d+)")
_HEX = re.compile(r"(?i)\b0x[0-9a-f]+\b")


def redact_text(text: str, rec: Recording, pfns: set[int] | None = None) -> str:
    """Text output with local paths, the host name and pfns replaced.

    :param pfns: the recording's pfns (default: :func:`known_pfns`); hexadecimal
        numbers equal to one of them become :data:`PFN_MARK`, and so does any number
        right after the word ``pfn``. Decimal numbers elsewhere are left alone: a page
        count may equal a pfn by chance, and counts must stay true.
    """
    if pfns is None:
        pfns = known_pfns(rec)
    full = str(rec.path)
    if full not in ("", ".") and full != rec.path.name:
        text = text.replace(full, rec.path.name)
    host = rec.meta.hostname
    if isinstance(host, str) and len(host) >= 3:
        text = re.sub(rf"\b{re.escape(host)}\b", "<host>", text)
    cmd = rec.meta.command
    if isinstance(cmd, list):
        for a in sorted({str(a) for a in cmd if str(a).startswith("/")}, key=len, reverse=True):
            if len(a) > 1:
                text = text.replace(a, os.path.basename(a))
    text = _PFN_LABELLED.sub(lambda m: m.group(1) + PFN_MARK, text)
    return _HEX.sub(lambda m: PFN_MARK if int(m.group(0), 16) in pfns else m.group(0), text)
