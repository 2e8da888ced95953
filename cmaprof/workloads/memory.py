"""Workloads of ordinary memory: anonymous pages (``anon``), page cache (``pagecache``)
and the kernel's bulk allocator (``bulk``, through io_uring)."""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cmaprof.errors import EnvironmentProblem

CHUNK = 1 << 20


PAGE_SIZE = mmap.PAGESIZE


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0])
    raise EnvironmentProblem(f"/proc/meminfo has no {key}")


MADV_POPULATE_WRITE = 23  # include/uapi/asm-generic/mman-common.h, Linux 5.14+


def _populate_write(m: mmap.mmap, nbytes: int) -> bool:
    """Fault in every page of ``m`` for writing with one madvise(MADV_POPULATE_WRITE).

    The same page allocations as writing a byte per page, without a page-fault
    exception per page (minutes saved under QEMU's TCG). False when the kernel has no
    MADV_POPULATE_WRITE (before 5.14): the caller touches the pages instead.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.c_char.from_buffer(m)
    try:
        rc = libc.madvise(
            ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(nbytes), MADV_POPULATE_WRITE
        )
    finally:
        del buf
    return rc == 0


@contextlib.contextmanager
def anon(
    size: int | None = None, hold: bool = False, thp: bool = False, leave: int | None = None
) -> Iterator[str]:
    """Map ``size`` MiB of anonymous memory and write one byte per 4 KiB page.

    With ``leave`` instead of ``size``, the size is MemFree (/proc/meminfo) minus
    ``leave`` MiB: memory filled up to a known free amount whatever else runs.

    With ``thp`` False the range is ``MADV_NOHUGEPAGE``, so every page is an order-0
    ``GFP_HIGHUSER_MOVABLE`` allocation; with ``thp`` it is ``MADV_HUGEPAGE`` (order-9
    allocations where the kernel can: 512 times fewer faults, which counts under TCG
    with ``page_owner=on`` saving a stack per allocation). With ``hold`` the memory stays mapped until
    the workload is left (the later workloads of the command run with it in place);
    without, it is unmapped at once.
    """
    if leave is not None:
        free_mib = _meminfo_kib("MemFree") >> 10
        size = free_mib - leave
        if size <= 0:
            raise EnvironmentProblem(f"anon: leave={leave} MiB, but only {free_mib} MiB free")
    nbytes = (size or 512) << 20
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        if not thp and hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)
        elif thp and hasattr(mmap, "MADV_HUGEPAGE"):
            m.madvise(mmap.MADV_HUGEPAGE)
        if not _populate_write(m, nbytes):
            for off in range(0, nbytes, PAGE_SIZE):
                m[off] = 1
        pages = nbytes // PAGE_SIZE
        if not hold:
            m.close()
            yield f"{pages} pages touched and unmapped"
        else:
            yield f"{pages} pages touched, mapped until the end"
    finally:
        m.close()


@contextlib.contextmanager
def pagecache(size: int, dir: str | None = None, keep: bool = False) -> Iterator[str]:
    """Write a ``size`` MiB file, drop it from the page cache, read it back.

    Allocates about 2 x ``size`` MiB of page cache (written, then read again). With
    ``keep`` the file and its cached pages stay until the workload is left; the file
    is always deleted at the end.
    """
    fd, path = tempfile.mkstemp(prefix="cmaprof-pagecache-", dir=dir)
    try:
        buf = b"\x5a" * CHUNK
        for _ in range(size):
            os.write(fd, buf)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.lseek(fd, 0, os.SEEK_SET)
        total = 0
        while chunk := os.read(fd, CHUNK):
            total += len(chunk)
        if not keep:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        yield f"{total >> 20} MiB read back" + (", kept cached until the end" if keep else "")
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
        os.unlink(path)


def _bulk(mib: int) -> int:
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


@contextlib.contextmanager
def bulk(size: int) -> Iterator[str]:
    """Make the kernel use the bulk page allocator for about ``size`` MiB.

    ``splice()`` of 64 KiB from /dev/zero into a pipe fills the pipe through
    ``copy_splice_read()``, which takes its 16 pages with ``alloc_pages_bulk()``
    (6.5+); kernels that refuse to splice from /dev/zero (6.1: EINVAL) get thread
    creation instead, whose vmalloc'ed stacks come from the bulk allocator too.
    These pages are counted in pgalloc_* without an mm_page_alloc event.
    """
    yield f"{_bulk(size)} splice calls or threads"
