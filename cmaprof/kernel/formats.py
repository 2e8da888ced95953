"""Parse tracefs ``format`` files and decode their ``__print_flags``/``__print_symbolic`` tables.

A tracepoint's ``format`` file (``/sys/kernel/tracing/events/<system>/<event>/format``)
describes the binary record (``field:`` lines: C declaration, byte offset, byte size,
signedness) and the ``print fmt`` the kernel uses to render it as text. The print fmt
holds the *preprocessed* flag and enum tables, e.g. ``show_gfp_flags()``::

    (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|",
        {( unsigned long)(( gfp_t)((((1UL))) << (3))), "__GFP_MOVABLE"}, ...) : "none"

This module reads those tables and decodes values exactly like the running kernel's
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

from cmaprof.errors import BadInput
from cmaprof.kernel.cexpr import Unresolved, evaluate_or_raise

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

_U64 = (1 << 64) - 1


class FormatError(BadInput):
    """A tracefs format file, print fmt table or procfs text cannot be parsed."""


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


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class FlagTable:
    """An ordered ``__print_flags`` table: ``((mask, name), ...)`` in kernel order.

    :param entries: resolved entries, in table order
    :param unresolved: expressions of entries that could not be evaluated (left out)
    :param zero: what the kernel prints for the value 0. ``show_gfp_flags()`` wraps the
        table in ``(flags) ? __print_flags(...) : "none"`` (``"GFP_NOWAIT"`` before
        v4.4); the parser takes the string from that ternary, and uses ``""`` (what
        ``trace_print_flags_seq()`` itself prints for 0) when there is none.
    """

    entries: tuple[tuple[int, str], ...]
    unresolved: tuple[str, ...] = ()
    zero: str = "none"

    def _match(self, value: int) -> tuple[list[str], int]:
        flags = value & _U64
        out: list[str] = []
        for mask, name in self.entries:
            if not flags:
                break
            # A mask-0 entry would always match in the kernel; the kernel keeps such
            # (config-disabled) flags out of its tables, and libtraceevent skips them.
            if mask == 0 or (flags & mask) != mask:
                continue
            out.append(name)
            flags &= ~mask
        return out, flags

    def decode(self, value: int) -> str:
        """Render ``value`` like the kernel: names joined by ``|``, leftover bits as ``0x%x``.

        :param value: the raw field value (negative values are taken modulo 2**64)
        """
        if (value & _U64) == 0:
            return self.zero
        names, rest = self._match(value)
        if rest:
            names.append(f"0x{rest:x}")
        return "|".join(names)

    def names(self, value: int) -> list[str]:
        """The table names :meth:`decode` prints for ``value``, without the hex remainder."""
        return self._match(value)[0]

    def remainder(self, value: int) -> int:
        """The bits of ``value`` no table entry accounts for (printed as ``0x%x``)."""
        return self._match(value)[1]

    def mask_of(self, name: str) -> int | None:
        """Mask of the first entry called ``name`` (``None`` if absent or unresolved)."""
        for mask, entry_name in self.entries:
            if entry_name == name:
                return mask
        return None


@dataclass(frozen=True)
class SymbolicTable:
    """A ``__print_symbolic`` table: value -> name.

    :param entries: resolved entries; keys are taken modulo 2**64 as the kernel compares
        ``unsigned long`` values
    :param unresolved: expressions of entries that could not be evaluated (left out)
    """

    entries: dict[int, str]
    unresolved: tuple[str, ...] = ()

    def decode(self, value: int) -> str:
        """Name of ``value``; an unknown value prints as ``0x%x`` like ``trace_print_symbols_seq()``."""
        v = value & _U64
        name = self.entries.get(v)
        return name if name is not None else f"0x{v:x}"


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
        return _parse_tables(self.print_fmt, self._where())

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
    ev_name = name
    ev_id: int | None = None
    fields: dict[str, Field] = {}
    print_fmt: str | None = None
    seen_format = False
    lines = text.splitlines()
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        if line.startswith("print fmt:"):
            # The print fmt is the rest of the file (one line in practice).
            rest = [line[len("print fmt:") :].strip()] + [x.strip() for x in lines[lineno:]]
            print_fmt = " ".join(x for x in rest if x)
            break
        if line.startswith(("field:", "field ")):
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
            if f.name in fields:
                raise FormatError(f"{where}: duplicate field {f.name!r}")
            fields[f.name] = f
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise FormatError(f"{where}: unexpected line {line!r}")
        key, value = key.strip(), value.strip()
        if key == "name":
            ev_name = value
        elif key == "ID":
            try:
                ev_id = int(value)
            except ValueError:
                raise FormatError(f"{where}: ID is not an integer: {value!r}") from None
        elif key == "format":
            seen_format = True
        # other "key: value" lines are ignored (none exist as of 6.18)
    label = f"{source} (event {system + ':' if system else ''}{ev_name or '?'})"
    if not seen_format or not fields:
        raise FormatError(f"{label}: not a tracefs format file (no 'format:' section with fields)")
    if print_fmt is None:
        raise FormatError(f"{label}: no 'print fmt:' line")
    if not ev_name:
        raise FormatError(f"{label}: no 'name:' line and no event name given")
    return EventFormat(
        system=system, name=ev_name, id=ev_id, fields=fields, print_fmt=print_fmt, source=source
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


# --------------------------------------------------------------------------- print fmt


def _skip_literal(s: str, i: int) -> int:
    """Index just past the string/char literal that starts at ``s[i]``."""
    quote = s[i]
    j = i + 1
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == quote:
            return j + 1
        j += 1
    raise Unresolved(f"unterminated {quote} literal at offset {i}")


_CLOSE = {")": "(", "]": "[", "}": "{"}


def _split_call(s: str, open_idx: int) -> tuple[list[str], int]:
    """Split the argument list whose ``(`` is at ``open_idx``; return (args, index after ``)``)."""
    stack: list[str] = []
    args: list[str] = []
    start = open_idx + 1
    i = open_idx
    while i < len(s):
        c = s[i]
        if c in "\"'":
            i = _skip_literal(s, i)
            continue
        if c in "([{":
            stack.append(c)
        elif c in ")]}":
            if not stack or stack[-1] != _CLOSE[c]:
                raise Unresolved(f"unbalanced {c!r} at offset {i}")
            stack.pop()
            if not stack:
                args.append(s[start:i].strip())
                return args, i + 1
        elif c == "," and len(stack) == 1:
            args.append(s[start:i].strip())
            start = i + 1
        i += 1
    raise Unresolved(f"unbalanced '(' at offset {open_idx}")


def _split_top(s: str) -> list[str]:
    """Split ``s`` at top-level commas."""
    wrapped = "(" + s + ")"
    return _split_call(wrapped, 0)[0]


_STRING_RE = re.compile(r'^"((?:[^"\\]|\\.)*)"$', re.DOTALL)
_REC_RE = re.compile(r"REC->([A-Za-z_]\w*)")
_CALL_RE = re.compile(r"\b(__print_flags(?:_u64)?|__print_symbolic(?:_u64)?)\s*\(")
_ZERO_BEFORE_RE = re.compile(r"\(\s*REC->([A-Za-z_]\w*)\s*\)\s*\?\s*$")
_ZERO_AFTER_RE = re.compile(r'^\s*:\s*"((?:[^"\\]|\\.)*)"')


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _call_positions(fmt: str) -> list[tuple[str, int, int]]:
    """``(function, start, index of its '(')`` for each table call outside string literals."""
    out = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c in "\"'":
            i = _skip_literal(fmt, i)
            continue
        if c == "_":
            m = _CALL_RE.match(fmt, i)
            if m and (i == 0 or not (fmt[i - 1].isalnum() or fmt[i - 1] == "_")):
                out.append((m.group(1), i, m.end() - 1))
                i = m.end() - 1
                continue
        i += 1
    return out


def _parse_entries(args: list[str], where: str) -> tuple[list[tuple[int, str]], list[str]]:
    entries: list[tuple[int, str]] = []
    unresolved: list[str] = []
    for arg in args:
        if not (arg.startswith("{") and arg.endswith("}")):
            raise FormatError(f'{where}: table entry is not {{value, "name"}}: {arg[:80]!r}')
        if not arg[1:-1].strip():
            break  # "{ }" terminator
        parts = _split_top(arg[1:-1])
        if len(parts) != 2:
            raise FormatError(f"{where}: table entry does not have 2 members: {arg[:80]!r}")
        expr, label = parts
        m = _STRING_RE.match(label)
        if not m:
            break  # { 0, ((void *)0) } / { 0, NULL } terminator
        name = _unescape(m.group(1))
        try:
            entries.append((evaluate_or_raise(expr), name))
        except Unresolved:
            unresolved.append(expr)
    return entries, unresolved


def _parse_tables(fmt: str, where: str) -> list[tuple[str, str, FlagTable | SymbolicTable]]:
    out: list[tuple[str, str, FlagTable | SymbolicTable]] = []
    try:
        calls = _call_positions(fmt)
    except Unresolved as e:
        raise FormatError(f"{where}: malformed print fmt: {e}") from None
    for func, start, open_idx in calls:
        try:
            args, end = _split_call(fmt, open_idx)
        except Unresolved as e:
            raise FormatError(f"{where}: malformed {func}(): {e}") from None
        is_flags = func.startswith("__print_flags")
        if len(args) < (2 if is_flags else 1):
            raise FormatError(f"{where}: {func}() has too few arguments")
        m = _REC_RE.search(args[0])
        fname = m.group(1) if m else ""
        if is_flags:
            if not _STRING_RE.match(args[1]):
                raise FormatError(f"{where}: {func}() delimiter is not a string: {args[1]!r}")
            entries, unresolved = _parse_entries(args[2:], where)
            zero = ""
            before = _ZERO_BEFORE_RE.search(fmt[:start])
            after = _ZERO_AFTER_RE.match(fmt[end:])
            if before and after and before.group(1) == fname:
                zero = _unescape(after.group(1))
            table: FlagTable | SymbolicTable = FlagTable(tuple(entries), tuple(unresolved), zero)
            out.append(("flags", fname, table))
        else:
            entries, unresolved = _parse_entries(args[1:], where)
            sym: dict[int, str] = {}
            for value, name in entries:
                sym.setdefault(value & _U64, name)  # the kernel takes the first match
            out.append(("symbolic", fname, SymbolicTable(sym, tuple(unresolved))))
    return out


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
