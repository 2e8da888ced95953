"""Workloads of CMA itself: allocations through debugfs ``alloc``/``free``
(``cma-alloc``) and gigantic pages from ``hugetlb_cma`` (``hugetlb-cma``).

:data:`DEBUGFS` and :data:`SYSFS_MM` are where the kernel's CMA debugfs, CMA sysfs and
hugetlb sysfs are (tests point these at fake trees; :mod:`.snapshot` reads them too)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cmaprof.errors import BadInput, EnvironmentProblem

#: Where the kernel's CMA debugfs, CMA sysfs and hugetlb sysfs are (tests point these
#: at fake trees).
DEBUGFS = Path("/sys/kernel/debug")


SYSFS_MM = Path("/sys/kernel/mm")


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
