"""Parse tracefs ``format`` files and decode their ``__print_flags``/``__print_symbolic`` tables.

A tracepoint's ``format`` file (``/sys/kernel/tracing/events/<system>/<event>/format``)
describes the binary record (``field:`` lines: C declaration, byte offset, byte size,
signedness) and the ``print fmt`` the kernel uses to render it as text. The print fmt
holds the *preprocessed* flag and enum tables, e.g. ``show_gfp_flags()``::

    (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|",
        {( unsigned long)(( gfp_t)((((1UL))) << (3))), "__GFP_MOVABLE"}, ...) : "none"

:mod:`cmaprof.kernel.print_tables` reads those tables (its public names are re-exported
here) and decodes values exactly like the running kernel's
``trace_print_flags_seq()`` / ``trace_print_symbols_seq()`` (kernel/trace/trace_output.c),
so decoding never relies on hard-coded GFP bit values (they moved in 4.10, 4.15, 5.1,
5.12-5.18, 6.3 and 6.10 and depend on ``.config`` since 6.10).

Table masks are evaluated as C integer constant expressions by
:mod:`cmaprof.kernel.cexpr`. An entry whose expression names anything else -- e.g. the raw
``___GFP_*_BIT`` enum identifiers that 6.10-6.13 kernels left in the table before
Steven Rostedt's "tracing: gfp: Fix the GFP enum values shown for user space tracing
tools" -- is left out of the table and listed in ``unresolved``; it never gets a guessed
value.

Only the standard library is used.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from cmaprof.kernel.print_tables import FlagTable, FormatError, SymbolicTable, parse_print_tables

__all__ = [
    "EventFormat",
    "Field",
    "FlagTable",
    "FormatError",
    "SymbolicTable",
    "gfp_table",
    "load_format_dir",
    "migratetype_names_from_pagetypeinfo",
    "parse_format",
]


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class Field:
    """One ``field:`` line of a format file.

    :param name: last identifier of the declaration (``comm`` for ``char comm[16]``)
    :param decl: the C declaration as printed, e.g. ``__data_loc char[] name``
    :param offset: byte offset of the field from the start of the record
    :param size: size in bytes (4 for a ``__data_loc`` descriptor)
    :param signed: the kernel's ``is_signed_type()`` for the field's type
    :param data_loc: ``__data_loc`` field: a u32 with the string's offset in the low
        16 bits and its length in the high 16 bits
    """

    name: str
    decl: str
    offset: int
    size: int
    signed: bool
    data_loc: bool


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventFormat:
    """A parsed tracefs ``format`` file.

    :param system: trace system (``kmem``), from the caller or the directory name
    :param name: event name (``mm_page_alloc``), from the ``name:`` line
    :param id: the ``ID:`` line (perf event type), ``None`` if absent
    :param fields: every field by name, ``common_*`` header fields included, in file order
    :param print_fmt: the text after ``print fmt:``
    :param source: where the text came from, for error messages
    """

    system: str
    name: str
    id: int | None
    fields: dict[str, Field]
    print_fmt: str
    source: str = field(default="<string>", compare=False)

    def has_field(self, name: str) -> bool:
        """Whether the record has a field called ``name``."""
        return name in self.fields

    @functools.cached_property
    def _tables(self) -> list[tuple[str, str, FlagTable | SymbolicTable]]:
        return parse_print_tables(self.print_fmt, self._where())

    def _where(self) -> str:
        ev = f"{self.system}:{self.name}" if self.system else self.name
        return f"{self.source} (event {ev})"

    def flag_table(self, field: str) -> FlagTable | None:
        """The first ``__print_flags`` table whose first argument reads ``REC->field``."""
        for kind, fname, table in self._tables:
            if kind == "flags" and fname == field:
                assert isinstance(table, FlagTable)
                return table
        return None

    def symbolic_table(self, field: str) -> SymbolicTable | None:
        """The first ``__print_symbolic`` table whose first argument reads ``REC->field``."""
        for kind, fname, table in self._tables:
            if kind == "symbolic" and fname == field:
                assert isinstance(table, SymbolicTable)
                return table
        return None


_FIELD_RE = re.compile(
    r"^field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"(?:\s*signed:(?P<signed>-?\d+);)?\s*$"
)
_NAME_RE = re.compile(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*$")


def _field_from_decl(decl: str, offset: int, size: int, signed: bool) -> Field | None:
    m = _NAME_RE.search(decl.strip())
    if not m:
        return None
    return Field(
        name=m.group(1),
        decl=decl.strip(),
        offset=offset,
        size=size,
        signed=signed,
        data_loc=decl.strip().startswith("__data_loc"),
    )


def _field_line(line: str, where: str) -> Field:
    m = _FIELD_RE.match(line)
    if not m:
        raise FormatError(f"{where}: malformed field line: {line!r}")
    signed = m.group("signed")
    f = _field_from_decl(
        m.group("decl"),
        int(m.group("offset")),
        int(m.group("size")),
        bool(int(signed)) if signed is not None else False,
    )
    if f is None:
        raise FormatError(f"{where}: no field name in declaration {m.group('decl')!r}")
    return f


@dataclass
class _Header:
    """What the lines before ``print fmt:`` said."""

    name: str
    id: int | None = None
    seen_format: bool = False
    fields: dict[str, Field] = field(default_factory=dict)

    def line(self, line: str, where: str) -> None:
        """One ``field:`` or ``key: value`` line."""
        if line.startswith(("field:", "field ")):
            f = _field_line(line, where)
            if f.name in self.fields:
                raise FormatError(f"{where}: duplicate field {f.name!r}")
            self.fields[f.name] = f
            return
        key, sep, value = line.partition(":")
        if not sep:
            raise FormatError(f"{where}: unexpected line {line!r}")
        key, value = key.strip(), value.strip()
        if key == "name":
            self.name = value
        elif key == "ID":
            try:
                self.id = int(value)
            except ValueError:
                raise FormatError(f"{where}: ID is not an integer: {value!r}") from None
        elif key == "format":
            self.seen_format = True
        # other "key: value" lines are ignored (none exist as of 6.18)


def parse_format(
    text: str, system: str = "", name: str = "", source: str = "<string>"
) -> EventFormat:
    """Parse the text of a tracefs ``format`` file.

    :param text: file contents
    :param system: trace system the event belongs to (not stated in the file)
    :param name: event name to use if the text has no ``name:`` line
    :param source: file name or other label used in error messages
    :raises FormatError: the text is not a format file (no fields, a malformed
        ``field:`` or ``ID:`` line, duplicate fields, no ``print fmt:``)
    """
    head = _Header(name)
    print_fmt: str | None = None
    lines = text.splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("print fmt:"):
            # The print fmt is the rest of the file (one line in practice).
            rest = [line[len("print fmt:") :].strip()] + [x.strip() for x in lines[lineno:]]
            print_fmt = " ".join(x for x in rest if x)
            break
        head.line(line, f"{source}:{lineno}")
    label = f"{source} (event {system + ':' if system else ''}{head.name or '?'})"
    if not head.seen_format or not head.fields:
        raise FormatError(f"{label}: not a tracefs format file (no 'format:' section with fields)")
    if print_fmt is None:
        raise FormatError(f"{label}: no 'print fmt:' line")
    if not head.name:
        raise FormatError(f"{label}: no 'name:' line and no event name given")
    return EventFormat(
        system=system,
        name=head.name,
        id=head.id,
        fields=head.fields,
        print_fmt=print_fmt,
        source=source,
    )


def load_format_dir(path: str | Path) -> dict[tuple[str, str], EventFormat]:
    """Read every ``<path>/<system>/<event>/format`` below a tracefs ``events`` directory.

    :param path: ``/sys/kernel/tracing/events`` or a saved copy with the same layout
    :returns: ``{(system, event): EventFormat}``
    :raises FormatError: ``path`` is not a directory, or a format file is unreadable
        or malformed
    """
    root = Path(path)
    if not root.is_dir():
        raise FormatError(f"{root}: not a directory of tracefs event formats")
    out: dict[tuple[str, str], EventFormat] = {}
    for fmt_path in sorted(root.glob("*/*/format")):
        system, event = fmt_path.parent.parent.name, fmt_path.parent.name
        try:
            text = fmt_path.read_text()
        except OSError as e:
            raise FormatError(f"{fmt_path}: cannot read: {e.strerror or e}") from e
        except UnicodeDecodeError:
            raise FormatError(f"{fmt_path}: not a text file; the recording is damaged") from None
        out[(system, event)] = parse_format(text, system=system, name=event, source=str(fmt_path))
    return out


def gfp_table(fmt: EventFormat) -> FlagTable:
    """The ``show_gfp_flags()`` table of an event with a ``gfp_flags`` field.

    :raises FormatError: the event's print fmt has no ``__print_flags`` over ``REC->gfp_flags``
    """
    table = fmt.flag_table("gfp_flags")
    if table is None:
        what = "field" if not fmt.has_field("gfp_flags") else "__print_flags table"
        raise FormatError(f"{fmt._where()}: no gfp_flags {what} to decode GFP masks with")
    return table


# --------------------------------------------------------------------------- procfs


_PTI_ROW_RE = re.compile(r"^Node\s+\d+,\s*zone\s+(\S+),\s*type\s+(\S+)")


def migratetype_names_from_pagetypeinfo(text: str) -> list[str]:
    """Migratetype names in ``enum migratetype`` order, from ``/proc/pagetypeinfo``.

    ``pagetypeinfo_showfree()`` prints one row per zone and type, looping over the types
    in enum order with ``migratetype_names[]``; the first zone's rows therefore give the
    order, e.g. ``["Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate"]``
    with CONFIG_CMA, without ``"CMA"`` otherwise.

    :param text: contents of ``/proc/pagetypeinfo`` (mode 0400: needs root to read)
    :raises FormatError: the text has no "Free pages count per migrate type" rows
    """
    names: list[str] = []
    in_section = False
    first_zone: tuple[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("Free pages count per migrate type"):
            in_section = True
            continue
        if not in_section:
            continue
        if not line.strip():
            if names:
                break
            continue
        m = _PTI_ROW_RE.match(line)
        if not m:
            break
        node_zone = (line.split(",")[0], m.group(1))
        if first_zone is None:
            first_zone = node_zone
        elif node_zone != first_zone:
            break
        names.append(m.group(2))
    if not names:
        raise FormatError(
            "pagetypeinfo: no 'Free pages count per migrate type' rows "
            "(not /proc/pagetypeinfo, or read without root?)"
        )
    if len(set(names)) != len(names):
        raise FormatError(f"pagetypeinfo: migratetype listed twice in one zone: {names}")
    return names


def wrap_flags(text: str, width: int) -> list[str]:
    """Split a decoded flag string (``GFP_KERNEL|__GFP_COMP``) at '|' into lines of at
    most ``width`` characters, each but the last ending in '|'."""
    lines, cur = [], ""
    for part in text.split("|"):
        piece = part if not cur else "|" + part
        if cur and len(cur) + len(piece) + 1 > width:
            lines.append(cur + "|")
            cur = part
        else:
            cur += piece
    lines.append(cur)
    return lines
