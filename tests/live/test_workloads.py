"""Workloads on the host kernel (root): loop devices, ext4, clean-up, clear errors.

Checked against the kernel's own view: /proc/self/mountinfo, ``losetup``'s list of
attached devices, /proc/vmstat, /proc/meminfo.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cmaprof import workloads as wl
from tests.conftest import run_cli


def _attached(image_dir: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(image_dir) in line]


def _mounted(path: Path) -> bool:
    return any(
        line.split()[4] == str(path)
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def _vmstat() -> dict[str, int]:
    return {
        k: int(v) for k, v in (ln.split() for ln in Path("/proc/vmstat").read_text().splitlines())
    }


def test_bdev_metadata_stays_mounted_until_the_end_then_cleans_up(tmp_path):
    if not Path("/dev/loop-control").exists():
        pytest.fail("no /dev/loop-control on this host (CONFIG_BLK_DEV_LOOP)")
    before = _vmstat()
    with wl.bdev_metadata(size=32, files=300, seconds=2, dir=str(tmp_path)) as summary:
        (work,) = list(tmp_path.iterdir())
        mnt = work / "mnt"
        assert _mounted(mnt), summary
        assert len(_attached(work)) == 1
        assert any(mnt.joinpath(d).is_dir() for d in os.listdir(mnt) if d.startswith("r"))
        assert "file operations" in summary
    after = _vmstat()
    assert not _mounted(mnt)
    assert _attached(work) == []
    assert list(tmp_path.iterdir()) == []
    # the churn was written through the block layer: the kernel counted page-outs
    assert after["pgpgout"] > before["pgpgout"]


def test_bdev_read_reads_through_the_page_cache(tmp_path):
    before = _vmstat()
    with wl.bdev_read(size=16, dir=str(tmp_path), hold=True) as summary:
        assert summary.startswith("16 MiB read from /dev/loop")
        (work,) = list(tmp_path.iterdir())
    after = _vmstat()
    assert after["pgpgin"] - before["pgpgin"] >= 16 * 1024  # KiB read from block devices
    assert _attached(work) == []
    assert list(tmp_path.iterdir()) == []


def test_workload_command_keeps_state_across_workloads(tmp_path):
    snaps = tmp_path / "snaps"
    proc = run_cli(
        "workload",
        "anon:64,hold=1",
        f"pagecache:8,keep=1,dir={tmp_path}",
        f"snapshot:{snaps},owners=0",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert [ln.split(":")[1].strip() for ln in lines] == ["anon", "pagecache", "snapshot"]
    # taken while the 64 MiB were still mapped: AnonPages at least that much
    meminfo = dict(ln.split(":", 1) for ln in (snaps / "00" / "meminfo").read_text().splitlines())
    assert int(meminfo["AnonPages"].split()[0]) >= 64 * 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snaps"]


def test_no_cma_and_no_hugetlb_cma_are_clear_errors():
    if Path("/sys/kernel/debug/cma").is_dir():
        pytest.skip("this host has CMA debugfs: the no-CMA message cannot be seen here")
    proc = run_cli("workload", "cma-alloc:pages=23")
    assert proc.returncode == 1
    assert proc.stderr.startswith("cmaprof: error: no CMA debugfs at /sys/kernel/debug/cma")
    proc = run_cli("workload", "hugetlb-cma")
    assert proc.returncode == 1 and "cmaprof: error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("workload", "anon:64,colour=red")
    assert proc.returncode == 2 and "unknown parameter 'colour'" in proc.stderr
