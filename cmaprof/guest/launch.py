"""``cmaprof vm run``: boot a kernel under test in QEMU and run one command inside it.

The guest is booted with virtme-ng (``vng``) on Debian's ``qemu-system-x86_64``: the host's
root file system is exported read-only over 9p with a tmpfs overlay on top of ``/etc``,
``/lib``, ``/home``, ``/opt``, ``/srv``, ``/usr``, ``/var``, ``/tmp`` and ``/root`` (writes
there vanish with the guest), so the host's Python, BCC and this project's ``.venv`` run
unchanged inside. ``--out DIR`` is shared read-write at the same path.

How a run works, and why it does not trust virtme-ng's own plumbing:

* ``vng`` returns 255 instead of the script's status, and its script output ports need udev
  symlinks (``/dev/virtio-ports/virtme.*``) that a host without udevd does not provide. So
  the command runs from a shell script we write into a private control directory shared
  read-write with the guest. The script records boot facts (``boot``), runs the command with
  stdout/stderr redirected to files there (``stdout``, ``stderr``), and writes the exit
  status (``status``) last, after ``sync``.
* The host streams ``stdout``/``stderr`` to its own while the guest runs, keeps the whole
  serial console (``vng --verbose``: kernel log at loglevel 7 and QEMU's own errors) in a
  log file, and returns the command's status. No ``status`` file means the guest did not
  finish the command: a kernel panic, an Oops, a hang (``--timeout``), or QEMU failing. Each
  raises :class:`GuestFailure` quoting the console lines that say so and the kept log's path.
  There is no silent pass.
* virtme-ng adds ``panic=-1`` and QEMU's ``-no-reboot`` in script mode, so a panicking guest
  ends QEMU at once instead of hanging until the timeout.
* ``--force-9p``: virtme-ng otherwise waits about 3 s per shared directory for a Rust
  virtiofsd and falls back to 9p anyway when the installed one is QEMU's older daemon.
* ``--disable-microvm``: microvm needs ``CONFIG_VIRTIO_MMIO``, which a test kernel may lack.

KVM (``--kvm auto``) is used when ``/dev/kvm`` opens read-write. If QEMU then fails before
the guest's script starts (some hosts cannot run stock kernels under KVM: QEMU aborts on an
MSR it cannot set), the run is repeated under TCG and the kernel's sha256 is remembered in
``~/.cache/cmaprof/kvm.json`` so later runs of that kernel go straight to TCG.

Memory layout presets (:func:`kernel_cmdline`) model the guest's physical memory as QEMU's
q35 machine with SeaBIOS lays it out (what virtme-ng boots without microvm):

* RAM below 4 GiB is all of it up to 2815 MiB; from 2816 MiB (``0xb0000000``) on, q35 puts
  2 GiB below the 32-bit PCI hole and the rest from 4 GiB up.
* usable RAM in e820 is pfn 1 to 0x9f, 1 MiB to the top of low RAM minus 33 pages that
  SeaBIOS reserves, and all of high RAM (seen with QEMU 7.2 and SeaBIOS 1.16.2).
* with ``-numa``, node *k* owns RAM offsets ``[k*M/N, (k+1)*M/N)`` in that order (QEMU's
  SRAT), split around the same holes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import click

from cmaprof.errors import BadInput, CmaprofError, EnvironmentProblem

__all__ = [
    "GuestFailure",
    "VmOptions",
    "cma_in_movable_layout",
    "default_test_kernel",
    "guest_ram_ranges",
    "kernel_cmdline",
    "kernel_version",
    "movable_zone_start_pfns",
    "parse_size",
    "run",
    "shared_test_kernels",
    "vm",
]

PAGE_SIZE = 4096
MIB = 1 << 20
PAGES_PER_MIB = MIB // PAGE_SIZE
#: MAX_ORDER_NR_PAGES on x86_64 (MAX_ORDER 11): ZONE_MOVABLE starts and CMA areas are
#: aligned to this many pages (4 MiB).
MAX_ORDER_NR_PAGES = 1024
ALIGN_MIB = MAX_ORDER_NR_PAGES // PAGES_PER_MIB
#: q35: at or above this much RAM, only 2 GiB are put below 4 GiB (QEMU's pc_q35_init).
Q35_SPLIT_MIB = 0xB0000000 // MIB
Q35_LOWMEM_MIB = 0x80000000 // MIB
#: SeaBIOS keeps the last 33 pages below the top of low RAM (e820 "reserved").
SEABIOS_TOP_PAGES = 33
PFN_16M = (16 * MIB) // PAGE_SIZE
PFN_4G = (4096 * MIB) // PAGE_SIZE

#: Room kept between a fixed CMA area and each end of its ZONE_MOVABLE range: early boot
#: allocations (page tables, NODE_DATA, log buffer) are made top-down from the end of each
#: node before CMA is reserved, and the zone start moves by up to 4 MiB with rounding.
CMA_MARGIN_MIB = 64
#: Memory kept out of ZONE_MOVABLE for the kernel's own unmovable allocations.
KERNELCORE_MIN_MIB = 256

DEFAULT_TIMEOUT_S = 900.0
#: Under KVM a guest reaches its script in a few seconds; QEMU failing with KVM dies at once.
KVM_BOOT_LIMIT_S = 90.0
#: Seconds of silence from the guest before a heartbeat line (stderr) says it still runs.
HEARTBEAT_S = 30.0
#: Exit status of ``cmaprof vm run`` when the guest itself failed (as ``docker run``: 125).
GUEST_FAILURE_EXIT = 125

_CONSOLE_INTEREST = re.compile(
    r"Kernel panic - not syncing|end Kernel panic|BUG: |Oops|kernel BUG at|"
    r"general protection fault|RIP: |Comm: |sysrq: |watchdog: |blocked for more than|"
    r"Out of memory|qemu-system|virtme-ng-init: .*(?:error|failed|exited)",
)
_PANIC = re.compile(r"Kernel panic - not syncing|end Kernel panic")
_OOPS = re.compile(r"\bOops\b|BUG: |kernel BUG at|general protection fault")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@%,:/-]*$")


class GuestFailure(CmaprofError):
    """The guest did not run the command to the end: panic, Oops, hang or QEMU failure."""

    exit_code = GUEST_FAILURE_EXIT


@dataclass
class VmOptions:
    """What ``cmaprof vm run`` boots and runs.

    :param kernel: bzImage of the kernel under test.
    :param memory: guest RAM, QEMU syntax (``2G``, ``2048M``; a bare number is MiB).
    :param cpus: virtual CPUs.
    :param numa: NUMA nodes; RAM is split evenly, CPUs in contiguous blocks.
    :param append: extra kernel command-line words, as given (split like a shell would).
    :param out: host directory shared read-write with the guest at the same path.
    :param cma: ``cma=SIZE``: one area where the kernel puts it (stock placement).
    :param cma_in_movable: SIZE of one area placed inside ZONE_MOVABLE
        (``movablecore=`` plus ``cma=SIZE@BASE``): ZONE_CMA's allocation rule on a stock kernel.
    :param cma_pernuma: ``cma_pernuma=SIZE``: one area per node (kernels that honour it).
    :param timeout_s: seconds from launch until QEMU is killed and the run fails as a hang.
    :param kvm: ``auto`` (KVM when usable, TCG fallback), ``on`` or ``off`` (TCG).
    :param command: the command to run inside, as an argument vector.
    :param log_dir: where the console log is kept (default ``~/.cache/cmaprof/vm-logs``).
    :param hugetlb_cma: ``hugetlb_cma=SIZE``: per-node areas for gigantic pages (1 GiB each).
    """

    kernel: Path
    memory: str = "2G"
    cpus: int = 2
    numa: int = 1
    append: list[str] = field(default_factory=list)
    out: Path | None = None
    cma: str | None = None
    cma_in_movable: str | None = None
    cma_pernuma: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    kvm: str = "auto"
    command: list[str] = field(default_factory=list)
    log_dir: Path | None = None
    hugetlb_cma: str | None = None


# --------------------------------------------------------------------------- sizes

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, what: str, bare_unit: str | None = "m") -> int:
    """Bytes in ``text`` (``256M``, ``2G``, ``2048``).

    :param what: the option, for the error message.
    :param bare_unit: unit of a number without suffix (QEMU's ``-m`` takes MiB), or None to
        require a suffix (the kernel's ``memparse`` would read a bare number as bytes).
    """
    m = _SIZE.match(text)
    if not m:
        raise BadInput(f"{what} {text!r} is not a size: write it like 256M or 2G")
    number, unit = int(m.group(1)), m.group(2).lower()
    if not unit:
        if bare_unit is None:
            raise BadInput(f"{what} {text!r} has no unit: write it like {text}M or 1G")
        unit = bare_unit
    size = number * _UNIT[unit]
    if size <= 0:
        raise BadInput(f"{what} {text!r} must be larger than 0")
    return size


def _size_mib(text: str, what: str, bare_unit: str | None = "m") -> int:
    size = parse_size(text, what, bare_unit)
    if size % MIB:
        raise BadInput(f"{what} {text!r} is not a whole number of MiB")
    return size // MIB


# --------------------------------------------------------------------------- layout model


def guest_ram_ranges(memory_mib: int, nodes: int = 1) -> list[tuple[int, int, int]]:
    """Usable RAM of a q35/SeaBIOS guest as the kernel's memblock sees it.

    :param memory_mib: guest RAM (``-m``) in MiB.
    :param nodes: NUMA nodes sharing it evenly.
    :returns: ``(node, start_pfn, end_pfn)`` ranges in address order, end exclusive.
    """
    if nodes < 1 or nodes > 1 and (memory_mib % nodes or (memory_mib // nodes) % ALIGN_MIB):
        raise BadInput(
            f"--memory {memory_mib}M does not split into {nodes} NUMA nodes of whole 4 MiB: "
            f"use a multiple of {nodes * ALIGN_MIB} MiB"
        )
    low_mib = memory_mib if memory_mib < Q35_SPLIT_MIB else Q35_LOWMEM_MIB
    low_end = low_mib * PAGES_PER_MIB
    e820 = [(1, 0x9F), (0x100, low_end - SEABIOS_TOP_PAGES)]
    if memory_mib > low_mib:
        e820.append((PFN_4G, PFN_4G + (memory_mib - low_mib) * PAGES_PER_MIB))

    def to_pfn(offset_mib: int) -> int:  # RAM offset -> guest-physical pfn
        if offset_mib <= low_mib:
            return offset_mib * PAGES_PER_MIB
        return PFN_4G + (offset_mib - low_mib) * PAGES_PER_MIB

    per_node = memory_mib // nodes
    out: list[tuple[int, int, int]] = []
    for nid in range(nodes):
        lo, hi = nid * per_node, (nid + 1) * per_node
        pieces = [(lo, hi)]
        if lo < low_mib < hi:
            pieces = [(lo, low_mib), (low_mib, hi)]
        for a, b in pieces:
            pa = to_pfn(a) if a != low_mib else PFN_4G
            pb = to_pfn(b)
            for s, e in e820:
                s2, e2 = max(s, pa), min(e, pb)
                if s2 < e2:
                    out.append((nid, s2, e2))
    return sorted(out, key=lambda r: r[1])


def movable_zone_start_pfns(
    ranges: list[tuple[int, int, int]], movablecore_pages: int
) -> dict[int, int]:
    """Where ZONE_MOVABLE starts in each node for ``movablecore=`` pages.

    A transcription of ``find_zone_movable_pfns_for_nodes()`` (mm/page_alloc.c, v6.1) for
    ``movablecore=`` alone on x86_64: kernel memory is spread evenly over the nodes from
    their low ends, only the highest zone (DMA32 below 4 GiB of RAM, else Normal) can turn
    movable, and each start is rounded up to ``MAX_ORDER_NR_PAGES``.

    :param ranges: as from :func:`guest_ram_ranges`.
    :param movablecore_pages: the ``movablecore=`` size in 4 KiB pages.
    :returns: node -> first pfn of ZONE_MOVABLE; nodes without ZONE_MOVABLE are left out.
    """
    nids = sorted({nid for nid, _, _ in ranges})
    totalpages = sum(e - s for _, s, e in ranges)
    max_pfn = max(e for _, _, e in ranges)
    usable_startpfn = PFN_4G if max_pfn > PFN_4G else PFN_16M
    zone_movable = {nid: 0 for nid in nids}
    required_movable = -(-movablecore_pages // MAX_ORDER_NR_PAGES) * MAX_ORDER_NR_PAGES
    required_movable = min(totalpages, required_movable)
    required_kernelcore = totalpages - required_movable
    if not required_kernelcore or required_kernelcore >= totalpages:
        return {}
    usable_nodes = len(nids)
    while True:
        kernelcore_node = required_kernelcore // usable_nodes
        for nid in nids:
            if required_kernelcore < kernelcore_node:
                kernelcore_node = required_kernelcore // usable_nodes
            remaining = kernelcore_node
            for _, start, end in (r for r in ranges if r[0] == nid):
                start = max(start, zone_movable[nid])
                if start >= end:
                    continue
                if start < usable_startpfn:
                    kernel_pages = min(end, usable_startpfn) - start
                    remaining -= min(kernel_pages, remaining)
                    required_kernelcore -= min(kernel_pages, required_kernelcore)
                    if end <= usable_startpfn:
                        zone_movable[nid] = end
                        continue
                    start = usable_startpfn
                size = min(end - start, remaining)
                zone_movable[nid] = start + size
                required_kernelcore -= min(required_kernelcore, size)
                remaining -= size
                if not remaining:
                    break
        usable_nodes -= 1
        if not (usable_nodes and required_kernelcore > usable_nodes):
            break
    out = {}
    for nid in nids:
        pfn = -(-zone_movable[nid] // MAX_ORDER_NR_PAGES) * MAX_ORDER_NR_PAGES
        node_end = max(e for n, _, e in ranges if n == nid)
        if pfn < node_end:
            out[nid] = pfn
    return out


def _movable_ranges(
    ranges: list[tuple[int, int, int]], starts: dict[int, int]
) -> list[tuple[int, int, int]]:
    out = []
    for nid, s, e in ranges:
        if nid in starts:
            s = max(s, starts[nid])
            if s < e:
                out.append((nid, s, e))
    return out


def _try_layout(memory_mib: int, nodes: int, size_mib: int) -> tuple[int, int, int] | None:
    """(movablecore MiB, base MiB, node) for an area of ``size_mib`` in ZONE_MOVABLE, or None."""
    ranges = guest_ram_ranges(memory_mib, nodes)
    need = size_mib + 2 * CMA_MARGIN_MIB
    max_pfn = max(e for _, _, e in ranges)
    usable_start = PFN_4G if max_pfn > PFN_4G else PFN_16M
    capable = sum(e - max(s, usable_start) for _, s, e in ranges if e > usable_start)
    capable_mib = capable // PAGES_PER_MIB // ALIGN_MIB * ALIGN_MIB
    target = max(memory_mib // 2, nodes * need)
    target = -(-target // ALIGN_MIB) * ALIGN_MIB
    movable_mib = min(target, capable_mib, memory_mib - KERNELCORE_MIN_MIB) // ALIGN_MIB * ALIGN_MIB
    if movable_mib < need:
        return None
    movable = _movable_ranges(ranges, movable_zone_start_pfns(ranges, movable_mib * PAGES_PER_MIB))
    if not movable:
        return None
    nid, start, end = max(movable, key=lambda r: (r[2] - r[1], r[1]))
    size_pages = size_mib * PAGES_PER_MIB
    if end - start < need * PAGES_PER_MIB:
        return None
    base = start + (end - start - size_pages) // 2
    base = base // MAX_ORDER_NR_PAGES * MAX_ORDER_NR_PAGES
    assert start <= base and base + size_pages <= end
    return movable_mib, base // PAGES_PER_MIB, nid


def cma_in_movable_layout(memory_mib: int, size_mib: int, nodes: int = 1) -> tuple[int, int]:
    """``movablecore`` and ``cma`` base (both MiB) putting one CMA area inside ZONE_MOVABLE.

    ZONE_MOVABLE gets half of RAM (more if the area and its margins need it, never more than
    the highest zone holds nor so much that less than 256 MiB stays for the kernel); the area
    sits in the middle of the largest ZONE_MOVABLE range (the highest node's on a tie), at
    least ``CMA_MARGIN_MIB`` from either end and aligned to 4 MiB as ``cma=SIZE@BASE`` needs.

    :param memory_mib: guest RAM in MiB.
    :param size_mib: CMA area size in MiB (a multiple of 4).
    :param nodes: NUMA nodes.
    :raises BadInput: when the area cannot fit, naming a memory size where it would.
    """
    if size_mib % ALIGN_MIB:
        raise BadInput(
            f"--cma-in-movable {size_mib}M is not a multiple of 4 MiB (CMA areas are aligned "
            f"to MAX_ORDER pages): use {-(-size_mib // ALIGN_MIB) * ALIGN_MIB}M"
        )
    found = _try_layout(memory_mib, nodes, size_mib)
    if found is None:
        hint = ""
        split = ""
        if memory_mib >= Q35_SPLIT_MIB:
            split = (
                " (from 2816 MiB on, q35 puts 2 GiB below 4 GiB and only the RAM above "
                "4 GiB can become ZONE_MOVABLE)"
            )
        step = nodes * 256
        for mem in range(-(-memory_mib // step) * step, 64 * 1024 + 1, step):
            if mem > memory_mib and _try_layout(mem, nodes, size_mib):
                hint = f" --memory {mem}M would fit it, or use a smaller size"
                break
        raise BadInput(
            f"--cma-in-movable {size_mib}M does not fit in ZONE_MOVABLE of a "
            f"{memory_mib} MiB guest with {nodes} node(s): it needs {size_mib} MiB plus "
            f"{CMA_MARGIN_MIB} MiB on each side in one node's ZONE_MOVABLE and "
            f"{KERNELCORE_MIN_MIB} MiB left for the kernel{split};{hint}"
        )
    movable_mib, base_mib, _ = found
    return movable_mib, base_mib


def _memory_mib(opts: VmOptions) -> int:
    mib = _size_mib(opts.memory, "--memory")
    if mib < 256:
        raise BadInput(
            f"--memory {opts.memory} is too small to boot the host's userspace: use at least 512M"
        )
    return mib


def kernel_cmdline(opts: VmOptions) -> list[str]:
    """Kernel command-line words for the layout presets in ``opts``, then ``opts.append``.

    ``--cma SIZE`` gives ``cma=SIZE``. ``--cma-in-movable SIZE`` gives
    ``movablecore=M cma=SIZE@BASE nokaslr`` from :func:`cma_in_movable_layout`: ``nokaslr``
    because a fixed CMA base fails (``-EBUSY``) when physical KASLR happens to load the kernel
    image there. ``--cma-pernuma SIZE`` gives ``cma_pernuma=SIZE`` and ``--hugetlb-cma SIZE``
    gives ``hugetlb_cma=SIZE``.

    :raises BadInput: on conflicting presets, or an ``--append`` word that a preset sets.
    """
    if opts.cma and opts.cma_in_movable:
        raise BadInput("--cma and --cma-in-movable both set cma=: give one of them")
    if opts.numa < 1:
        raise BadInput(f"--numa {opts.numa}: give 1 or more nodes")
    words: list[str] = []
    memory_mib = _memory_mib(opts)
    guest_ram_ranges(memory_mib, opts.numa)  # validates the node split
    if opts.cma:
        words.append(f"cma={_size_mib(opts.cma, '--cma', None)}M")
    if opts.cma_in_movable:
        size_mib = _size_mib(opts.cma_in_movable, "--cma-in-movable", None)
        movable_mib, base_mib = cma_in_movable_layout(memory_mib, size_mib, opts.numa)
        words += [f"movablecore={movable_mib}M", f"cma={size_mib}M@{base_mib}M", "nokaslr"]
    if opts.cma_pernuma:
        words.append(f"cma_pernuma={_size_mib(opts.cma_pernuma, '--cma-pernuma', None)}M")
    if opts.hugetlb_cma:
        words.append(f"hugetlb_cma={_size_mib(opts.hugetlb_cma, '--hugetlb-cma', None)}M")
    user: list[str] = []
    for item in opts.append:
        try:
            user += shlex.split(item)
        except ValueError as exc:
            raise BadInput(f"--append {item!r}: {exc}") from None
    preset_keys = {w.split("=", 1)[0] for w in words}
    for word in user:
        key = word.split("=", 1)[0]
        if key in preset_keys:
            raise BadInput(
                f"--append {word} conflicts with the layout preset that sets "
                f"{key}= ({' '.join(words)}): drop one of them"
            )
    return words + user


# --------------------------------------------------------------------------- host checks


def shared_test_kernels() -> list[Path]:
    """The ``../shared/kernels/bzImage-*-cma`` beside the repository root, oldest first."""
    kdir = Path(__file__).resolve().parents[1].parent / "shared" / "kernels"
    return sorted(kdir.glob("bzImage-*-cma"), key=lambda p: _version_key(p.name))


def default_test_kernel() -> Path | None:
    """``$CMAPROF_TEST_KERNEL``, else the newest ``../shared/kernels/bzImage-*-cma`` beside
    the repository root, else None."""
    env = os.environ.get("CMAPROF_TEST_KERNEL")
    if env:
        return Path(env)
    found = shared_test_kernels()
    return found[-1] if found else None


def kernel_version(kernel: Path) -> str:
    """``6.12.118`` of ``bzImage-6.12.118-cma`` (the file name without its affixes)."""
    name = kernel.name
    for affix in ("bzImage-", "vmlinuz-"):
        name = name.removeprefix(affix)
    return name.removesuffix("-cma")


def _version_key(name: str) -> list[tuple[int, object]]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name)]


def _find_vng() -> Path:
    here = Path(sys.executable).parent / "vng"
    if here.exists():
        return here
    found = shutil.which("vng")
    if found:
        return Path(found)
    raise EnvironmentProblem(
        "virtme-ng (vng) is not installed: pip install 'cmaprof[vm]' "
        "(virtme-ng from PyPI) in this environment"
    )


def _check_host(opts: VmOptions) -> Path:
    if not opts.command:
        raise BadInput("no command to run in the guest: cmaprof vm run [OPTIONS] -- COMMAND ...")
    if not opts.kernel.is_file():
        raise BadInput(
            f"kernel {opts.kernel} does not exist: give --kernel BZIMAGE "
            "(scripts/build-test-kernel.sh builds a CMA test kernel)"
        )
    opts.kernel = _shareable(opts.kernel, "--kernel")
    if shutil.which("qemu-system-x86_64") is None:
        raise EnvironmentProblem(
            "qemu-system-x86_64 is not installed: apt-get install qemu-system-x86"
        )
    if opts.kvm not in ("auto", "on", "off"):
        raise BadInput(f"--kvm {opts.kvm}: use auto, on or off")
    if opts.cpus < 1:
        raise BadInput(f"--cpus {opts.cpus}: give 1 or more")
    if opts.timeout_s <= 0:
        raise BadInput(f"--timeout {opts.timeout_s}: give a positive number of seconds")
    return _find_vng()


def _shareable(path: Path, what: str) -> Path:
    """An absolute path vng can pass on: it builds a shell string from --rwdir unquoted."""
    path = path.expanduser().resolve()
    if not _SAFE_PATH.match(str(path)) or str(path) == "/":
        raise BadInput(
            f"{what} {str(path)!r} cannot be shared with the guest (virtme-ng passes "
            "it through a shell and reads '=' as guest=host): use a directory whose "
            "path has only letters, digits and ._+-@%,:/"
        )
    return path


def _kvm_usable() -> str | None:
    """None when /dev/kvm opens read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror}"
    os.close(fd)
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "cmaprof"


def _kernel_sha256(kernel: Path) -> str:
    h = hashlib.sha256()
    with open(kernel, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _kvm_memory() -> dict[str, dict[str, str]]:
    try:
        data = json.loads((_cache_dir() / "kvm.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember_kvm_failure(sha: str, kernel: Path, reason: str) -> None:
    data = _kvm_memory()
    data[sha] = {
        "kvm": "fails",
        "kernel": str(kernel),
        "reason": reason,
        "seen": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = _cache_dir() / "kvm.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # only a speed-up for the next run


# --------------------------------------------------------------------------- guest script

_GUEST_SCRIPT = """\
#!/bin/sh
# Written by cmaprof vm run; runs one command in the guest. The host reads $ctl.
ctl={ctl}
export PATH={path}
export PYTHONDONTWRITEBYTECODE=1
{env}
grep -qs ' /sys/kernel/debug ' /proc/mounts ||
    mount -t debugfs debugfs /sys/kernel/debug 2>>"$ctl/wrapper.err"
grep -qs ' /sys/kernel/tracing ' /proc/mounts ||
    mount -t tracefs tracefs /sys/kernel/tracing 2>>"$ctl/wrapper.err"
{{
    echo "release $(uname -r)"
    echo "uptime $(cut -d' ' -f1 /proc/uptime)"
    for a in /sys/kernel/mm/cma/*; do
        [ -d "$a" ] || continue
        n=${{a##*/}}
        echo "cma $n $(cat "/sys/kernel/debug/cma/$n/count" 2>/dev/null || echo '?')"
    done
    awk '/^Node/ {{ z = $2 " " $4 }} /^ +cma / {{ print "zone " z " " $2 }}' /proc/zoneinfo
}} >"$ctl/boot.tmp" 2>>"$ctl/wrapper.err"
mv "$ctl/boot.tmp" "$ctl/boot"
cd {cwd} 2>/dev/null || cd /
{command} >"$ctl/stdout" 2>"$ctl/stderr" </dev/null
echo $? >"$ctl/status.tmp"
sync
mv "$ctl/status.tmp" "$ctl/status"
sync
"""


def _guest_script(ctl: Path, command: list[str]) -> str:
    path = [str(Path(sys.executable).parent)]
    path += os.environ.get("PATH", "").split(os.pathsep)
    path += ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    path = [p for p in dict.fromkeys(path) if p]
    env = "\n".join(
        f"export {k}={shlex.quote(v)}"
        for k, v in sorted(os.environ.items())
        if k.startswith("CMAPROF_") and re.fullmatch(r"[A-Z0-9_]+", k)
    )
    return _GUEST_SCRIPT.format(
        ctl=shlex.quote(str(ctl)),
        path=shlex.quote(":".join(path)),
        env=env,
        cwd=shlex.quote(os.getcwd()),
        command=shlex.join(command),
    )


# --------------------------------------------------------------------------- running


@dataclass
class _Boot:
    """What one QEMU launch did."""

    returncode: int | None = None
    status: int | None = None
    boot: dict[str, object] | None = None
    timed_out: bool = False
    kvm_slow: bool = False
    read_only_hit: bool = False
    seconds: float = 0.0


class _Tail:
    """Copy a file that the guest appends to, as it grows."""

    def __init__(self, path: Path, sink: BinaryIO) -> None:
        self.path, self.sink, self.pos = path, sink, 0
        self.read_only_hit = False  # "Read-only file system" seen in the output

    def pump(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            self.pos += len(data)
            self.read_only_hit |= b"Read-only file system" in data
            self.sink.write(data)
            self.sink.flush()


def _parse_boot(text: str) -> dict[str, object]:
    info: dict[str, object] = {"cma": {}, "zones": {}}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key == "release":
            info["release"] = rest
        elif key == "uptime":
            info["uptime"] = rest
        elif key == "cma":
            name, _, count = rest.partition(" ")
            info["cma"][name] = int(count) if count.isdigit() else None  # type: ignore[index]
        elif key == "zone":
            m = re.match(r"(\d+), (\S+) (\d+)$", rest)
            if m:
                info["zones"][f"{m.group(1)}:{m.group(2)}"] = int(m.group(3))  # type: ignore[index]
    return info


def fmt_elapsed(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour), for progress lines."""
    s = int(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def progress_line(phase: str, elapsed_s: float, timeout_s: float | None = None) -> str:
    """One heartbeat: what the guest is doing and for how long, e.g. ``cmaprof: vm:
    running cmaprof record ... (4:05 elapsed, killed at 15:00)``."""
    limit = f", killed at {fmt_elapsed(timeout_s)}" if timeout_s else ""
    return f"cmaprof: vm: {phase} ({fmt_elapsed(elapsed_s)} elapsed{limit})"


def _phase(opts: VmOptions, booted: bool) -> str:
    if not booted:
        return "booting the guest"
    cmd = shlex.join(opts.command)
    cmd = cmd if len(cmd) <= 40 else cmd[:37] + "..."
    if "record" in opts.command:
        return f"running {cmd}; BCC compiles the probes first (minutes under TCG)"
    return f"running {cmd}"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP while a guest runs: unwind like Ctrl-C, so the guest is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """vng runs in its own session (so it can be killed as a group): a SIGTERM or SIGHUP
    to us must unwind through _launch()'s finally, or the guest outlives us."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop vng, virtme-run and QEMU: the process group this module started."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    # QEMU may outlive vng for a moment; the group id is still ours.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _vng_argv(
    vng: Path, opts: VmOptions, cmdline: list[str], ctl: Path, use_kvm: bool
) -> list[str]:
    memory_mib = _memory_mib(opts)
    argv = [
        str(vng),
        "--run",
        str(opts.kernel.resolve()),
        "--verbose",
        "--force-9p",
        "--disable-microvm",
        "--name",
        "cmaprof-vm",
        "--memory",
        f"{memory_mib}M",
        "--cpus",
        str(opts.cpus),
    ]
    if not use_kvm:
        argv.append("--disable-kvm")
    if opts.numa > 1:
        per_node = memory_mib // opts.numa
        for nid in range(opts.numa):
            lo, hi = nid * opts.cpus // opts.numa, (nid + 1) * opts.cpus // opts.numa
            cpus = f",cpus={lo}-{hi - 1}" if hi > lo else ""
            argv += ["--numa", f"{per_node}M{cpus}"]
    home = Path(os.path.expanduser("~"))
    if home.is_dir() and _SAFE_PATH.match(str(home)) and str(home) != "/":
        argv += ["--overlay-rwdir", str(home)]
    argv += ["--rwdir", str(ctl)]
    if opts.out is not None:
        argv += ["--rwdir", str(opts.out)]
    for word in cmdline:
        argv += ["--append", word]
    argv += ["--exec", f"/bin/sh {ctl}/run.sh"]
    return argv


def _launch(
    argv: list[str],
    ctl: Path,
    log: Path,
    opts: VmOptions,
    use_kvm: bool,
    stdout: BinaryIO,
    stderr: BinaryIO,
    on_boot,
) -> _Boot:
    env = dict(os.environ)
    env["PATH"] = f"{Path(argv[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    result = _Boot()
    t0 = time.monotonic()
    with open(log, "ab") as logf:
        logf.write(f"### cmaprof vm run: {shlex.join(argv)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

        def copy_console() -> None:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            try:
                while True:
                    data = os.read(fd, 65536)
                    if not data:
                        break
                    logf.write(data)
                    logf.flush()
            except (OSError, ValueError):
                pass  # the log was closed: a process kept the pipe open past QEMU

        reader = threading.Thread(target=copy_console, name="vm-console", daemon=True)
        reader.start()
        tails = [_Tail(ctl / "stdout", stdout), _Tail(ctl / "stderr", stderr)]
        last_output = t0  # heartbeat only while the guest is silent
        try:
            while True:
                before = [t.pos for t in tails]
                for t in tails:
                    t.pump()
                now = time.monotonic()
                if [t.pos for t in tails] != before:
                    last_output = now
                elif now - last_output >= HEARTBEAT_S:
                    line = progress_line(
                        _phase(opts, result.boot is not None), now - t0, opts.timeout_s
                    )
                    stderr.write((line + "\n").encode())
                    stderr.flush()
                    last_output = now
                if result.boot is None and (ctl / "boot").exists():
                    result.boot = _parse_boot((ctl / "boot").read_text(errors="replace"))
                    result.boot["host_seconds"] = time.monotonic() - t0
                    on_boot(result.boot)
                if proc.poll() is not None:
                    break
                elapsed = time.monotonic() - t0
                if elapsed > opts.timeout_s:
                    result.timed_out = True
                    _kill_group(proc)
                    break
                if use_kvm and result.boot is None and elapsed > KVM_BOOT_LIMIT_S:
                    result.kvm_slow = True
                    _kill_group(proc)
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            result.returncode = proc.wait()
            reader.join(timeout=10)
            for t in tails:
                t.pump()
    result.read_only_hit = any(t.read_only_hit for t in tails)
    result.seconds = time.monotonic() - t0
    try:
        result.status = int((ctl / "status").read_text().strip())
    except (OSError, ValueError):
        result.status = None
    return result


def _console_lines(log: Path) -> list[str]:
    try:
        return log.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _quote(lines: list[str], limit: int = 10) -> str:
    picked = [line.strip() for line in lines if _CONSOLE_INTEREST.search(line)]
    if not picked:
        picked = [line.strip() for line in lines[-limit:] if line.strip()]
    picked = picked[:limit]
    return "\n".join(f"    {line[:200]}" for line in picked)


def _failure(result: _Boot, log: Path, opts: VmOptions) -> GuestFailure:
    lines = [line for line in _console_lines(log) if not line.startswith("### cmaprof")]
    keep = f"full console log kept at {log}"
    first = next(
        (i for i, line in enumerate(lines) if _OOPS.search(line) or _PANIC.search(line)), None
    )
    if first is not None and any(_PANIC.search(line) for line in lines):
        return GuestFailure(
            "the guest kernel panicked before the command finished "
            f"(no exit status came back):\n{_quote(lines[max(0, first - 3) :])}"
            f"\n  {keep}"
        )
    if result.timed_out:
        what = "an Oops, then " if first is not None else ""
        tail = lines[first:] if first is not None else lines[-10:]
        return GuestFailure(
            f"the guest did not finish within --timeout {opts.timeout_s:g} s ({what}a hang?); "
            f"QEMU was stopped. Console:\n{_quote(tail)}\n  {keep}; raise --timeout if the "
            "command needs longer"
        )
    if first is not None:
        return GuestFailure(
            "the guest kernel oopsed and the command did not finish "
            f"(no exit status came back):\n{_quote(lines[max(0, first - 3) :])}"
            f"\n  {keep}"
        )
    if result.boot is None:
        return GuestFailure(
            f"QEMU/virtme-ng stopped (exit status {result.returncode}) before the guest ran "
            f"the command:\n{_quote(lines[-15:])}\n  {keep}"
        )
    return GuestFailure(
        "the guest stopped before the command's exit status was written (did the command "
        f"power the guest off, or did the OOM killer end it?):\n{_quote(lines[-15:])}\n  {keep}"
    )


def _kvm_reason(log: Path) -> str:
    lines = [
        line.strip()
        for line in _console_lines(log)
        if "qemu-system" in line or "kvm" in line.lower()
    ]
    lines = [line for line in lines if not line.startswith("### cmaprof")]
    return lines[0] if lines else "QEMU stopped before the guest started"


def _log_path(opts: VmOptions) -> Path:
    log_dir = opts.log_dir if opts.log_dir is not None else _cache_dir() / "vm-logs"
    log_dir = log_dir.expanduser().resolve()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot create the log directory {log_dir}: {exc.strerror}; give --log-dir DIR"
        ) from None
    if opts.log_dir is None:  # our own cache: keep the 50 newest
        old = sorted(log_dir.glob("console-*.log"), key=lambda p: p.stat().st_mtime)
        for p in old[:-49]:
            p.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return log_dir / f"console-{stamp}-{os.getpid()}.log"


def _summary(
    boot: dict[str, object], accel: str, opts: VmOptions, cmdline: list[str], log: Path
) -> tuple[str, list[str]]:
    """The one-line boot summary and warnings about presets the kernel did not honour."""
    areas: dict[str, int | None] = boot.get("cma", {})  # type: ignore[assignment]
    zones: dict[str, int] = boot.get("zones", {})  # type: ignore[assignment]
    desc = []
    for name, count in areas.items():
        desc.append(f"{name} {count * PAGE_SIZE // MIB} MiB" if count else name)
    where = [
        f"{z.split(':', 1)[1]}{'' if opts.numa == 1 else '@' + z.split(':', 1)[0]}"
        for z, n in zones.items()
        if n
    ]
    cma = f"CMA: {', '.join(desc)} in {'/'.join(where) or '?'}" if desc else "CMA: none"
    line = (
        f"cmaprof: vm: Linux {boot.get('release', '?')} ready in "
        f"{boot.get('host_seconds', 0.0):.1f} s ({accel}, {opts.cpus} CPUs, "
        f"{_memory_mib(opts)} MiB, {opts.numa} node{'s' if opts.numa > 1 else ''}; {cma}); "
        f"console log: {log}"
    )
    warnings = []
    want_default = any(w.startswith("cma=") for w in cmdline)
    if want_default and "reserved" not in areas:
        warnings.append(
            f"the kernel created no 'reserved' CMA area for cma= (see the 'cma:' lines in {log})"
        )
    if opts.cma_in_movable and "reserved" in areas:
        size_pages = _size_mib(opts.cma_in_movable, "--cma-in-movable", None) * PAGES_PER_MIB
        in_movable = sum(n for z, n in zones.items() if z.endswith(":Movable"))
        if in_movable < size_pages:
            warnings.append(
                f"only {in_movable} of {size_pages} CMA pages are in ZONE_MOVABLE "
                "(/proc/zoneinfo): the layout model does not match this machine"
            )
    if opts.cma_pernuma and not any(a.startswith("pernuma") for a in areas):
        warnings.append(
            "the kernel ignored cma_pernuma= (no pernuma* CMA areas): in v6.1 "
            "only arm64 calls dma_pernuma_cma_reserve(), x86 does since "
            '"dma-contiguous: support numa CMA for specified node" (2023). '
            "For per-node areas on this kernel use --hugetlb-cma SIZE "
            "(1 GiB per node)"
        )
    if opts.hugetlb_cma and not any(a.startswith("hugetlb") for a in areas):
        warnings.append(
            "the kernel created no hugetlb* CMA areas for hugetlb_cma= (each node "
            "needs at least 1 GiB, and the CPU needs 1 GiB pages)"
        )
    return line, [f"cmaprof: vm: warning: {w}" for w in warnings]


def run(opts: VmOptions, stdout: BinaryIO | None = None, stderr: BinaryIO | None = None) -> int:
    """Boot ``opts.kernel`` and run ``opts.command`` inside; its exit status.

    The command's stdout and stderr are copied to ``stdout``/``stderr`` (default: ours) while
    it runs; a boot summary and warnings go to ``stderr``.

    :raises GuestFailure: the guest panicked, oopsed, hung past ``timeout_s`` or QEMU failed.
    :raises BadInput: a bad option.
    :raises EnvironmentProblem: QEMU, virtme-ng or /dev/kvm (``kvm="on"``) missing.
    """
    out_b = stdout if stdout is not None else sys.stdout.buffer
    err_b = stderr if stderr is not None else sys.stderr.buffer
    vng = _check_host(opts)
    cmdline = kernel_cmdline(opts)
    if opts.out is not None:
        opts.out = _shareable(opts.out, "--out")
        opts.out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        err_b.write((text + "\n").encode())
        err_b.flush()

    use_kvm = False
    sha = ""
    if opts.kvm != "off":
        why_not = _kvm_usable()
        if opts.kvm == "on" and why_not:
            raise EnvironmentProblem(
                f"--kvm on, but KVM is not usable ({why_not}): use --kvm off or auto"
            )
        sha = _kernel_sha256(opts.kernel)
        known = _kvm_memory().get(sha)
        if opts.kvm == "on" or why_not is None and known is None:
            use_kvm = True
        elif why_not is None and known is not None:
            say(
                f"cmaprof: vm: KVM could not boot this kernel before ({known.get('reason', '?')}; "
                f"{_cache_dir() / 'kvm.json'}): using TCG (slower)"
            )

    tmp_root = os.environ.get("TMPDIR", "/tmp")
    if not _SAFE_PATH.match(tmp_root) or not os.path.isdir(tmp_root):
        tmp_root = "/tmp"
    log = _log_path(opts)
    while True:
        ctl = Path(tempfile.mkdtemp(prefix="cmaprof-vm-", dir=tmp_root))
        try:
            (ctl / "run.sh").write_text(_guest_script(ctl, opts.command))
            accel = "KVM" if use_kvm else "TCG"
            say(
                f"cmaprof: vm: booting {opts.kernel.name} under {accel} ({opts.memory}, "
                f"{opts.cpus} CPUs), then running {shlex.join(opts.command)[:60]}; a heartbeat "
                f"every {HEARTBEAT_S:g} s while the guest is silent"
            )

            def on_boot(boot: dict[str, object], accel: str = accel) -> None:
                line, warnings = _summary(boot, accel, opts, cmdline, log)
                say(line)
                for w in warnings:
                    say(w)

            with _signals_unwind():
                result = _launch(
                    _vng_argv(vng, opts, cmdline, ctl, use_kvm),
                    ctl,
                    log,
                    opts,
                    use_kvm,
                    out_b,
                    err_b,
                    on_boot,
                )
        finally:
            shutil.rmtree(ctl, ignore_errors=True)
        if result.status is not None:
            lines = _console_lines(log)
            oops = [line for line in lines if _OOPS.search(line)]
            if oops:
                say(
                    "cmaprof: vm: warning: the guest kernel reported an Oops/BUG while the "
                    f"command ran:\n{_quote(oops, 3)}\n  full console log kept at {log}"
                )
            if result.status and result.read_only_hit:
                say(
                    "cmaprof: vm: hint: the host's files are read-only in the guest (only /tmp, "
                    "/etc, /usr, /var, /home, /root, /opt and /srv take writes, which vanish "
                    "with it): write results under --out DIR"
                )
            return result.status
        kvm_failed = (
            use_kvm
            and result.boot is None
            and not result.timed_out
            and not any(_PANIC.search(line) for line in _console_lines(log))
        )
        if kvm_failed:
            reason = (
                f"no guest after {KVM_BOOT_LIMIT_S:g} s" if result.kvm_slow else _kvm_reason(log)
            )
            if opts.kvm == "on":
                raise GuestFailure(
                    f"KVM could not boot this kernel ({reason}): use --kvm auto "
                    f"or off; full console log kept at {log}"
                )
            say(
                f"cmaprof: vm: KVM could not boot this kernel ({reason}); "
                "falling back to TCG (slower)"
            )
            _remember_kvm_failure(sha, opts.kernel.resolve(), reason)
            use_kvm = False
            with open(log, "ab") as logf:
                logf.write(b"\n### cmaprof vm run: retrying under TCG\n")
            continue
        raise _failure(result, log, opts)


# --------------------------------------------------------------------------- CLI


@click.group()
def vm() -> None:
    """Boot a kernel under test in QEMU (virtme-ng) and run commands in it."""


@vm.command("run", context_settings={"allow_interspersed_args": False})
@click.option(
    "--kernel",
    type=click.Path(path_type=Path),
    help="bzImage to boot [default: $CMAPROF_TEST_KERNEL, else the newest "
    "../shared/kernels/bzImage-*-cma]",
)
@click.option("--memory", default="2G", show_default=True, help="guest RAM (QEMU -m)")
@click.option("--cpus", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--numa",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="NUMA nodes, RAM split evenly",
)
@click.option("--append", multiple=True, help="kernel command-line words (repeatable)")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="host directory shared read-write, at the same path inside",
)
@click.option("--cma", metavar="SIZE", help="cma=SIZE: one area, stock placement")
@click.option(
    "--cma-in-movable",
    metavar="SIZE",
    help="one CMA area inside ZONE_MOVABLE (movablecore= plus a computed cma base)",
)
@click.option(
    "--cma-pernuma",
    metavar="SIZE",
    help="cma_pernuma=SIZE: an area per node (x86 6.1 ignores it: see the warning)",
)
@click.option(
    "--hugetlb-cma", metavar="SIZE", help="hugetlb_cma=SIZE: per-node areas for 1 GiB pages"
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="seconds before a hung guest is killed",
)
@click.option(
    "--kvm",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="auto: KVM when it works, else TCG",
)
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="where the console log is kept [default: ~/.cache/cmaprof/vm-logs]",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(
    kernel: Path | None,
    memory: str,
    cpus: int,
    numa: int,
    append: tuple[str, ...],
    out: Path | None,
    cma: str | None,
    cma_in_movable: str | None,
    cma_pernuma: str | None,
    hugetlb_cma: str | None,
    timeout_s: float,
    kvm: str,
    log_dir: Path | None,
    command: tuple[str, ...],
) -> None:
    """Boot a kernel with the host's root file system and run COMMAND inside.

    The exit status is COMMAND's; a panic, Oops, hang or QEMU failure is an error (status
    125) quoting the console, whose full log is kept.

    \b
    Examples:
      cmaprof vm run --cma 256M -- cat /sys/kernel/debug/cma/reserved/count
      cmaprof vm run --cma-in-movable 256M --out /tmp/rec -- \\
          cmaprof record -o /tmp/rec/x -- cmaprof workload anon:512
    """
    if kernel is None:
        kernel = default_test_kernel()
        if kernel is None:
            raise BadInput(
                "no kernel to boot: give --kernel BZIMAGE or set "
                "CMAPROF_TEST_KERNEL (scripts/build-test-kernel.sh builds one)"
            )
    opts = VmOptions(
        kernel=kernel,
        memory=memory,
        cpus=cpus,
        numa=numa,
        append=list(append),
        out=out,
        cma=cma,
        cma_in_movable=cma_in_movable,
        cma_pernuma=cma_pernuma,
        hugetlb_cma=hugetlb_cma,
        timeout_s=timeout_s,
        kvm=kvm,
        command=list(command),
        log_dir=log_dir,
    )
    sys.exit(run(opts))
