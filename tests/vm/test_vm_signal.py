"""A SIGTERM or SIGHUP to `cmaprof vm run` stops its guest: no QEMU outlives the runner.

vng runs in a session of its own (so the runner can kill it as a group); before the
fix, Python's default SIGTERM action ended the runner without running that kill, and
QEMU went on in the background.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.conftest import cmaprof_cmd
from tests.vm.conftest import vm_reason

pytestmark = pytest.mark.vm


def _qemu_with(marker: str) -> list[str]:
    out = subprocess.run(
        ["pgrep", "-af", marker], check=False, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if "qemu-system" in line]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_stops_the_guest(tmp_path, sig, kernel):
    reason = vm_reason(kernel)
    if reason:
        pytest.skip(reason)
    out = tmp_path / f"sig-{sig.name}"
    out.mkdir()
    marker = str(out)
    argv = cmaprof_cmd() + ["vm", "run", "--kernel", str(kernel), "--memory", "512M"]
    argv += ["--out", marker, "--timeout", "600"]
    proc = subprocess.Popen(
        argv + ["--", "sh", "-c", f"touch {marker}/up; sleep 300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (out / "up").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the guest never ran its command"
            time.sleep(0.5)
        assert _qemu_with(marker), "no QEMU found with the --out directory in its arguments"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    time.sleep(1)
    assert _qemu_with(marker) == [], f"QEMU outlived `cmaprof vm run` after {sig.name}"
