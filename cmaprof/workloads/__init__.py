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
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmaprof.errors import BadInput, EnvironmentProblem
from cmaprof.kernel.page_owner import parse_page_owner

CHUNK = 1 << 20
PAGE_SIZE = mmap.PAGESIZE
#: Where the kernel's CMA debugfs, CMA sysfs and hugetlb sysfs are (tests point these
#: at fake trees).
DEBUGFS = Path("/sys/kernel/debug")
SYSFS_MM = Path("/sys/kernel/mm")


# --------------------------------------------------------------------------- anon


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


# ---------------------------------------------------------------------- pagecache


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


# --------------------------------------------------------------------------- bulk


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


# ------------------------------------------------------------ loop devices, ext4


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"workload {what} needs root (loop devices, mount)")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise EnvironmentProblem(f"{name} not found (apt-get install {package})")
    return path


def _sh(argv: list[str], what: str) -> str:
    """Run ``argv`` (an argument list, never a shell string); its stdout, or a clear error."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise EnvironmentProblem(
            f"{what}: {' '.join(argv)} failed ({proc.returncode}): {msg[-1] if msg else ''}"
        )
    return proc.stdout


@contextlib.contextmanager
def _loop_device(image: Path) -> Iterator[str]:
    """``losetup`` ``image``; detach at the end. Yields /dev/loopN."""
    losetup = _tool("losetup", "mount")
    if not Path("/dev/loop-control").exists() and not Path("/dev/loop0").exists():
        raise EnvironmentProblem(
            "no loop device support (/dev/loop-control missing: CONFIG_BLK_DEV_LOOP "
            "off, or modprobe loop)"
        )
    dev = _sh([losetup, "--find", "--show", str(image)], "attaching a loop device").strip()
    try:
        yield dev
    finally:
        subprocess.run([losetup, "-d", dev], capture_output=True, check=False)


@contextlib.contextmanager
def _scratch_image(size: int, dir: str | None, prefix: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    try:
        image = base / "disk.img"
        with open(image, "wb") as f:
            f.truncate(size << 20)
        yield image
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _churn(root: Path, files: int, seconds: float) -> tuple[int, int]:
    """Create, write, fsync, rename and delete small files and directories under ``root``.

    Every step dirties inode-table, bitmap, directory and journal blocks: buffer
    heads on the block device's page cache (``__getblk()``). Returns (rounds, ops).
    """
    deadline = time.monotonic() + seconds
    per_dir = 50
    rounds = ops = 0
    payload = b"m" * 100
    while True:
        rnd = root / f"r{rounds}"
        rnd.mkdir()
        for i in range(files):
            d = rnd / f"d{i // per_dir}"
            if i % per_dir == 0:
                d.mkdir()
            p = d / f"f{i}"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, payload)
                if i % 16 == 0:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if i % 3 == 0:
                os.rename(p, d / f"g{i}")
            ops += 1
            if time.monotonic() > deadline:
                break
        rounds += 1
        os.sync()
        if time.monotonic() > deadline:
            break
        if rounds >= 2:  # keep about two rounds of files: metadata stays live
            shutil.rmtree(root / f"r{rounds - 2}")
    return rounds, ops


@contextlib.contextmanager
def bdev_metadata(
    size: int = 256, files: int = 4000, seconds: float = 60.0, dir: str | None = None
) -> Iterator[str]:
    """ext4 on a loop device: metadata churn through buffer heads and the journal.

    A ``size`` MiB sparse image under ``dir`` (default: $TMPDIR or /tmp) is attached to
    a loop device, formatted ext4 with a 1 KiB block size (more groups and so more
    metadata blocks per MiB) and mounted; then rounds of ``files`` small files are
    created, written, renamed and deleted for at most ``seconds``. The metadata is
    read and written through ``sb_bread()``/``__getblk()``, whose block-device page
    cache pages are allocated ``GFP_NOFS|__GFP_MOVABLE``-style (movable, never
    highmem). The file system stays mounted, with the last round's files, until the
    workload is left: ext4 keeps the superblock and group descriptor buffer heads
    referenced while mounted.
    """
    _need_root("bdev-metadata")
    mkfs = _tool("mkfs.ext4", "e2fsprogs")
    mount, umount = _tool("mount", "mount"), _tool("umount", "mount")
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(_scratch_image(size, dir, "cmaprof-bdev-metadata-"))
        dev = stack.enter_context(_loop_device(image))
        _sh([mkfs, "-q", "-F", "-b", "1024", "-N", str(max(4 * files, 1024)), dev], "mkfs")
        mnt = image.parent / "mnt"
        mnt.mkdir()
        _sh([mount, "-t", "ext4", dev, str(mnt)], "mounting the ext4 image")
        stack.callback(subprocess.run, [umount, str(mnt)], capture_output=True, check=False)
        rounds, ops = _churn(mnt, files, seconds)
        yield f"ext4 on {dev}: {ops} file operations in {rounds} rounds, mounted until the end"


@contextlib.contextmanager
def bdev_read(
    size: int = 256, device: str | None = None, dir: str | None = None, hold: bool = False
) -> Iterator[str]:
    """Buffered reads of a block device: ``size`` MiB of ``device`` through its page cache.

    Without ``device`` a ``size`` MiB image of non-zero data under ``dir`` is attached
    to a loop device and read. Raw block-device reads use the bdev inode's mapping
    mask (``GFP_USER`` in 6.1: not movable). The cached pages are dropped at the end
    (``POSIX_FADV_DONTNEED``), or kept until the workload is left with ``hold``.
    """
    with contextlib.ExitStack() as stack:
        if device is None:
            _need_root("bdev-read")
            image = stack.enter_context(_scratch_image(size, dir, "cmaprof-bdev-read-"))
            with open(image, "r+b") as f:
                buf = b"\xa5" * CHUNK
                f.writelines(buf for _ in range(size))
            device = stack.enter_context(_loop_device(image))
        try:
            fd = os.open(device, os.O_RDONLY)
        except OSError as exc:
            raise EnvironmentProblem(f"bdev-read: cannot open {device}: {exc.strerror}") from None
        stack.callback(os.close, fd)
        stack.callback(os.posix_fadvise, fd, 0, 0, os.POSIX_FADV_DONTNEED)
        total = 0
        while total < size << 20 and (chunk := os.read(fd, CHUNK)):
            total += len(chunk)
        if not hold:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        yield f"{total >> 20} MiB read from {device}" + (", cached until the end" if hold else "")


# ---------------------------------------------------------------------- CMA debugfs


def cma_debugfs_dir() -> Path:
    d = DEBUGFS / "cma"
    if not d.is_dir():
        raise EnvironmentProblem(
            f"no CMA debugfs at {d} (needs CONFIG_CMA_DEBUGFS, a CMA area and a mounted "
            "debugfs: mount -t debugfs none /sys/kernel/debug)"
        )
    return d


def cma_areas() -> dict[str, Path]:
    """CMA areas by name -> debugfs directory (``cma-<idx>`` on old kernels)."""
    root = cma_debugfs_dir()
    out = {}
    for d in sorted(root.iterdir()):
        if (d / "count").exists():
            name = d.name
            # old kernels: cma-<idx>; the sysfs name is then the index alone
            out[name] = d
    if not out:
        raise EnvironmentProblem(f"{root} holds no CMA area (boot with cma=SIZE)")
    return out


def _area_dir(area: str | None) -> tuple[str, Path]:
    areas = cma_areas()
    if area is None:
        if len(areas) == 1:
            return next(iter(areas.items()))
        if "reserved" in areas:
            return "reserved", areas["reserved"]
        raise BadInput(f"cma-alloc: several CMA areas, name one with area=: {', '.join(areas)}")
    if area not in areas:
        raise BadInput(f"cma-alloc: no CMA area {area!r}; areas: {', '.join(areas)}")
    return area, areas[area]


def _pages(spec: str, count: int, used: int, maxchunk: int = 0) -> int:
    """``N`` pages, ``N%`` of the area's ``count`` pages, ``N%free`` of its free pages, or
    ``N%maxchunk`` of its largest free run (debugfs ``maxchunk``: what one position of
    ``cma_alloc()`` can take; free pages in several runs fail at once with -ENOMEM)."""
    if spec.endswith("%maxchunk"):
        return max(1, int(maxchunk * _pct(spec.removesuffix("maxchunk")) / 100))
    if spec.endswith(("%", "%free")):
        free = spec.endswith("%free")
        pct = _pct(spec.removesuffix("free"))
        return max(1, int((count - used if free else count) * pct / 100))
    try:
        n = int(spec)
    except ValueError:
        raise BadInput(
            f"cma-alloc: pages={spec!r} is not a number of pages, N% or N%free"
        ) from None
    if n <= 0:
        raise BadInput(f"cma-alloc: pages={spec!r} must be positive")
    return n


def _pct(spec: str) -> float:
    try:
        pct = float(spec[:-1])
    except ValueError:
        raise BadInput(f"cma-alloc: pages={spec!r} is not a percentage") from None
    if not 0 < pct <= 100:
        raise BadInput(f"cma-alloc: pages={spec!r} must be in (0, 100]%")
    return pct


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class CmaAllocResult:
    """What the ``cma-alloc`` workload asked for and got (for summaries and tests)."""

    area: str
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    pages_held: int = 0
    requests: list[tuple[int, bool]] = field(default_factory=list)


def _cma_write(path: Path, pages: int) -> bool:
    """Write ``pages`` to a debugfs ``alloc``/``free`` file; False when the kernel refused."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise EnvironmentProblem(f"cma-alloc: cannot open {path}: {exc.strerror}") from None
    try:
        os.write(fd, f"{pages}\n".encode())
        return True
    except OSError:
        return False  # -ENOMEM: cma_alloc() failed (or nothing to free)
    finally:
        os.close(fd)


