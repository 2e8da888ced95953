"""Reading the running system's /proc and /sys files: CMA areas, snapshot files.

The text parsers live in :mod:`cmaprof.kernel.procfs` (the analysis runs them on the
copies saved in a recording); this module only reads files. ``read_*`` functions take
a ``root`` so tests can point them at a fake tree. No BCC here.
"""

from __future__ import annotations

from pathlib import Path

from cmaprof.kernel.procfs import CmaArea

#: /proc files saved at the start and the end of every recording.
SNAPSHOT_FILES = ("vmstat", "zoneinfo", "pagetypeinfo", "buddyinfo")


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
