"""The probe ABI, read from ``probes/events.h``: the one definition BPF and Python share.

``events.h`` holds the records the BPF programs write (``struct page_alloc_key``,
``struct stream_event``, ...) and the numbers both sides must agree on (``CMA_AREA_NONE``,
``DROP_*``, ``CMA_OUTCOME_*``, ...). This module parses that header once, at import, so
Python never restates a number or a layout:

- every integer ``#define`` is an attribute: ``abi.CMA_AREA_NONE``;
- a family of ``#define PREFIX_NAME N`` is a vocabulary: :func:`enum` gives the names
  ordered by value (``enum("DROP_")`` -> ``("page_alloc_cube_full", ...)``), :func:`bits`
  the bit values in header order;
- :func:`fields` and :func:`dtype` give a struct's layout (C natural alignment, as clang
  lays it out for BPF and x86_64) and the numpy structured dtype that reads it.

Field names in ``events.h`` are the column names of the recording (``zone_idx``,
``migratetype_id``, ...). ``tests/unit/test_abi.py`` checks every layout against clang's
``offsetof``/``sizeof`` and that no ``.py`` file restates a constant. Pure Python: no BCC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER = Path(__file__).resolve().parent / "events.h"

#: C scalar types of events.h: (size in bytes, numpy kind). ``char`` arrays are strings.
_SCALARS: dict[str, tuple[int, str]] = {
    "__u64": (8, "u"),
    "u64": (8, "u"),
    "__s64": (8, "i"),
    "s64": (8, "i"),
    "__u32": (4, "u"),
    "u32": (4, "u"),
    "__s32": (4, "i"),
    "s32": (4, "i"),
    "__u16": (2, "u"),
    "u16": (2, "u"),
    "__u8": (1, "u"),
    "u8": (1, "u"),
    "char": (1, "S"),
}


@dataclass(frozen=True)
class Field:
    """One member of a struct of events.h.

    :param ctype: C type name (a scalar of :data:`_SCALARS`, or ``struct NAME``).
    :param count: array length in elements, or None for a scalar member.
    :param count_name: the macro that gives ``count`` (``STREAM_BATCH``), if any.
    """

    name: str
    ctype: str
    count: int | None
    count_name: str | None = None


_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_DEFINE_RE = re.compile(r"^\s*#\s*define\s+(\w+)[ \t]*(.*)$", re.MULTILINE)
_INT_RE = re.compile(r"^(0[xX][0-9a-fA-F]+|\d+)[uUlL]*$")
_STRUCT_RE = re.compile(r"\bstruct\s+(\w+)\s*\{(.*?)\}\s*;", re.DOTALL)
_DECL_RE = re.compile(r"^((?:struct\s+)?\w+)\s+(.+)$", re.DOTALL)
_DECLARATOR_RE = re.compile(r"^(\w+)\s*(?:\[\s*(\w+)\s*\])?$")


def _preprocess(text: str) -> str:
    """Comments removed, backslash-continued lines joined."""
    return _COMMENT_RE.sub(" ", text).replace("\\\n", " ")


def parse_header(
    text: str,
) -> tuple[dict[str, int], dict[str, str], dict[str, list[Field]]]:
    """Integer constants, field-list macros and structs of a header text.

    ``#ifndef`` defaults count as defined (they are what the programs compile with
    unless a ``-D`` option overrides them). Struct members may come from a macro that
    expands to declarations (``CMA_CALL_FIELDS``).
    """
    src = _preprocess(text)
    consts: dict[str, int] = {}
    macros: dict[str, str] = {}
    for name, body in _DEFINE_RE.findall(src):
        body = body.strip()
        if _INT_RE.match(body):
            consts[name] = int(body.rstrip("uUlL"), 0)
        elif ";" in body:
            macros[name] = body
    structs: dict[str, list[Field]] = {}
    for m in _STRUCT_RE.finditer(re.sub(r"^\s*#.*$", "", src, flags=re.MULTILINE)):
        body = m.group(2)
        for name, expansion in macros.items():
            body = re.sub(rf"\b{name}\b", expansion, body)
        structs[m.group(1)] = _members(body, consts, m.group(1))
    return consts, macros, structs


def _members(body: str, consts: Mapping[str, int], where: str) -> list[Field]:
    out: list[Field] = []
    for decl in filter(None, (d.strip() for d in body.split(";"))):
        m = _DECL_RE.match(" ".join(decl.split()))
        if m is None:
            raise ValueError(f"events.h: struct {where}: cannot read {decl!r}")
        ctype = m.group(1)
        for declarator in m.group(2).split(","):
            d = _DECLARATOR_RE.match(declarator.strip())
            if d is None:
                raise ValueError(f"events.h: struct {where}: cannot read {declarator!r}")
            size = d.group(2)
            count = None if size is None else int(size) if size.isdigit() else consts[size]
            name_of_count = size if size is not None and not size.isdigit() else None
            out.append(Field(d.group(1), ctype, count, name_of_count))
    return out


CONSTANTS, _MACROS, STRUCTS = parse_header(HEADER.read_text())


def __getattr__(name: str) -> int:
    """``abi.NAME``: the value of ``#define NAME`` in events.h."""
    try:
        return CONSTANTS[name]
    except KeyError:
        raise AttributeError(f"probes/events.h defines no integer constant {name}") from None


