"""C integer constant expressions, evaluated as an LP64 kernel's compiler would.

The flag and enum tables of a tracepoint's ``print fmt`` hold preprocessed C
expressions (``( unsigned long)(( gfp_t)((((1UL))) << (3)))``); :func:`evaluate` gives
their value: literals typed by C's rules (``0x400u`` is ``unsigned int``, ``1UL``
``unsigned long``), casts to the integer types of the kernel (``gfp_t`` is 32 bits),
unary ``~ - ! +``, binary ``* / % + - << >> & ^ |`` with C precedence and the usual
arithmetic conversions. Anything else (an identifier, a function call) is
:class:`Unresolved`: it never gets a guessed value. Only the standard library is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["Unresolved", "evaluate", "evaluate_or_raise"]

_U64 = (1 << 64) - 1


class Unresolved(Exception):
    """An expression cannot be evaluated (unknown identifier, bad syntax, ...)."""


# Integer types an LP64 kernel print fmt casts to: name words -> (bits, signed).
_TYPE_WORDS = {
    "unsigned",
    "signed",
    "long",
    "int",
    "short",
    "char",
    "_Bool",
    "bool",
    "gfp_t",
    "size_t",
    "ssize_t",
    "u8",
    "u16",
    "u32",
    "u64",
    "s8",
    "s16",
    "s32",
    "s64",
    "__u8",
    "__u16",
    "__u32",
    "__u64",
    "__s8",
    "__s16",
    "__s32",
    "__s64",
    "uint8_t",
    "uint16_t",
    "uint32_t",
    "uint64_t",
    "int8_t",
    "int16_t",
    "int32_t",
    "int64_t",
    "uintptr_t",
    "pid_t",
    "isolate_mode_t",
    "const",
    "volatile",
}
_TYPEDEFS = {
    "gfp_t": (32, False),
    "size_t": (64, False),
    "ssize_t": (64, True),
    "u8": (8, False),
    "u16": (16, False),
    "u32": (32, False),
    "u64": (64, False),
    "s8": (8, True),
    "s16": (16, True),
    "s32": (32, True),
    "s64": (64, True),
    "uint8_t": (8, False),
    "uint16_t": (16, False),
    "uint32_t": (32, False),
    "uint64_t": (64, False),
    "int8_t": (8, True),
    "int16_t": (16, True),
    "int32_t": (32, True),
    "int64_t": (64, True),
    "uintptr_t": (64, False),
    "pid_t": (32, True),
    "isolate_mode_t": (32, False),
}
for _k in list(_TYPEDEFS):
    if _k[0] in "us" and _k[1:].isdigit():
        _TYPEDEFS["__" + _k] = _TYPEDEFS[_k]

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>(?:0[xX][0-9a-fA-F]+|\d+)[uUlL]*)"
    r"|(?P<id>[A-Za-z_]\w*)"
    r"|(?P<op><<|>>|[-+*/%&|^~!()]))"
)


@dataclass(frozen=True)
class _Val:
    v: int  # normalised: [0, 2**bits) if unsigned, two's complement range if signed
    bits: int
    signed: bool

    @staticmethod
    def make(v: int, bits: int, signed: bool) -> _Val:
        v &= (1 << bits) - 1
        if signed and v >> (bits - 1):
            v -= 1 << bits
        return _Val(v, bits, signed)


def _literal(tok: str) -> _Val:
    m = re.match(r"(0[xX][0-9a-fA-F]+|\d+)([uUlL]*)$", tok)
    if not m:
        raise Unresolved(f"bad literal {tok!r}")
    digits, suffix = m.group(1), m.group(2).lower()
    if suffix.replace("u", "").replace("l", "") or suffix.count("u") > 1 or suffix.count("l") > 2:
        raise Unresolved(f"bad literal suffix {tok!r}")
    if digits[:2].lower() == "0x":
        v = int(digits, 16)
    elif len(digits) > 1 and digits[0] == "0":
        if any(c in "89" for c in digits):
            raise Unresolved(f"bad octal literal {tok!r}")
        v = int(digits, 8)
    else:
        v = int(digits, 10)
    unsigned = "u" in suffix
    decimal = not (digits[0] == "0" and len(digits) > 1) or digits == "0"
    # C11 6.4.4.1: first type of the list that can hold the value (LP64).
    candidates: list[tuple[int, bool]] = []
    if "l" not in suffix:
        candidates += (
            [(32, False)] if unsigned else [(32, True)] + ([] if decimal else [(32, False)])
        )
    candidates += [(64, False)] if unsigned else [(64, True)] + ([] if decimal else [(64, False)])
    for bits, signed in candidates:
        if v < (1 << (bits - 1 if signed else bits)):
            return _Val(v, bits, signed)
    raise Unresolved(f"literal {tok!r} does not fit in 64 bits")


def _promote(a: _Val) -> _Val:
    return _Val.make(a.v, 32, True) if a.bits < 32 else a


def _common(a: _Val, b: _Val) -> tuple[int, bool]:
    a, b = _promote(a), _promote(b)
    if a.bits == b.bits:
        return a.bits, a.signed and b.signed
    wide = a if a.bits > b.bits else b
    # the wider (64-bit) type can represent every 32-bit value: its signedness wins
    return wide.bits, wide.signed


def _cast_type(words: list[str]) -> tuple[int, bool]:
    words = [w for w in words if w not in ("const", "volatile")]
    if len(words) == 1 and words[0] in _TYPEDEFS:
        return _TYPEDEFS[words[0]]
    if not words or any(w in _TYPEDEFS or w not in _TYPE_WORDS for w in words):
        raise Unresolved(f"unknown type {' '.join(words)!r}")
    if words in (["_Bool"], ["bool"]):
        return 1, False
    signed = "unsigned" not in words
    longs = words.count("long")
    if longs:
        return 64, signed
    if "short" in words:
        return 16, signed
    if "char" in words:
        return 8, signed
    return 32, signed


class _Parser:
    """Precedence-climbing evaluator over C integer constant expressions."""

    _BINARY: ClassVar[dict[str, int]] = {
        "*": 10,
        "/": 10,
        "%": 10,
        "+": 9,
        "-": 9,
        "<<": 8,
        ">>": 8,
        "&": 5,
        "^": 4,
        "|": 3,
    }

    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if not m or m.end() == pos:
                raise Unresolved(f"cannot tokenize {text[pos : pos + 20]!r}")
            pos = m.end()
            kind = m.lastgroup
            assert kind is not None
            self.toks.append((kind, m.group(kind)))
            if pos < len(text) and not text[pos:].strip():
                break
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, op: str) -> None:
        kind, text = self.take()
        if (kind, text) != ("op", op):
            raise Unresolved(f"expected {op!r}, got {text!r}")

    def parse(self) -> _Val:
        v = self.binary(0)
        if self.peek()[0] != "end":
            raise Unresolved(f"unexpected {self.peek()[1]!r}")
        return v

    def _cast_words(self) -> list[str] | None:
        """Type words if a cast ``( type-words )`` starts at the current token."""
        if self.peek() != ("op", "("):
            return None
        words = []
        k = 1
        while self.peek(k)[0] == "id" and self.peek(k)[1] in _TYPE_WORDS:
            words.append(self.peek(k)[1])
            k += 1
        if words and self.peek(k) == ("op", ")"):
            return words
        return None

    def unary(self) -> _Val:
        kind, text = self.peek()
        words = self._cast_words()
        if words is not None:
            self.i += len(words) + 2
            bits, signed = _cast_type(words)
            v = self.unary()
            if bits == 1:
                return _Val(int(v.v != 0), 32, True)
            return _Val.make(v.v, bits, signed)
        if kind == "op" and text in "~-+!":
            self.take()
            v = _promote(self.unary())
            if text == "~":
                return _Val.make(~v.v, v.bits, v.signed)
            if text == "-":
                return _Val.make(-v.v, v.bits, v.signed)
            if text == "+":
                return v
            return _Val(int(v.v == 0), 32, True)
        if kind == "op" and text == "(":
            self.take()
            v = self.binary(0)
            self.expect(")")
            return v
        if kind == "num":
            self.take()
            return _literal(text)
        if kind == "id":
            raise Unresolved(f"identifier {text!r}")
        raise Unresolved(f"unexpected {text!r}")

    def binary(self, min_prec: int) -> _Val:
        left = self.unary()
        while True:
            kind, op = self.peek()
            prec = self._BINARY.get(op) if kind == "op" else None
            if prec is None or prec < min_prec:
                return left
            self.take()
            right = self.binary(prec + 1)
            left = self._apply(op, left, right)

    @staticmethod
    def _apply(op: str, a: _Val, b: _Val) -> _Val:
        if op in ("<<", ">>"):
            a, b = _promote(a), _promote(b)
            if b.v < 0 or b.v >= a.bits:
                raise Unresolved(f"shift count {b.v} out of range for {a.bits}-bit operand")
            if op == "<<":
                return _Val.make(a.v << b.v, a.bits, a.signed)
            return _Val.make(a.v >> b.v, a.bits, a.signed)
        bits, signed = _common(a, b)
        x, y = _Val.make(a.v, bits, signed).v, _Val.make(b.v, bits, signed).v
        if op == "*":
            r = x * y
        elif op in ("/", "%"):
            if y == 0:
                raise Unresolved("division by zero")
            q = abs(x) // abs(y)
            if (x < 0) != (y < 0):
                q = -q
            r = q if op == "/" else x - q * y
        elif op == "+":
            r = x + y
        elif op == "-":
            r = x - y
        elif op == "&":
            r = x & y
        elif op == "^":
            r = x ^ y
        else:
            r = x | y
        return _Val.make(r, bits, signed)


def evaluate(expr: str) -> int:
    """Evaluate a C integer constant expression from a print fmt table, as ``unsigned long``.

    Literals follow C's typing rules (``0x400u`` is ``unsigned int``, ``1UL`` is
    ``unsigned long``), casts convert like C on LP64 (``(gfp_t)`` is a 32-bit unsigned
    int), and the result is converted to a 64-bit unsigned value.

    :raises ValueError: the expression uses an identifier or construct that is not an
        integer constant (the message says which)
    """
    try:
        return _Parser(expr).parse().v & _U64
    except Unresolved as e:
        raise ValueError(f"cannot evaluate {expr!r}: {e}") from None


def evaluate_or_raise(expr: str) -> int:
    """:func:`evaluate`, raising :class:`Unresolved` (for callers that collect them)."""
    return _Parser(expr).parse().v & _U64
