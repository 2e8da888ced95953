"""cmaprof vm run's progress on stderr: the lines' form, and a heartbeat from the
launch loop while a (fake, host-side) guest is silent."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from cmaprof.guest import launch as vm


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (5.9, "0:05"), (65, "1:05"), (3600 + 61, "1:01:01")]
)
def test_elapsed(seconds, text):
    assert vm.fmt_elapsed(seconds) == text


def test_progress_line():
    assert (
        vm.progress_line("booting the guest", 42.0, 900.0)
        == "cmaprof: vm: booting the guest (0:42 elapsed, killed at 15:00)"
    )
    assert vm.progress_line("running true", 245.0) == "cmaprof: vm: running true (4:05 elapsed)"


def test_phase_says_what_the_guest_does():
    opts = vm.VmOptions(kernel=Path("bzImage"), command=["cmaprof", "record", "-o", "x"])
    assert vm.phase(opts, booted=False) == "booting the guest"
    assert "BCC compiles the probes" in vm.phase(opts, booted=True)
    long = vm.VmOptions(kernel=Path("bzImage"), command=["sh", "-c", "x" * 80])
    assert len(vm.phase(long, booted=True)) <= len("running ") + 40
    assert "BCC" not in vm.phase(long, booted=True)
    from cmaprof.experiment import GUEST_SCRIPT

    exp = vm.VmOptions(kernel=Path("bzImage"), command=["sh", "-c", GUEST_SCRIPT, "sh", "run"])
    assert "BCC compiles the probes" in vm.phase(exp, booted=True)  # the experiment's script


def test_heartbeat_while_silent(tmp_path, monkeypatch):
    """A 'guest' (sh on the host) silent for 1.2 s with a 0.3 s heartbeat: beats while
    it boots, none after output until silence again."""
    monkeypatch.setattr(vm, "HEARTBEAT_S", 0.3)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    opts = vm.VmOptions(kernel=Path("bzImage"), command=["true"], timeout_s=30)
    out, err = io.BytesIO(), io.BytesIO()
    result = vm.launch(
        ["/bin/sh", "-c", "sleep 1.2"],
        ctl,
        tmp_path / "console.log",
        opts,
        False,
        out,
        err,
        lambda boot: None,
    )
    assert result.returncode == 0
    lines = err.getvalue().decode().splitlines()
    assert 2 <= len(lines) <= 5, lines
    assert all(x.startswith("cmaprof: vm: booting the guest (0:0") for x in lines), lines
    assert all("killed at 0:30" in x for x in lines)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_launch_closes_the_console_pipe(tmp_path, monkeypatch):
    """The read end of the console pipe is closed when launch() returns, not left to the
    garbage collector (it leaked one descriptor per launch): the Popen is kept alive
    here, so only an explicit close frees it."""
    started = []

    class KeptPopen(subprocess.Popen):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            started.append(self)

    monkeypatch.setattr(vm.subprocess, "Popen", KeptPopen)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    opts = vm.VmOptions(kernel=Path("bzImage"), command=["true"], timeout_s=30)
    script = f"echo console line; echo 7 >{ctl}/status"
    before = _open_fds()
    for _ in range(3):
        result = vm.launch(
            ["/bin/sh", "-c", script],
            ctl,
            tmp_path / "console.log",
            opts,
            False,
            io.BytesIO(),
            io.BytesIO(),
            lambda boot: None,
        )
        assert result.status == 7
    assert len(started) == 3 and all(p.stdout.closed for p in started)
    assert _open_fds() == before
    assert (tmp_path / "console.log").read_text().splitlines().count("console line") == 3


def test_a_script_argument_stays_on_the_progress_line():
    """A command with a multi-line script argument (as `cmaprof experiment` runs) is shown
    on one line: a heartbeat is one line of stderr."""
    opts = vm.VmOptions(kernel=Path("bzImage"), command=["sh", "-c", "\nrun=$1\n  x=2\n", "sh"])
    assert vm.phase(opts, booted=True) == "running sh -c ' run=$1 x=2 ' sh"
    line = vm.progress_line(vm.phase(opts, booted=True), 60.0, 900.0)
    assert "\n" not in line