def enum(prefix: str) -> tuple[str, ...]:
    """Names of the ``#define PREFIX_NAME N`` family, lower-cased, ordered by value.

    The values must be 0, 1, ... n-1 (indexes of an array or codes of a column).
    """
    items = sorted(
        (v, k[len(prefix) :].lower()) for k, v in CONSTANTS.items() if k.startswith(prefix)
    )
    if [v for v, _ in items] != list(range(len(items))):
        raise ValueError(f"events.h: {prefix}* values are not 0..{len(items) - 1}")
    return tuple(name for _, name in items)


def bits(prefix: str) -> dict[str, int]:
    """``#define PREFIX_NAME BIT`` family as name (lower-cased) -> value, in header order."""
    return {k[len(prefix) :].lower(): v for k, v in CONSTANTS.items() if k.startswith(prefix)}


def fields(struct: str) -> list[Field]:
    """Members of ``struct <struct>`` in declaration order."""
    return STRUCTS[struct]


def _alignment(ctype: str) -> int:
    if ctype.startswith("struct "):
        return max(_alignment(f.ctype) for f in STRUCTS[ctype.split()[1]])
    return _SCALARS[ctype][0]


def dtype(struct: str, **counts: int) -> np.dtype:
    """The numpy structured dtype of ``struct <struct>``, offsets as C lays them out.

    :param counts: array lengths that a ``-D`` option overrides (``STREAM_BATCH=64``).
    Members named ``pad...`` are opaque (``V`` bytes); ``char[N]`` is ``S<N>``.
    """
    names: list[str] = []
    formats: list[object] = []
    offsets: list[int] = []
    offset = 0
    for f in STRUCTS[struct]:
        count = counts.get(f.count_name, f.count) if f.count_name else f.count
        if f.ctype.startswith("struct "):
            elem: object = dtype(f.ctype.split()[1], **counts)
            esize = np.dtype(elem).itemsize  # type: ignore[call-overload]
        else:
            esize, kind = _SCALARS[f.ctype]
            elem = f"<{kind}{esize}" if kind != "S" else "S1"
        align = _alignment(f.ctype)
        offset = -(-offset // align) * align
        n = 1 if count is None else count
        if f.name.startswith("pad"):
            fmt: object = f"V{esize * n}"
        elif f.ctype == "char":
            fmt = f"S{n}"
        elif count is None:
            fmt = elem
        else:
            fmt = (elem, (count,))
        names.append(f.name)
        formats.append(fmt)
        offsets.append(offset)
        offset += esize * n
    align = _alignment(f"struct {struct}")
    size = -(-offset // align) * align
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})


def sizeof(struct: str, **counts: int) -> int:
    """``sizeof(struct <struct>)`` in bytes."""
    return dtype(struct, **counts).itemsize
