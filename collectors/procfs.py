"""Reading and parsing /proc and /sys files: vmstat, zoneinfo, pagetypeinfo, CMA areas.

Parsers take text (so analysis can run them on the copies saved in a recording);
``read_*`` functions take a ``root`` so tests can point them at a fake tree.
No BCC here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cmaprof.errors import BadInput

#: /proc files saved at the start and the end of every recording.
SNAPSHOT_FILES = ("vmstat", "zoneinfo", "pagetypeinfo", "buddyinfo")


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

    for line in text.splitlines():
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
        if len(parts) == 2 and parts[0] in ("spanned", "present", "managed", "cma"):
            cur[parts[0]] = int(parts[1])
        elif len(parts) == 2 and parts[0] == "start_pfn:":
            cur["start_pfn"] = int(parts[1])
    flush()
    if not zones:
        raise BadInput(f"{source}: no 'Node N, zone NAME' blocks: not a /proc/zoneinfo file")
    return zones


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


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0], 0)
    except (OSError, ValueError, IndexError):
        return None


def read_cma_areas(root: Path = Path("/")) -> list[CmaArea]:
    """CMA areas with their pfn ranges.

    debugfs ``/sys/kernel/debug/cma/<name>/{base_pfn,count}`` (older kernels name the
    directories ``cma-<idx>``) gives ranges; sysfs ``/sys/kernel/mm/cma/<name>`` only
    names (then base_pfn/count are None and placement cannot be computed).
    """
    areas: dict[str, CmaArea] = {}
    dbg = root / "sys/kernel/debug/cma"
    if dbg.is_dir():
        for d in sorted(dbg.iterdir()):
            areas[d.name] = CmaArea(
                d.name, _read_int(d / "base_pfn"), _read_int(d / "count"), "debugfs"
            )
    sysfs = root / "sys/kernel/mm/cma"
    if sysfs.is_dir():
        for d in sorted(sysfs.iterdir()):
            areas.setdefault(d.name, CmaArea(d.name, None, None, "sysfs"))
    return list(areas.values())


def read_text(root: Path, rel: str) -> str | None:
    """The text of ``root/rel``, or None where it cannot be read."""
    try:
        return (root / rel).read_text()
    except OSError:
        return None
