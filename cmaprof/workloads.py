"""Built-in workloads: known allocations to record, bounded and cleaning up after themselves.

Each workload is ``NAME[:MIB]`` on the command line (``cmaprof workload anon:1024
pagecache:256``) and runs in the calling process, so ``cmaprof record -- cmaprof
workload ...`` records exactly these allocations plus the rest of the system.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from cmaprof.errors import BadInput

CHUNK = 1 << 20


def anon(mib: int, thp: bool = False) -> int:
    """Map ``mib`` MiB of anonymous memory, write one byte per page, unmap.

    With ``thp`` False the range is ``MADV_NOHUGEPAGE``, so every page is an order-0
    ``GFP_HIGHUSER_MOVABLE`` allocation. Returns the number of pages touched.
    """
    size = mib << 20
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        if not thp and hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)
        step = mmap.PAGESIZE
        for off in range(0, size, step):
            m[off] = 1
    finally:
        m.close()
    return size // mmap.PAGESIZE


def pagecache(mib: int, directory: str | None = None) -> int:
    """Write a ``mib`` MiB file, drop it from the page cache, read it back, delete it.

    Allocates about 2 x ``mib`` MiB of page cache (written, then read again).
    Returns the number of bytes read back.
    """
    fd, path = tempfile.mkstemp(prefix="cmaprof-pagecache-", dir=directory)
    try:
        buf = b"\x5a" * CHUNK
        for _ in range(mib):
            os.write(fd, buf)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.lseek(fd, 0, os.SEEK_SET)
        total = 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            total += len(chunk)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return total
    finally:
        os.close(fd)
        os.unlink(path)


def bulk(mib: int) -> int:
    """Make the kernel use the bulk page allocator for about ``mib`` MiB.

    ``splice()`` of 64 KiB from /dev/zero into a pipe fills the pipe through
    ``copy_splice_read()``, which takes its 16 pages with ``alloc_pages_bulk()``
    (6.5+); kernels that refuse to splice from /dev/zero (6.1: EINVAL) get thread
    creation instead, whose vmalloc'ed stacks come from the bulk allocator too.
    These pages are counted in pgalloc_* without an mm_page_alloc event.
    Returns the number of splice calls, or of threads started.
    """
    import threading

    chunk = 64 << 10
    calls = (mib << 20) // chunk
    r, w = os.pipe()
    zero = os.open("/dev/zero", os.O_RDONLY)
    try:
        for i in range(calls):
            try:
                n = os.splice(zero, w, chunk)
            except OSError:
                if i:
                    raise
                break
            while n > 0:
                n -= len(os.read(r, n))
        else:
            return calls
    finally:
        os.close(zero)
        os.close(r)
        os.close(w)
    threads = max(1, (mib << 20) // (16 << 10))
    for _ in range(threads):
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
    return threads


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[int], int]
    default_mib: int
    help: str


WORKLOADS = {
    "anon": Workload("anon", anon, 512, "touch N MiB of anonymous memory (no THP)"),
    "pagecache": Workload(
        "pagecache",
        pagecache,
        256,
        "write, drop and re-read an N MiB file (about 2N MiB of page cache)",
    ),
    "bulk": Workload(
        "bulk", bulk, 64, "N MiB through the bulk page allocator (splice, else threads)"
    ),
}


def parse_spec(spec: str) -> tuple[Workload, int]:
    """``NAME[:MIB]`` -> (workload, MiB)."""
    name, _, arg = spec.partition(":")
    wl = WORKLOADS.get(name)
    if wl is None:
        raise BadInput(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}")
    if not arg:
        return wl, wl.default_mib
    try:
        mib = int(arg)
    except ValueError:
        raise BadInput(f"workload {spec!r}: size must be a whole number of MiB")
    if mib <= 0 or mib > 1 << 20:
        raise BadInput(f"workload {spec!r}: size must be between 1 and 1048576 MiB")
    return wl, mib
