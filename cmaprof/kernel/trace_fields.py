"""Field values of trace text events: the event text after ``name:`` back to numbers.

The kernel renders an event with its format file's ``print fmt``; libtraceevent prints
``[FAILED TO PARSE]`` and the raw fields when it cannot, and ``trace-cmd report -R``
prints the raw fields only. :func:`format_regex` / :func:`format_tokens` turn a print
fmt into a matcher of its rendering, :func:`failed_tokens` / :func:`raw_tokens` match
the raw shapes, :func:`parse_uint` and :func:`int_column` read the numbers (over Arrow
arrays, not per line), :class:`ValueEncoder` inverts a ``__print_flags`` /
``__print_symbolic`` table (``GFP_KERNEL|__GFP_COMP`` -> its bits), and
:func:`page_alloc_values` combines them for ``kmem:mm_page_alloc``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cmaprof.kernel.formats import EventFormat
from cmaprof.kernel.trace_text import split_parts

#: How a NULL ``struct page *`` prints (``%p`` of 6.1+ hashes pointers, but not NULL).
NULL_POINTERS = {"(null)", "(nil)", "0000000000000000", "00000000", "0x0", "0"}


_CONV = re.compile(r"%%|%[-+ #0]*\d*(?:\.\d+)?(?:hh|h|ll|l|z|j|t|L)*(p[A-Za-z]*|[a-zA-Z])")
_QUOTED = re.compile(r'^\s*"((?:[^"\\]|\\.)*)"')


def format_regex(fmt: EventFormat) -> tuple[str, dict[str, str]]:
    """An anchored RE2 pattern for the text the kernel prints for ``fmt``, built from
    its print fmt's format string: every conversion becomes a named group, named after
    the ``name=`` before it (``pfn=0x%lx`` -> group ``pfn``, hex digits only).

    :returns: the pattern, and each group's conversion letter (``x``, ``d``, ``s``, ``p``)
    """
    m = _QUOTED.match(fmt.print_fmt)
    text = m.group(1) if m else ""
    out = ["^"]
    convs: dict[str, str] = {}
    pos = 0
    for c in _CONV.finditer(text):
        lit = text[pos : c.start()]
        out.append(re.escape(lit.replace("\\n", "")).replace("\\ ", " "))
        pos = c.end()
        if c.group(0) == "%%":
            out.append("%")
            continue
        key = re.search(r"(\w+)=(?:0x)?$", lit)
        name = key.group(1) if key else f"arg{len(convs)}"
        while name in convs:
            name += "_"
        convs[name] = c.group(1)[0]
        out.append(rf"(?P<{name}>\S*)")
    out.append(re.escape(text[pos:].replace("\\n", "")).replace("\\ ", " "))
    out.append(r"\s*$")
    return "".join(out), convs


def failed_regex(fmt: EventFormat) -> str:
    """The pattern of libtraceevent's fallback for an event whose print fmt it cannot
    evaluate: ``[FAILED TO PARSE] f1=v1 f2=v2 ...`` with the raw fields (decimal) in
    format-file order, ``common_*`` fields left out."""
    names = [n for n in fmt.fields if not n.startswith("common_")]
    body = " ".join(rf"{n}=(?P<{n}>\S*)" for n in names)
    return rf"^\s*\[FAILED TO PARSE\] {body}\s*$"


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def parse_uint(arr: pa.Array, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned integers from text in ``base`` 16 (``0x`` optional) or 10, vectorised.

    :returns: uint64 values and a mask of the elements that parsed (null, empty,
        too long or non-digit text does not)
    """
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    arr = pc.fill_null(arr.cast(pa.string()), "")
    if base == 10:
        ok = pc.match_substring_regex(arr, r"^\d{1,20}$").to_numpy(zero_copy_only=False)
        vals = pc.cast(pc.if_else(pa.array(ok), arr, "0"), pa.uint64(), safe=False)
        out = vals.to_numpy(zero_copy_only=False).astype(np.uint64)
        return out, ok
    arr = pc.replace_substring_regex(arr, r"^0[xX]", "")
    length = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
    padded = pc.utf8_lpad(pc.if_else(pa.array(length <= 16), arr, ""), 16, "0")
    padded = padded.combine_chunks() if isinstance(padded, pa.ChunkedArray) else padded
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)[padded.offset :][: n + 1]
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[0] + 16 * n]
    digits = _HEX[data.reshape(n, 16)]
    ok = (digits != 255).all(axis=1) & (length >= 1) & (length <= 16)
    digits = np.where(digits == 255, 0, digits).astype(np.uint64)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    out = (digits << shifts).sum(axis=1, dtype=np.uint64)
    return out, ok


