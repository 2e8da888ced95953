"""Layout presets of `cmaprof vm run`: the q35 memory model and the kernel command line.

Expected values marked "seen" were read from real guests of the shared 6.1 kernel
(/proc/zoneinfo start_pfn, /sys/kernel/debug/cma/*/base_pfn, ACPI SRAT lines in dmesg).
"""

import itertools
from pathlib import Path

import pytest

from cmaprof.errors import BadInput
from cmaprof.guest import default_test_kernel
from cmaprof.guest.layout import (
    KERNELCORE_MIN_MIB,
    PFN_4G,
    VmOptions,
    cma_in_movable_layout,
    guest_ram_ranges,
    kernel_cmdline,
    movable_zone_start_pfns,
    parse_size,
)

K = Path("/nonexistent/bzImage")


def cmdline(**kw):
    return kernel_cmdline(VmOptions(kernel=K, **kw))


def test_ram_below_the_q35_split_is_all_low():
    # seen: e820 usable 0x1000-0x9fbff, 0x100000-0x7ffdefff for a 2 GiB guest
    assert guest_ram_ranges(2048) == [(0, 1, 0x9F), (0, 0x100, 0x80000 - 33)]


def test_ram_from_2816_mib_on_is_split_around_the_pci_hole():
    # seen: 3 GiB guest, System RAM 0x100000-0x7ffdefff and 0x100000000-0x13fffffff
    assert guest_ram_ranges(3072) == [
        (0, 1, 0x9F),
        (0, 0x100, 0x80000 - 33),
        (0, PFN_4G, PFN_4G + 0x40000),
    ]
    assert guest_ram_ranges(2815)[-1][2] < PFN_4G
    assert guest_ram_ranges(2816)[-1] == (0, PFN_4G, PFN_4G + 768 * 256)


def test_numa_nodes_follow_qemu_srat():
    # seen: SRAT Node 0 [0-0x7fffffff], Node 1 [0x100000000-0x17fffffff] for 4G, 2 nodes
    assert [(n, s, e) for n, s, e in guest_ram_ranges(4096, 2)] == [
        (0, 1, 0x9F),
        (0, 0x100, 0x80000 - 33),
        (1, PFN_4G, PFN_4G + 0x80000),
    ]
    nodes = guest_ram_ranges(2048, 2)
    assert {n for n, _, _ in nodes} == {0, 1}
    assert next(r for r in nodes if r[0] == 1)[1] == 1024 * 256


@pytest.mark.parametrize(
    "memory,movablecore,start_pfn",
    [
        (2048, 1024, 262144),  # seen: zone Movable start_pfn 262144
        (3072, 1024, 1048576),  # seen: zone Movable start_pfn 1048576 (all RAM above 4 GiB)
    ],
)
def test_movable_zone_start_matches_the_kernel(memory, movablecore, start_pfn):
    ranges = guest_ram_ranges(memory)
    assert movable_zone_start_pfns(ranges, movablecore * 256) == {0: start_pfn}


def test_brief_verified_layout_lies_in_movable():
    # seen: movablecore=1G cma=256M@1600M on 2G gives zone Movable cma 65536
    start = movable_zone_start_pfns(guest_ram_ranges(2048), 1024 * 256)[0]
    assert start <= 1600 * 256 and (1600 + 256) * 256 <= 0x80000 - 33


def test_cma_preset():
    assert cmdline(cma="256M") == ["cma=256M"]
    assert cmdline(cma="1G") == ["cma=1024M"]


@pytest.mark.parametrize(
    "memory,expected",
    [
        ("2G", ["movablecore=1024M", "cma=256M@1404M", "nokaslr"]),  # booted: 65536 in Movable
        ("3G", ["movablecore=1024M", "cma=256M@4480M", "nokaslr"]),  # booted: 65536 in Movable
        ("1G", ["movablecore=512M", "cma=256M@636M", "nokaslr"]),
        ("4G", ["movablecore=2048M", "cma=256M@4992M", "nokaslr"]),
        ("8G", ["movablecore=4096M", "cma=256M@8064M", "nokaslr"]),
    ],
)
def test_cma_in_movable_preset(memory, expected):
    assert cmdline(memory=memory, cma_in_movable="256M") == expected


@pytest.mark.parametrize(
    "memory,size,nodes",
    [
        (m, s, n)
        for m, s, n in itertools.product(
            [768, 1024, 1536, 2048, 2560, 2812, 2816, 3072, 4096, 6144, 8192, 16384],
            [4, 64, 256, 512, 1024, 2048],
            [1, 2, 4],
        )
        if m % (4 * n) == 0
    ],
)
def test_cma_in_movable_area_always_inside_movable(memory, size, nodes):
    try:
        movable, base = cma_in_movable_layout(memory, size, nodes)
    except BadInput as exc:
        assert "does not fit" in str(exc)
        return
    assert base % 4 == 0 and movable % 4 == 0
    assert memory - movable >= KERNELCORE_MIN_MIB
    ranges = guest_ram_ranges(memory, nodes)
    starts = movable_zone_start_pfns(ranges, movable * 256)
    lo, hi = base * 256, (base + size) * 256
    inside = [
        (n, s, e) for n, s, e in ranges if n in starts and max(s, starts[n]) <= lo and hi <= e
    ]
    assert len(inside) == 1, (ranges, starts, base)
    n, s, e = inside[0]
    assert lo - max(s, starts[n]) >= 60 * 256 and e - hi >= 60 * 256  # margins both sides


def test_too_big_names_a_memory_size_that_fits():
    with pytest.raises(BadInput, match=r"--memory 2560M would fit it"):
        cmdline(memory="2G", cma_in_movable="1G")
    with pytest.raises(BadInput, match=r"q35 puts 2 GiB below 4 GiB"):
        cmdline(memory="2816M", cma_in_movable="1G")


def test_bad_sizes_are_refused():
    with pytest.raises(BadInput, match="multiple of 4 MiB"):
        cmdline(cma_in_movable="6M")
    with pytest.raises(BadInput, match="has no unit"):
        cmdline(cma="256")
    with pytest.raises(BadInput, match="not a size"):
        cmdline(cma="lots")
    with pytest.raises(BadInput, match="NUMA nodes"):
        cmdline(memory="2G", numa=3)
    assert parse_size("2048", "--memory") == 2 << 30
    assert parse_size("1GiB", "--memory") == 1 << 30


def test_conflicts_are_refused():
    with pytest.raises(BadInput, match="give one of them"):
        cmdline(cma="64M", cma_in_movable="256M")
    with pytest.raises(BadInput, match="conflicts with the layout preset"):
        cmdline(cma_in_movable="256M", append=["loglevel=8 movablecore=1G"])


def test_per_node_presets_and_append():
    assert cmdline(
        memory="4G",
        numa=2,
        cma_pernuma="64M",
        hugetlb_cma="2G",
        append=["page_owner=on", "a=1 b='x y'"],
    ) == ["cma_pernuma=64M", "hugetlb_cma=2048M", "page_owner=on", "a=1", "b=x y"]


def test_default_test_kernel_prefers_the_environment(monkeypatch):
    monkeypatch.setenv("CMAPROF_TEST_KERNEL", "/some/bzImage")
    assert default_test_kernel() == Path("/some/bzImage")
    monkeypatch.delenv("CMAPROF_TEST_KERNEL")
    found = default_test_kernel()
    assert found is None or found.name.startswith("bzImage-") and found.name.endswith("-cma")
