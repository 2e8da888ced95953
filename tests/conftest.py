"""Shared test set-up: live/vm markers, and skips that become failures under CI.

With ``CMAPROF_REQUIRE_LIVE=1`` (set by ``make test`` and CI) a live or vm test that
skips is reported as a failure with the skip's reason: CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
STRICT = os.environ.get("CMAPROF_REQUIRE_LIVE") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and any(item.iter_markers(m) for m in ("live", "vm")):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CMAPROF_REQUIRE_LIVE=1 forbids skipping {item.nodeid}: {reason}"


def cmaprof_cmd() -> list[str]:
    """How tests run the CLI: the installed script next to this interpreter."""
    script = Path(sys.executable).with_name("cmaprof")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cmaprof"]


def run_cli(*args: str, check: bool = False, **kw: object) -> subprocess.CompletedProcess:
    """Run the CLI; a crash (SIGABRT, SIGSEGV) prints its Python stacks (faulthandler)."""
    env = dict(kw.pop("env", None) or os.environ)  # type: ignore[call-overload]
    env.setdefault("PYTHONFAULTHANDLER", "1")
    kw["env"] = env
    return subprocess.run(
        cmaprof_cmd() + list(args), capture_output=True, text=True, check=check, **kw
    )  # type: ignore[call-overload]


def start_record(out: Path, *args: str, timeout_s: float = 120) -> subprocess.Popen:
    """``cmaprof record -o OUT ARGS...`` started in the background, returned once its
    metadata says counting is on (stderr piped; the test stops it with SIGINT)."""
    import json
    import time

    proc = subprocess.Popen(
        cmaprof_cmd() + ["record", "-o", str(out), *args], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout_s
    meta = out / "metadata.json"
    while time.monotonic() < deadline and proc.poll() is None:
        if meta.exists() and json.loads(meta.read_text()).get("counting_started"):
            return proc
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"cmaprof record {' '.join(args)} did not start counting: {proc.communicate()[1]}")


@pytest.fixture
def cli():
    return run_cli


def live_reason() -> str | None:
    """Why live BPF tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (BPF programs and tracefs)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC python bindings missing (apt-get install python3-bpfcc)"
    if shutil.which("mount") is None:
        return "no mount(8)"
    return None