def format_tokens(fmt: EventFormat) -> list[tuple[str, str | None, str, str]] | None:
    """The print fmt's format string as space-separated tokens ``(prefix, name,
    conversion, suffix)``: ``pfn=0x%lx`` -> ``("pfn=0x", "pfn", "x", "")``; a literal
    token has name None. None when a token holds two conversions or a ``%s`` could
    print spaces in an unknown place (then :func:`format_regex` is used)."""
    m = _QUOTED.match(fmt.print_fmt)
    if not m:
        return None
    out: list[tuple[str, str | None, str, str]] = []
    for tok in m.group(1).replace("\\n", "").split():
        convs = [c for c in _CONV.finditer(tok) if c.group(0) != "%%"]
        if len(convs) > 1:
            return None
        if not convs:
            out.append((tok.replace("%%", "%"), None, "", ""))
            continue
        c = convs[0]
        prefix, suffix = tok[: c.start()], tok[c.end() :]
        key = re.search(r"(\w+)=(?:0x)?$", prefix)
        out.append((prefix, key.group(1) if key else f"arg{len(out)}", c.group(1)[0], suffix))
    return out


def raw_tokens(fmt: EventFormat) -> list[tuple[str, str | None, str, str]]:
    """Tokens of ``trace-cmd report -R`` (raw fields, no print fmt): ``f1=v1 f2=v2 ...``
    in format-file order, ``common_*`` left out; libtraceevent prints pointers and
    longs as ``0x`` hex and the rest in decimal (conversion ``r``: either)."""
    return [(f"{n}=", n, "r", "") for n in fmt.fields if not n.startswith("common_")]


def failed_tokens(fmt: EventFormat) -> list[tuple[str, str | None, str, str]]:
    """Tokens of libtraceevent's ``[FAILED TO PARSE] f1=v1 ...`` (raw decimal fields)."""
    lits: list[tuple[str, str | None, str, str]] = [
        ("[FAILED", None, "", ""),
        ("TO", None, "", ""),
        ("PARSE]", None, "", ""),
    ]
    return lits + [(f"{n}=", n, "u", "") for n in fmt.fields if not n.startswith("common_")]


def match_tokens(
    fields: pa.Array, tokens: list[tuple[str, str | None, str, str]]
) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Values of each named token of ``tokens`` in each event text, and the mask of
    the texts that have exactly these tokens."""
    parts, ok = split_parts(fields, " ", len(tokens))
    # a text with more tokens than the template puts the rest into the last part
    ok &= ~pc.fill_null(pc.match_substring(parts[-1], " "), False).to_numpy(zero_copy_only=False)
    out: dict[str, pa.Array] = {}
    for part, (prefix, name, _conv, suffix) in zip(parts, tokens):
        if name is None:
            ok &= pc.fill_null(pc.equal(part, prefix), False).to_numpy(zero_copy_only=False)
            continue
        ok &= pc.starts_with(part, prefix).to_numpy(zero_copy_only=False)
        if suffix:
            ok &= pc.ends_with(part, suffix).to_numpy(zero_copy_only=False)
        stop = -len(suffix) if suffix else None
        out[name] = pc.utf8_slice_codeunits(part, len(prefix), stop if stop else 2**31 - 1)
    return out, ok


class ValueEncoder:
    """Text -> kernel value, inverting a format's flag or symbolic table."""

    def __init__(self, fmt: EventFormat, field: str, where: str) -> None:
        self.flags = fmt.flag_table(field)
        self.symbols = fmt.symbolic_table(field)
        self.where = where
        self.by_name: dict[str, int] = {}
        if self.flags:
            for mask, name in self.flags.entries:
                self.by_name.setdefault(name, mask)
        elif self.symbols:
            self.by_name = {n: v for v, n in self.symbols.entries.items()}
        else:
            self.by_name = {}
        self.cache: dict[str, int | None] = {}

    def __call__(self, text: str) -> int | None:
        """The value printed as ``text``; None when the text does not decode."""
        if text in self.cache:
            return self.cache[text]
        v: int | None
        if text.isdigit():  # raw value ([FAILED TO PARSE] output)
            v = int(text)
        elif self.flags:
            v = 0
            if text != self.flags.zero:
                for part in text.split("|"):
                    if part in self.by_name:
                        v |= self.by_name[part]
                    elif part.startswith("0x"):
                        try:
                            v |= int(part, 16)
                        except ValueError:
                            v = None
                            break
                    else:
                        v = None
                        break
        else:
            v = self.by_name.get(text)
            if v is None and text.startswith("0x"):
                try:
                    v = int(text, 16)
                except ValueError:
                    v = None
        self.cache[text] = v
        return v


def int_column(arr: pa.Array, conv: str) -> tuple[np.ndarray, np.ndarray]:
    """Integers of one field's text: ``x``/``p`` hex, ``r`` (raw, trace-cmd report -R)
    ``0x`` hex or signed decimal, anything else signed decimal."""
    if conv in ("x", "X", "p"):
        return parse_uint(arr, 16)
    if conv == "r":
        text = pc.fill_null(arr, "")
        is_hex = pc.starts_with(text, "0x").to_numpy(zero_copy_only=False)
        hv, hok = parse_uint(text, 16)
        dv, dok = int_column(text, "d")
        return np.where(is_hex, hv, dv), np.where(is_hex, hok, dok)
    neg = pc.starts_with(pc.fill_null(arr, ""), "-").to_numpy(zero_copy_only=False)
    vals, ok = parse_uint(pc.utf8_ltrim(pc.fill_null(arr, ""), "-"), 10)
    vals = np.where(neg, (-vals.astype(np.int64)).astype(np.uint64), vals)
    return vals, ok


