"""`--cma-in-movable`: the whole CMA area inside ZONE_MOVABLE (a boot of its own)."""

import re

import pytest

from cmaprof.guest import VmOptions, kernel_cmdline

pytestmark = pytest.mark.vm

SCRIPT = r"""
out=$1
cat /proc/zoneinfo >"$out/zoneinfo"
cat /proc/cmdline >"$out/cmdline"
cat /sys/kernel/debug/cma/reserved/base_pfn >"$out/base_pfn"
"""


@pytest.fixture(scope="module")
def guest(vm_boot):
    return vm_boot("movable", ["--memory", "2G", "--cma-in-movable", "256M"], SCRIPT)


def zone_cma(zoneinfo: str) -> dict[str, int]:
    out, zone = {}, None
    for line in zoneinfo.splitlines():
        m = re.match(r"Node (\d+), zone\s+(\S+)", line)
        if m:
            zone = m.group(2)
        m = re.match(r"\s+cma\s+(\d+)$", line)
        if m and zone:
            out[zone] = int(m.group(1))
    return out


def test_exit_status_zero(guest):
    assert guest.returncode == 0, guest.stderr


def test_area_in_movable_zone(guest):
    assert zone_cma(guest.read("zoneinfo")) == {"DMA": 0, "DMA32": 0, "Normal": 0, "Movable": 65536}


def test_cmdline_is_the_preset(guest):
    words = guest.read("cmdline").split()
    preset = kernel_cmdline(VmOptions(kernel=None, memory="2G", cma_in_movable="256M"))
    assert preset == ["movablecore=1024M", "cma=256M@1404M", "nokaslr"]
    assert all(w in words for w in preset)


def test_area_at_the_computed_base(guest):
    assert int(guest.read("base_pfn")) == 1404 * 256


def test_summary_says_movable_without_warning(guest):
    assert "reserved 256 MiB in Movable" in guest.stderr
    assert "warning" not in guest.stderr