@contextlib.contextmanager
def cma_alloc(
    pages: list[str] | None = None,
    area: str | None = None,
    cycles: int = 1,
    period: float = 0.0,
    hold: bool = False,
) -> Iterator[str]:
    """``cma_alloc()`` through debugfs: write each of ``pages`` to ``<area>/alloc``.

    ``pages`` are page counts, percentages of the area (``90%``: most of it) or of its
    free pages when the request is made (``100%free``: all that is free, so the one
    position ``cma_alloc()`` can try), tried
    in order, ``cycles`` times, ``period`` seconds apart; each successful allocation
    is freed again (``<area>/free``) before the next request, or held until the
    workload is left with ``hold``. A refused request (``cma_alloc()`` returned NULL)
    is counted, not an error: failures are what the scenario records.
    """
    name, d = _area_dir(area)
    count = _read_int(d / "count")
    specs = pages or ["23"]
    for p in specs:
        _pages(p, count, 0)  # a bad size fails before any allocation
    res = CmaAllocResult(area=name)
    asked: list[int] = []
    try:
        for cycle in range(cycles):
            for p in specs:
                n = _pages(p, count, _read_int(d / "used"), _read_int(d / "maxchunk"))
                ok = _cma_write(d / "alloc", n)
                asked.append(n)
                res.calls += 1
                res.requests.append((n, ok))
                if ok:
                    res.succeeded += 1
                    res.pages_held += n
                    if not hold:
                        _cma_write(d / "free", n)
                        res.pages_held -= n
                else:
                    res.failed += 1
            if period and cycle + 1 < cycles:
                time.sleep(period)
        sizes = list(dict.fromkeys(asked))
        yield (
            f"area {name}: {res.calls} calls ({'+'.join(map(str, sizes))} pages), "
            f"{res.succeeded} succeeded, {res.failed} failed"
        )
    finally:
        if res.pages_held:
            _cma_write(d / "free", res.pages_held)


