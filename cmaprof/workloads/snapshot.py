"""The ``snapshot`` workload: the kernel's own counters and page_owner records saved at
a point of the command, for cross-checks that do not come from cmaprof's probes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cmaprof.errors import EnvironmentProblem
from cmaprof.kernel.page_owner import parse_page_owner
from cmaprof.workloads import cma as cma_workload
from cmaprof.workloads import commands


def dump_page_owner(base_pfn: int, count: int, dest: Path) -> None:
    """Save the kernel's page_owner records from pfn ``base_pfn`` on, unmodified, to ``dest``.

    ``read_page_owner()`` (mm/page_owner.c, 6.1) takes the file position as the pfn
    to start from and returns one record (one allocated page block) per read, so
    seeking to ``base_pfn`` skips the memory below. At most ``count`` records are
    read, which covers the range [base_pfn, base_pfn + count) and may run past it:
    :func:`page_owner_table` keeps only the range. ``dd`` does the reads: one
    Python iteration per record costs minutes under QEMU's TCG. Needs
    ``page_owner=on``.
    """
    src = cma_workload.DEBUGFS / "page_owner"
    dd = commands.tool("dd", "coreutils")
    argv = [dd, f"if={src}", f"of={dest}", "bs=4096", "iflag=skip_bytes"]
    commands.sh([*argv, f"skip={base_pfn}", f"count={count}", "status=none"], "reading page_owner")


def page_owner_table(path: Path, base_pfn: int, count: int) -> list[dict[str, Any]]:
    """Parse a :func:`dump_page_owner` file: the records inside [base_pfn, +count)."""
    out = []
    for text in path.read_text(errors="replace").split("\n\n"):
        r = parse_page_owner(text)
        if r is not None and base_pfn <= r["pfn"] < base_pfn + count:
            out.append(r)
    return out


def _copy(src: Path, dst: Path) -> None:
    with contextlib.suppress(OSError):
        dst.write_bytes(src.read_bytes())


@contextlib.contextmanager
def snapshot(dir: str | None = None, owners: bool = True) -> Iterator[str]:
    """Save the kernel's own counters at this point of the command, for cross-checks.

    Writes ``<dir>/<n>/`` (n counts the snapshots already there) with /proc/vmstat,
    /proc/meminfo, each CMA area's sysfs ``alloc_pages_*`` and debugfs ``used``,
    ``count`` and ``base_pfn``, and, with ``owners`` and ``page_owner=on``,
    ``page_owner-<area>.txt``: the kernel's page_owner records from the area's base
    on (gfp, order, pid, pageblock type and allocation stack of each allocated page;
    :func:`page_owner_table` parses them). None of it comes from cmaprof's probes. ``dir`` defaults to $CMAPROF_SNAPSHOT_DIR, else
    ./cmaprof-snapshots.
    """
    root = Path(dir or os.environ.get("CMAPROF_SNAPSHOT_DIR") or "cmaprof-snapshots")
    root.mkdir(parents=True, exist_ok=True)
    n = len([p for p in root.iterdir() if p.name.isdigit()])
    out = root / f"{n:02d}"
    out.mkdir()
    for name in ("vmstat", "meminfo", "zoneinfo", "pagetypeinfo"):
        _copy(Path("/proc") / name, out / name)
    notes = []
    cma = cma_workload.DEBUGFS / "cma"
    for d in sorted(cma.iterdir()) if cma.is_dir() else []:
        for f in ("count", "used", "base_pfn", "maxchunk"):
            _copy(d / f, out / f"cma-{d.name}-{f}")
        sysd = cma_workload.SYSFS_MM / "cma" / d.name
        for f in ("alloc_pages_success", "alloc_pages_fail"):
            _copy(sysd / f, out / f"cma-{d.name}-{f}")
        if owners and (cma_workload.DEBUGFS / "page_owner").exists():
            try:
                base = int((d / "base_pfn").read_text())
                count = int((d / "count").read_text())
                dump_page_owner(base, count, out / f"page_owner-{d.name}.txt")
            except (EnvironmentProblem, OSError, ValueError) as exc:
                notes.append(f"page_owner {d.name}: {exc}")
    if notes:
        (out / "notes").write_text("\n".join(notes) + "\n")
    yield f"kernel counters saved in {out}" + (f" ({'; '.join(notes)})" if notes else "")
