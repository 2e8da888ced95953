"""The ``__print_flags``/``__print_symbolic`` tables of a tracefs print fmt, parsed, and
decoding with them.

A print fmt holds the *preprocessed* flag and enum tables, e.g. ``show_gfp_flags()``::

    (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|",
        {( unsigned long)(( gfp_t)((((1UL))) << (3))), "__GFP_MOVABLE"}, ...) : "none"

:func:`parse_print_tables` finds every such call; :class:`FlagTable` and
:class:`SymbolicTable` decode values exactly like the running kernel's
``trace_print_flags_seq()`` / ``trace_print_symbols_seq()`` (kernel/trace/trace_output.c).
Masks are C integer constant expressions, evaluated by :mod:`cmaprof.kernel.cexpr`; an
entry naming anything else is left out and listed in ``unresolved``.
:mod:`cmaprof.kernel.formats` (the format files) re-exports the public names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cmaprof.errors import BadInput
from cmaprof.kernel.cexpr import Unresolved, evaluate_or_raise

_U64 = (1 << 64) - 1


class FormatError(BadInput):
    """A tracefs format file, print fmt table or procfs text cannot be parsed."""


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


def parse_print_tables(fmt: str, where: str) -> list[tuple[str, str, FlagTable | SymbolicTable]]:
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
