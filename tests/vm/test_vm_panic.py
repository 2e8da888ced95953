"""A guest kernel panic is an error naming the panic and the kept log, never a pass."""

import re
from pathlib import Path

import pytest

from cmaprof.guest import GUEST_FAILURE_EXIT

pytestmark = pytest.mark.vm

SCRIPT = r"""
echo before the crash
echo 1 >/proc/sys/kernel/sysrq
echo c >/proc/sysrq-trigger
echo after the crash
exit 0
"""


@pytest.fixture(scope="module")
def guest(vm_boot):
    return vm_boot("panic", [], SCRIPT)


def test_panic_is_a_failure(guest):
    assert guest.returncode == GUEST_FAILURE_EXIT, guest.stderr


def test_output_before_the_panic_comes_back(guest):
    assert guest.stdout == "before the crash\n"


def test_error_names_the_panic(guest):
    assert "cmaprof: error: the guest kernel panicked" in guest.stderr
    assert "Kernel panic - not syncing: sysrq triggered crash" in guest.stderr


def test_error_names_the_kept_log(guest):
    m = re.search(r"full console log kept at (\S+\.log)", guest.stderr)
    assert m, guest.stderr
    log = Path(m.group(1))
    assert log in guest.logfiles()
    assert "Kernel panic - not syncing" in log.read_text(errors="replace")
