"""Memory layout presets of a guest: the q35 memory model, ZONE_MOVABLE and CMA placement,
and the kernel command line that asks for them.

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

import re
import shlex

from cmaprof.errors import BadInput
from cmaprof.guest.options import VmOptions

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


def size_in_mib(text: str, what: str, bare_unit: str | None = "m") -> int:
    """MiB in ``text``, as :func:`parse_size` reads it; a size that is not whole MiB is refused."""
    size = parse_size(text, what, bare_unit)
    if size % MIB:
        raise BadInput(f"{what} {text!r} is not a whole number of MiB")
    return size // MIB


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


def guest_memory_mib(opts: VmOptions) -> int:
    """Guest RAM (``--memory``) in MiB; refused below 256 MiB."""
    mib = size_in_mib(opts.memory, "--memory")
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
    memory_mib = guest_memory_mib(opts)
    guest_ram_ranges(memory_mib, opts.numa)  # validates the node split
    if opts.cma:
        words.append(f"cma={size_in_mib(opts.cma, '--cma', None)}M")
    if opts.cma_in_movable:
        size_mib = size_in_mib(opts.cma_in_movable, "--cma-in-movable", None)
        movable_mib, base_mib = cma_in_movable_layout(memory_mib, size_mib, opts.numa)
        words += [f"movablecore={movable_mib}M", f"cma={size_mib}M@{base_mib}M", "nokaslr"]
    if opts.cma_pernuma:
        words.append(f"cma_pernuma={size_in_mib(opts.cma_pernuma, '--cma-pernuma', None)}M")
    if opts.hugetlb_cma:
        words.append(f"hugetlb_cma={size_in_mib(opts.hugetlb_cma, '--hugetlb-cma', None)}M")
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
