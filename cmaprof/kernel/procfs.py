"""Parsers of /proc text: vmstat, zoneinfo, and the CMA area record.

They take text, so the collectors run them on the live files and the analysis on the
copies saved in a recording (:mod:`cmaprof.collectors.procfs` reads the files and
re-exports these names). No BCC, no I/O here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from cmaprof.errors import BadInput


@dataclass(frozen=True)
class Zone:
    """One ``Node N, zone NAME`` block of /proc/zoneinfo.

    :param idx: ``enum zone_type`` index (position of the zone within its node's blocks).
    :param start_pfn: first pfn of the span; None for an unpopulated zone.
    :param spanned: pages spanned, holes included; the span is [start_pfn, start_pfn+spanned).
    :param cma: pages of CMA areas in the zone (the ``cma`` line of CMA kernels), else None.
    """

    node: int
    idx: int
    name: str
    start_pfn: int | None
    spanned: int
    present: int
    managed: int
    cma: int | None

    @property
    def end_pfn(self) -> int | None:
        return None if self.start_pfn is None else self.start_pfn + self.spanned

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CmaArea:
    """A CMA area: ``[base_pfn, base_pfn + count)`` in pages, from debugfs or sysfs."""

    name: str
    base_pfn: int | None
    count: int | None
    source: str

    @property
    def end_pfn(self) -> int | None:
        if self.base_pfn is None or self.count is None:
            return None
        return self.base_pfn + self.count

    def as_dict(self) -> dict:
        return asdict(self)


def parse_vmstat(text: str, source: str = "vmstat") -> dict[str, int]:
    """``/proc/vmstat`` as a dict of counter name to value."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise BadInput(f"{source}:{n}: not a vmstat line: {line!r}")
        out[parts[0]] = int(parts[1])
    return out


_ZONE_HDR = re.compile(r"^Node\s+(\d+),\s+zone\s+(\S+)")


def parse_zoneinfo(text: str, source: str = "zoneinfo") -> list[Zone]:
    """Every zone block of ``/proc/zoneinfo``, populated or not, in file order.

    The zone index is the block's position within its node: zoneinfo walks
    ``node->node_zones[]`` in ``enum zone_type`` order and prints empty zones too.
    """
    zones: list[Zone] = []
    cur: dict | None = None
    idx_in_node: dict[int, int] = {}

    def flush() -> None:
        if cur is not None:
            zones.append(Zone(**cur))

    for n, line in enumerate(text.splitlines(), 1):
        m = _ZONE_HDR.match(line)
        if m:
            flush()
            node = int(m.group(1))
            idx = idx_in_node.get(node, 0)
            idx_in_node[node] = idx + 1
            cur = {
                "node": node,
                "idx": idx,
                "name": m.group(2),
                "start_pfn": None,
                "spanned": 0,
                "present": 0,
                "managed": 0,
                "cma": None,
            }
            continue
        if cur is None:
            continue
        parts = line.split()
        key = parts[0] if len(parts) == 2 else ""
        if key in ("spanned", "present", "managed", "cma", "start_pfn:"):
            if not (parts[1].isascii() and parts[1].isdigit()):
                raise BadInput(f"{source}:{n}: {key.rstrip(':')} is not a number: {line!r}")
            cur["start_pfn" if key == "start_pfn:" else key] = int(parts[1])
    flush()
    if not zones:
        raise BadInput(f"{source}: no 'Node N, zone NAME' blocks: not a /proc/zoneinfo file")
    return zones


def parse_zoneinfo_counters(text: str, source: str = "zoneinfo") -> list[dict[str, int]]:
    """The ``NAME VALUE`` counter lines of every zone block of ``/proc/zoneinfo``.

    ``zoneinfo_show_print()`` (mm/vmstat.c) prints ``pages free N`` and the watermark,
    span and ``cma`` lines, then, for a populated zone, one ``%-12s %lu`` line per zone
    stat (``nr_free_pages``, ``nr_free_cma``, ...). The per-node stats printed in the
    node's first populated zone are left out (they are not the zone's), as are the
    per-CPU pagesets. One dict per block, in file order (as :func:`parse_zoneinfo`),
    with ``node`` and ``idx``; ``free`` is the ``pages free`` value.
    """
    out: list[dict[str, int]] = []
    cur: dict[str, int] | None = None
    idx_in_node: dict[int, int] = {}
    in_node_stats = False
    for line in text.splitlines():
        m = _ZONE_HDR.match(line)
        if m:
            node = int(m.group(1))
            idx = idx_in_node.get(node, 0)
            idx_in_node[node] = idx + 1
            cur = {"node": node, "idx": idx}
            out.append(cur)
            in_node_stats = False
            continue
        if cur is None:
            continue
        stripped = line.strip()
        if stripped == "per-node stats":
            in_node_stats = True
            continue
        if stripped.startswith("pages free"):
            in_node_stats = False
            parts = stripped.split()
            if len(parts) == 3 and parts[2].isascii() and parts[2].isdigit():
                cur["free"] = int(parts[2])
            continue
        if stripped == "pagesets":
            in_node_stats = True  # per-CPU lines follow: not zone counters
            continue
        parts = stripped.split()
        if in_node_stats or len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
            continue
        cur.setdefault(parts[0], int(parts[1]))
    if not out:
        raise BadInput(f"{source}: no 'Node N, zone NAME' blocks: not a /proc/zoneinfo file")
    return out


def zone_names(zones: list[Zone]) -> dict[int, str]:
    """Zone index -> name (``enum zone_type`` order), from parsed zoneinfo."""
    out: dict[int, str] = {}
    for z in zones:
        out.setdefault(z.idx, z.name)
    return out


def populated_spans(zones: list[Zone]) -> list[Zone]:
    """The zones that have a span (populated), sorted by start pfn."""
    return sorted(
        (z for z in zones if z.start_pfn is not None and z.spanned),
        key=lambda z: (z.start_pfn, z.node, z.idx),
    )


def unambiguous_zone(zones: list[Zone], pfn: int) -> Zone | None:
    """The zone whose span holds ``pfn`` when exactly one span does, else None.

    Spans overlap with ZONE_MOVABLE from movablecore/kernelcore on several nodes and
    with ZONE_CMA-style layouts, so a pfn in two spans says nothing about its zone.
    """
    hits = [z for z in populated_spans(zones) if z.start_pfn <= pfn < z.end_pfn]  # type: ignore[operator]
    return hits[0] if len(hits) == 1 else None
