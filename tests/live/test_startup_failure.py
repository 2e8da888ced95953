"""A start-up that fails for real leaves nothing behind.

* Attach: ``record`` under ``prlimit --nofile=20`` runs out of file descriptors while
  BCC attaches (after metadata.json and the format files were written). It must exit 1
  with one error line, leave no directory and ``kernel.bpf_stats_enabled`` as it was,
  and the next ``record -o`` of the same path must work without ``--force``. (Filling
  the 64 BPF slots of a tracepoint with bpftrace fails the same way, but for every
  cmaprof on the host at that moment: not done on a shared test machine.)
* Calibration refused (in this process, after the real BPF module was loaded and the
  calibration program attached; only the page faults are taken away): no directory,
  and ``bpftool perf list`` shows no attachment left by this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cmaprof_cmd, run_cli

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
FDS = 20  # RLIMIT_NOFILE for the failing start


def _perf_list() -> list[dict]:
    proc = subprocess.run(
        ["bpftool", "--json", "perf", "list"], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout or "[]")


def test_attach_failure_leaves_nothing(tmp_path):
    """With 20 file descriptors BCC runs out while attaching (EMFILE, measured: 14
    fail while loading, 28 record): a real failure after start-up wrote its files."""
    out = tmp_path / "rec"
    stats = STATS.read_text()
    proc = subprocess.run(
        ["prlimit", f"--nofile={FDS}", *cmaprof_cmd(), "record", "-o", str(out), "-d", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("cmaprof: error:")]
    assert len(errors) == 1, proc.stderr
    assert "BCC could not" in errors[0], errors[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert STATS.read_text() == stats
    # the same path records, without --force
    proc = run_cli("record", "-o", str(out), "-d", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "metadata.json").read_text())["complete"] is True


def _calibration_refused(mp: pytest.MonkeyPatch, out: Path) -> str:
    from cmaprof.collectors.page_alloc import PageAllocCollector
    from cmaprof.collectors.record import RecordOptions, record
    from cmaprof.errors import EnvironmentProblem

    mp.setattr(PageAllocCollector, "_fault_round", lambda self, fd: [])
    with pytest.raises(EnvironmentProblem) as exc:
        record(RecordOptions(output=out, duration_s=1, probes=["page_alloc", "migrate"]))
    return str(exc.value)


def test_calibration_refusal_detaches_everything(tmp_path, monkeypatch):
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed (scripts/setup.sh installs it)")
    out = tmp_path / "rec"
    stats = STATS.read_text()
    msg = _calibration_refused(monkeypatch, out)
    assert "calibration failed" in msg and "only 0 usable" in msg
    assert not out.exists()
    mine = [e for e in _perf_list() if e.get("pid") == os.getpid()]
    assert mine == [], mine
    assert STATS.read_text() == stats
