"""`cmaprof vm run` end to end: status, output, stock CMA, the guest's view of the host.

One guest (--cma 256M) runs every check below and exits 3.
"""

import re

import pytest

import cmaprof

pytestmark = pytest.mark.vm

SCRIPT = r"""
out=$1
echo "hello from the guest's stdout"
echo "hello from the guest's stderr" >&2
uname -r >"$out/uname"
cat /sys/kernel/debug/cma/reserved/count >"$out/cma_count"
grep -E '^cma_alloc_(success|fail) ' /proc/vmstat >"$out/vmstat_cma"
cmaprof --version >"$out/cmaprof_version" 2>&1
grep -E ' (debugfs|tracefs) ' /proc/mounts | cut -d' ' -f2 >"$out/mounts"
if touch /cmaprof-vm-write-test 2>/dev/null; then echo writable; else echo read-only; fi \
    >"$out/root"
if echo x >/tmp/cmaprof-vm-write-test; then echo writable; else echo read-only; fi \
    >"$out/tmp"
exit 3
"""


@pytest.fixture(scope="module")
def guest(vm_boot):
    return vm_boot("run", ["--cma", "256M"], SCRIPT)


def test_exit_status_comes_back(guest):
    assert guest.returncode == 3, guest.stderr


def test_stdout_and_stderr_come_back(guest):
    assert guest.stdout == "hello from the guest's stdout\n"
    assert "hello from the guest's stderr\n" in guest.stderr


def test_one_boot_summary_line(guest):
    summary = [line for line in guest.stderr.splitlines() if line.startswith("cmaprof: vm: Linux ")]
    assert len(summary) == 1, guest.stderr
    assert "reserved 256 MiB" in summary[0]
    assert "warning" not in guest.stderr


def test_cma_area_has_65536_pages(guest):
    assert guest.read("cma_count").strip() == "65536"


def test_vmstat_counts_cma_allocations(guest):
    names = [line.split()[0] for line in guest.read("vmstat_cma").splitlines()]
    assert "cma_alloc_success" in names


def test_guest_runs_the_test_kernel(guest):
    assert re.fullmatch(r"\S+\n", guest.read("uname"))
    assert guest.read("uname").strip() in guest.stderr  # named in the boot summary


def test_cmaprof_runs_inside(guest):
    assert guest.read("cmaprof_version").strip().endswith(cmaprof.__version__)


def test_debugfs_and_tracefs_mounted(guest):
    mounts = guest.read("mounts").split()
    assert "/sys/kernel/debug" in mounts
    assert "/sys/kernel/tracing" in mounts


def test_root_read_only_tmp_writable(guest):
    assert guest.read("root").strip() == "read-only"
    assert guest.read("tmp").strip() == "writable"


def test_console_log_kept(guest):
    logs = guest.logfiles()
    assert len(logs) == 1
    text = logs[0].read_text(errors="replace")
    assert "Linux version" in text
    assert "cma: Reserved 256 MiB" in text