# ------------------------------------------------------------------------ hugetlb


@contextlib.contextmanager
def hugetlb_cma(count: int = 1, size: str = "1G") -> Iterator[str]:
    """Allocate ``count`` gigantic pages; on a ``hugetlb_cma=`` kernel they come from CMA.

    Raises ``nr_hugepages`` of the ``size`` pool by ``count``, reads back how many
    the kernel gave, and restores the pool at the end. Needs a kernel booted with
    ``hugetlb_cma=SIZE`` (``cmaprof vm run --hugetlb-cma 2G``): otherwise gigantic
    pages would come from ``alloc_contig_pages()`` outside CMA. Size the area at
    least 2 GiB: 6.1 aligns hugetlb_cma areas to 2 MiB only (mm/hugetlb.c,
    hugetlb_cma_reserve(): ``cma_declare_contiguous_nid(..., PAGE_SIZE <<
    HUGETLB_PAGE_ORDER, ...)``), so a 1 GiB area may hold no 1 GiB-aligned page
    (measured in the 6.1 guest: ``--hugetlb-cma 1G --memory 3G`` gave 0 of 1 page and
    cma_alloc_fail +1; ``--hugetlb-cma 2G --memory 6G`` gave 1 of 1 and
    alloc_pages_success +262144).
    """
    kib = {"1G": 1 << 20, "2M": 2048}.get(size.upper())
    if kib is None:
        raise BadInput(f"hugetlb-cma: size={size!r}: use 1G or 2M")
    pool = SYSFS_MM / "hugepages" / f"hugepages-{kib}kB" / "nr_hugepages"
    if not pool.exists():
        raise EnvironmentProblem(f"no {pool} (CONFIG_HUGETLB_PAGE off, or no {size} pages)")
    cmdline = Path("/proc/cmdline").read_text() if Path("/proc/cmdline").exists() else ""
    cma_sys = SYSFS_MM / "cma"
    has_area = cma_sys.is_dir() and any(p.name.startswith("hugetlb") for p in cma_sys.iterdir())
    if not has_area:
        raise EnvironmentProblem(
            "hugetlb-cma: this kernel has no hugetlb CMA area in /sys/kernel/mm/cma"
            + (
                " although booted with hugetlb_cma= (dmesg: 'hugetlb_cma: reservation "
                "failed'; each node needs that much contiguous, 1 GiB-aligned memory)"
                if "hugetlb_cma=" in cmdline
                else ": boot with hugetlb_cma=SIZE (cmaprof vm run --hugetlb-cma SIZE)"
            )
        )
    before = int(pool.read_text())
    try:
        pool.write_text(f"{before + count}\n")
        got = int(pool.read_text()) - before
        hint = "" if got == count else " (the kernel refused the rest: see dmesg)"
        yield f"{got} of {count} {size} pages allocated, held until the end{hint}"
    finally:
        pool.write_text(f"{before}\n")