def _page_alloc_shapes(fmt: EventFormat) -> list[tuple[Any, dict[str, str], bool]]:
    """(token template or regex, conversions, raw values?) an mm_page_alloc text may
    have, fast string kernels first."""
    shapes: list[tuple[Any, dict[str, str], bool]] = []
    toks = format_tokens(fmt)
    if toks:
        shapes.append((toks, {t[1]: t[2] for t in toks if t[1]}, False))
    pat, convs = format_regex(fmt)
    shapes.append((pat, convs, False))
    raw = failed_tokens(fmt)
    shapes.append((raw, {t[1]: t[2] for t in raw if t[1]}, True))
    fields = raw_tokens(fmt)
    shapes.append((fields, {t[1]: t[2] for t in fields if t[1]}, True))
    shapes.append((failed_regex(fmt), {t[1]: t[2] for t in raw if t[1]}, True))
    return shapes


def _match_shape(sub: pa.Array, pattern: Any) -> tuple[dict, np.ndarray]:
    """Columns and hit mask of ``sub`` against one shape."""
    if isinstance(pattern, list):
        return match_tokens(sub, pattern)
    got = pc.extract_regex(sub, pattern)
    hit = got.is_valid().to_numpy(zero_copy_only=False)
    return dict(zip([t.name for t in got.type], got.flatten())), hit


def _gfp_from_text(g: pa.Array, enc: ValueEncoder, out: dict, rows: np.ndarray) -> np.ndarray:
    """Raw gfp of the rendered ``g`` (each distinct text encoded once) into
    ``out["gfp"][rows]``; texts the encoder does not know go to ``gfp_text``. Returns
    the rows' ok mask."""
    d = (
        pc.dictionary_encode(g).combine_chunks()
        if isinstance(g, pa.ChunkedArray)
        else pc.dictionary_encode(g)
    )
    codes = [enc(t) for t in d.dictionary.to_pylist()]
    ix = d.indices.to_numpy(zero_copy_only=False)
    known = np.array([c is not None for c in codes] + [False], bool)
    vals = np.array([c or 0 for c in codes] + [0], dtype=np.uint64)
    ix = np.where(ix < 0, len(codes), ix)
    out["gfp"][rows] = vals[ix]
    bad_gfp = ~known[ix]
    if bad_gfp.any():
        texts = np.array(d.dictionary.to_pylist(), dtype=object)
        out["gfp_text"][rows[bad_gfp]] = texts[ix[bad_gfp]]
    return known[ix]


def page_alloc_values(f: pa.Array, fmt: EventFormat) -> dict[str, np.ndarray]:
    """pfn, order, migratetype, gfp (raw) and page_null per mm_page_alloc text, from
    the print-fmt rendering or libtraceevent's ``[FAILED TO PARSE]`` raw fields;
    ``ok`` marks the rows that gave all of them."""
    n = len(f)
    out = {
        "pfn": np.zeros(n, np.uint64),
        "order": np.zeros(n, np.uint64),
        "migratetype": np.zeros(n, np.uint64),
        "gfp": np.zeros(n, np.uint64),
        "page_null": np.zeros(n, bool),
        "ok": np.zeros(n, bool),
        "gfp_text": np.empty(n, dtype=object),
    }
    need = ("pfn", "order", "migratetype", "gfp_flags")
    left = np.ones(n, bool)
    enc = ValueEncoder(fmt, "gfp_flags", fmt.source)
    for pattern, cv, is_raw in _page_alloc_shapes(fmt):
        if not left.any() or not all(k in cv for k in need):
            continue
        idx = np.flatnonzero(left)
        cols, hit = _match_shape(f.take(pa.array(idx)) if len(idx) != n else f, pattern)
        if not hit.any():
            continue
        rows = idx[hit]
        hit_a = pa.array(hit)
        ok = np.ones(len(rows), bool)
        for k in ("pfn", "order", "migratetype"):
            v, o = int_column(pc.filter(cols[k], hit_a), cv[k])
            out[k][rows] = v
            ok &= o
        g = pc.filter(cols["gfp_flags"], hit_a)
        if is_raw:
            v, o = int_column(g, cv["gfp_flags"])
            out["gfp"][rows] = v
            ok &= o
        else:
            ok &= _gfp_from_text(g, enc, out, rows)
        if "page" in cols and not is_raw:
            zero = out["pfn"][rows] == 0
            if zero.any():
                pages = pc.filter(cols["page"], hit_a).to_numpy(zero_copy_only=False)
                out["page_null"][rows[zero]] = [p in NULL_POINTERS for p in pages[zero]]
        out["ok"][rows] = ok
        left[rows] = False
    return out
