"""Kernel stacks of a BPF stack map, symbolised at the end of a recording.

A probe that keys something by kernel stack (``bpf_get_stackid()`` into a
``BPF_TABLE("stacktrace", ...)``) keeps only stack ids while recording; when the
recording is finished, :func:`stacks_table` reads every stack of the map and writes it
as ``function+0xoff`` text (``/proc/kallsyms`` read at that moment, as perf and bcc's
tools do) into the ``stacks`` table (cmaprof/recording/schema.py): one row per frame,
innermost first. No address leaves this module: a frame that no symbol covers is
written as ``?``.

``/proc/kallsyms`` shows real addresses only to root (``kptr_restrict``); without them
every address is 0 and every frame would be ``?``: :func:`read_kallsyms` refuses that.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from cmaprof.errors import EnvironmentProblem
from cmaprof.recording import schema

#: kallsyms symbol types of code (``nm``): text, weak text.
TEXT_TYPES = frozenset("tTwW")
#: Frame text when no symbol covers the address.
UNKNOWN_FRAME = "?"


@dataclass(frozen=True)
class Symbols:
    """Text symbols sorted by address.

    :param addrs: start addresses, ascending.
    :param names: symbol names, same order.
    :param modules: module of each symbol (``""``: the kernel image).
    """

    addrs: list[int]
    names: list[str]
    modules: list[str]

    def frame(self, addr: int) -> str:
        """``name+0xoff`` (``name+0xoff [module]`` in a module) of a code address, or
        :data:`UNKNOWN_FRAME`."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or addr == 0:
            return UNKNOWN_FRAME
        text = f"{self.names[i]}+0x{addr - self.addrs[i]:x}"
        return f"{text} [{self.modules[i]}]" if self.modules[i] else text


def parse_kallsyms(text: str) -> Symbols:
    """``/proc/kallsyms`` text (``ADDR TYPE NAME [MODULE]`` lines) -> its code symbols.

    Symbols at address 0 (what a reader without ``CAP_SYSLOG`` sees) are left out. Of
    aliases (symbols at one address) the first in the file is kept: the one the kernel's
    own ``%pS`` prints (kernel/kallsyms.c get_symbol_pos() goes back to the first alias),
    so frames read the same as page_owner's and dmesg's.
    """
    rows: list[tuple[int, str, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[1] not in TEXT_TYPES:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        if addr == 0:
            continue
        module = parts[3].strip("[]") if len(parts) > 3 else ""
        rows.append((addr, parts[2], module))
    rows.sort(key=lambda r: r[0])  # stable: aliases keep their file order
    first = [r for i, r in enumerate(rows) if i == 0 or rows[i - 1][0] != r[0]]
    return Symbols([r[0] for r in first], [r[1] for r in first], [r[2] for r in first])


def read_kallsyms(path: Path = Path("/proc/kallsyms")) -> Symbols:
    """The running kernel's code symbols.

    :raises EnvironmentProblem: no readable symbol has an address (not root, or
        ``kptr_restrict`` hides them).
    """
    syms = parse_kallsyms(path.read_text())
    if not syms.addrs:
        raise EnvironmentProblem(
            f"{path} shows no symbol addresses (kernel.kptr_restrict, or not root): "
            f"the stacks of record --by stack cannot be symbolised"
        )
    return syms


def read_stack_map(table: Any) -> dict[int, list[int]]:
    """Every stack of a BCC stack-trace table: id -> return addresses, innermost first
    (the value's ``ip`` array up to its first 0)."""
    out: dict[int, list[int]] = {}
    for key, leaf in table.items():
        ips = []
        for ip in leaf.ip:
            if ip == 0:
                break
            ips.append(int(ip))
        out[int(key.value)] = ips
    return out


def symbolise(stacks: Mapping[int, Iterable[int]], syms: Symbols) -> dict[int, list[str]]:
    """Stack id -> frames as text (:meth:`Symbols.frame`)."""
    return {sid: [syms.frame(a) for a in ips] for sid, ips in stacks.items()}


def frames_table(map_name: str, frames: Mapping[int, list[str]]) -> pa.Table:
    """The ``stacks`` rows of one stack map: (map, stack_id, level, frame), level 0 the
    innermost frame."""
    rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["stacks"]}
    for sid in sorted(frames):
        for level, frame in enumerate(frames[sid]):
            rows["map"].append(map_name)
            rows["stack_id"].append(sid)
            rows["level"].append(level)
            rows["frame"].append(frame)
    return schema.to_table("stacks", rows)


def stacks_table(bpf: Any, map_name: str, syms: Symbols | None = None) -> pa.Table:
    """The ``stacks`` rows of stack map ``map_name`` of a loaded BCC module, symbolised
    with ``syms`` (default: :func:`read_kallsyms` now)."""
    raw = read_stack_map(bpf[map_name])
    return frames_table(map_name, symbolise(raw, syms or read_kallsyms()))
