"""Built-in workloads: known allocations to record, bounded and cleaning up after themselves.

A workload is named on the command line as ``NAME[:ARGS]``, where ARGS is either one
value for the workload's main parameter (``anon:1024`` is 1024 MiB, as before) or
``key=value`` pairs separated by commas, optionally led by that main value
(``anon:1024,hold=1``, ``cma-alloc:pages=90%,cycles=3``). List values are joined with
``+`` (``cma-alloc:pages=23+1000``).

Each workload is a context manager: entering it does its work and leaves whatever state
it is asked to keep (a mounted file system, mapped memory, CMA allocations); leaving it
removes that state. :func:`run` enters the workloads of one command in order and leaves
them in reverse, so later workloads run while the earlier ones' state is still there
(the ``bdev-metadata`` file system stays mounted and ``anon:hold=1`` memory stays mapped
while ``cma-alloc`` runs). Workloads run in the calling process, so ``cmaprof record --
cmaprof workload ...`` records exactly these allocations plus the rest of the system.

The workloads live by what they allocate: :mod:`.memory` (anon, pagecache, bulk),
:mod:`.bdev` (bdev-metadata, bdev-read), :mod:`.cma` (cma-alloc, hugetlb-cma),
:mod:`.snapshot`; this package holds the registry (:data:`WORKLOADS`) and runs them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cmaprof.errors import BadInput
from cmaprof.kernel.page_owner import parse_page_owner
from cmaprof.workloads.bdev import bdev_metadata, bdev_read
from cmaprof.workloads.cma import (
    CmaAllocResult,
    cma_alloc,
    cma_areas,
    cma_debugfs_dir,
    hugetlb_cma,
)
from cmaprof.workloads.memory import CHUNK, PAGE_SIZE, anon, bulk, pagecache
from cmaprof.workloads.snapshot import dump_page_owner, page_owner_table, snapshot

__all__ = [
    "CHUNK",
    "PAGE_SIZE",
    "WORKLOADS",
    "CmaAllocResult",
    "Param",
    "Spec",
    "Workload",
    "anon",
    "bdev_metadata",
    "bdev_read",
    "bulk",
    "cma_alloc",
    "cma_areas",
    "cma_debugfs_dir",
    "dump_page_owner",
    "help_text",
    "hugetlb_cma",
    "page_owner_table",
    "pagecache",
    "parse_page_owner",
    "parse_spec",
    "run",
    "snapshot",
]


# ----------------------------------------------------------------------- registry


def _bool(v: str) -> bool:
    if v.lower() in ("1", "yes", "true", "on", "y"):
        return True
    if v.lower() in ("0", "no", "false", "off", "n", ""):
        return False
    raise ValueError(f"{v!r} is not a boolean (1/0, yes/no)")


def _mib(v: str) -> int:
    n = int(v)
    if not 1 <= n <= 1 << 20:
        raise ValueError("must be between 1 and 1048576 MiB")
    return n


def _positive_int(v: str) -> int:
    n = int(v)
    if n <= 0:
        raise ValueError("must be positive")
    return n


def _seconds(v: str) -> float:
    x = float(v)
    if not 0 <= x <= 24 * 3600:
        raise ValueError("must be between 0 and 86400 seconds")
    return x


def _list(v: str) -> list[str]:
    items = [s for s in v.split("+") if s]
    if not items:
        raise ValueError("empty list")
    return items


@dataclass(frozen=True)
class Param:
    name: str
    parse: Callable[[str], Any]
    help: str


@dataclass(frozen=True)
class Workload:
    """A workload: its factory (a context manager), main parameter and parameters."""

    name: str
    factory: Callable[..., contextlib.AbstractContextManager[str]]
    params: tuple[Param, ...]
    help: str
    main: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


_MIB = "size in MiB"
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "anon",
            anon,
            (
                Param("size", _mib, _MIB),
                Param("hold", _bool, "keep it mapped until the command ends"),
                Param("thp", _bool, "allow transparent huge pages"),
                Param("leave", _mib, "instead of size: fill until MemFree is N MiB"),
            ),
            "touch N MiB of anonymous memory (no THP)",
            main="size",
            defaults={"size": 512},
        ),
        Workload(
            "pagecache",
            pagecache,
            (
                Param("size", _mib, _MIB),
                Param("dir", str, "directory of the file"),
                Param("keep", _bool, "keep the pages cached until the command ends"),
            ),
            "write, drop and re-read an N MiB file (about 2N MiB of page cache)",
            main="size",
            defaults={"size": 256},
        ),
        Workload(
            "bulk",
            bulk,
            (Param("size", _mib, _MIB),),
            "N MiB through the bulk page allocator (splice, else threads)",
            main="size",
            defaults={"size": 64},
        ),
        Workload(
            "bdev-metadata",
            bdev_metadata,
            (
                Param("size", _mib, "ext4 image size in MiB (default 256)"),
                Param("files", _positive_int, "files per round (default 4000)"),
                Param("seconds", _seconds, "churn time bound (default 60)"),
                Param("dir", str, "where the image goes (default $TMPDIR or /tmp)"),
            ),
            "ext4 on a loop device: metadata churn via buffer heads; stays mounted",
            main="size",
        ),
        Workload(
            "bdev-read",
            bdev_read,
            (
                Param("size", _mib, "MiB to read (default 256)"),
                Param("device", str, "block device to read (default: a loop image)"),
                Param("dir", str, "where the loop image goes"),
                Param("hold", _bool, "keep the pages cached until the command ends"),
            ),
            "buffered reads of a block device",
            main="size",
        ),
        Workload(
            "cma-alloc",
            cma_alloc,
            (
                Param(
                    "pages",
                    _list,
                    "pages per request: N, N% of the area, N%free, N%maxchunk; '+'-joined",
                ),
                Param("area", str, "CMA area name (default: the only one, or reserved)"),
                Param("cycles", _positive_int, "times to repeat the requests (default 1)"),
                Param("period", _seconds, "seconds between cycles (default 0)"),
                Param("hold", _bool, "hold successful allocations until the command ends"),
            ),
            "cma_alloc() through debugfs alloc/free",
            main="pages",
        ),
        Workload(
            "hugetlb-cma",
            hugetlb_cma,
            (
                Param("count", _positive_int, "gigantic pages (default 1)"),
                Param(
                    "size", str, "1G (default: from the CMA area) or 2M (buddy pages: a contrast)"
                ),
            ),
            "gigantic pages from a hugetlb_cma= area, held until the command ends",
            main="count",
        ),
        Workload(
            "snapshot",
            snapshot,
            (
                Param("dir", str, "where (default $CMAPROF_SNAPSHOT_DIR)"),
                Param("owners", _bool, "page_owner of CMA pages (default 1)"),
            ),
            "save vmstat, CMA sysfs/debugfs and page_owner of CMA ranges",
            main="dir",
        ),
    )
}


@dataclass(frozen=True)
class Spec:
    """A parsed ``NAME[:ARGS]``: the workload and its keyword arguments."""

    workload: Workload
    kwargs: dict[str, Any]
    text: str

    @property
    def name(self) -> str:
        return self.workload.name

    def open(self) -> contextlib.AbstractContextManager[str]:
        return self.workload.factory(**self.kwargs)


def parse_spec(spec: str) -> Spec:
    """``NAME[:VALUE][,KEY=VALUE...]`` -> :class:`Spec`; :class:`BadInput` when wrong."""
    name, _, args = spec.partition(":")
    wl = WORKLOADS.get(name)
    if wl is None:
        raise BadInput(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}")
    params = {p.name: p for p in wl.params}
    kwargs: dict[str, Any] = dict(wl.defaults)
    for i, item in enumerate(args.split(",") if args else []):
        key, eq, val = item.partition("=")
        if not eq:
            if i or wl.main is None:
                raise BadInput(f"workload {spec!r}: {item!r} is not KEY=VALUE")
            key, val = wl.main, item
        p = params.get(key)
        if p is None:
            raise BadInput(
                f"workload {spec!r}: unknown parameter {key!r}; {name} takes {', '.join(params)}"
            )
        try:
            kwargs[key] = p.parse(val)
        except ValueError as exc:
            raise BadInput(f"workload {spec!r}: {key}={val!r}: {exc}") from None
    return Spec(wl, kwargs, spec)


def help_text() -> str:
    """The workloads and their parameters, for ``cmaprof workload --help``."""
    lines = []
    for wl in WORKLOADS.values():
        lines.append(f"{wl.name}: {wl.help}")
        for p in wl.params:
            lead = " (the value after ':')" if p.name == wl.main else ""
            lines.append(f"    {p.name}: {p.help}{lead}")
    return "\n".join(lines)


def run(specs: list[Spec], echo: Callable[[str], None] = lambda s: None) -> None:
    """Enter ``specs`` in order, then leave them in reverse (state lasts until the end)."""
    with contextlib.ExitStack() as stack:
        for spec in specs:
            t0 = time.monotonic()
            summary = stack.enter_context(spec.open())
            echo(f"cmaprof workload: {spec.text}: {summary} ({time.monotonic() - t0:.1f} s)")