# ----------------------------------------------------------------------- snapshot


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
    src = DEBUGFS / "page_owner"
    dd = _tool("dd", "coreutils")
    argv = [dd, f"if={src}", f"of={dest}", "bs=4096", "iflag=skip_bytes"]
    _sh([*argv, f"skip={base_pfn}", f"count={count}", "status=none"], "reading page_owner")


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
    cma = DEBUGFS / "cma"
    for d in sorted(cma.iterdir()) if cma.is_dir() else []:
        for f in ("count", "used", "base_pfn", "maxchunk"):
            _copy(d / f, out / f"cma-{d.name}-{f}")
        sysd = SYSFS_MM / "cma" / d.name
        for f in ("alloc_pages_success", "alloc_pages_fail"):
            _copy(sysd / f, out / f"cma-{d.name}-{f}")
        if owners and (DEBUGFS / "page_owner").exists():
            try:
                base = int((d / "base_pfn").read_text())
                count = int((d / "count").read_text())
                dump_page_owner(base, count, out / f"page_owner-{d.name}.txt")
            except (EnvironmentProblem, OSError, ValueError) as exc:
                notes.append(f"page_owner {d.name}: {exc}")
    if notes:
        (out / "notes").write_text("\n".join(notes) + "\n")
    yield f"kernel counters saved in {out}" + (f" ({'; '.join(notes)})" if notes else "")


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
