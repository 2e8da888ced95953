"""A start-up that fails for real leaves nothing behind.

* Attach: bpftrace holds all 64 BPF program slots of ``migrate:mm_migrate_pages``
  (BPF_TRACE_MAX_PROGS, kernel/trace/bpf_trace.c), so cmaprof's migrate program cannot
  attach. ``record`` must exit 1 with one error line naming the tracepoint, create no
  directory, leave ``kernel.bpf_stats_enabled`` as it was, and the next ``record -o``
  of the same path must work without ``--force`` once bpftrace is gone.
* Calibration refused (in this process, after the real BPF module was loaded and the
  calibration program attached; only the page faults are taken away): no directory,
  and ``bpftool perf list`` shows no attachment left by this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
SLOTS = 64  # BPF_TRACE_MAX_PROGS


def _perf_list() -> list[dict]:
    proc = subprocess.run(
        ["bpftool", "--json", "perf", "list"], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout or "[]")


def _slots_taken(tp: str) -> int:
    return sum(1 for e in _perf_list() if e.get("tracepoint") == tp)


@contextlib.contextmanager
def _migrate_slots_full(tmp_path: Path) -> Iterator[None]:
    """bpftrace holding every BPF slot of migrate:mm_migrate_pages that is free."""
    before = _slots_taken("mm_migrate_pages")
    script = tmp_path / "fill.bt"
    script.write_text(
        "\n".join(
            f"tracepoint:migrate:mm_migrate_pages {{ @c{i} = count(); }}"
            for i in range(SLOTS - before)
        )
    )
    bt = subprocess.Popen(
        ["bpftrace", str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while _slots_taken("mm_migrate_pages") < SLOTS:
            if bt.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bpftrace did not fill the slots: {bt.communicate()[1]}")
            time.sleep(0.2)
        yield
    finally:
        bt.terminate()
        bt.communicate(timeout=30)


def test_attach_failure_leaves_nothing(tmp_path):
    if shutil.which("bpftrace") is None or shutil.which("bpftool") is None:
        pytest.skip("bpftrace or bpftool not installed (scripts/setup.sh installs them)")
    out = tmp_path / "rec"
    stats = STATS.read_text()
    with _migrate_slots_full(tmp_path):
        proc = run_cli("record", "-o", str(out), "-d", "1")
    assert proc.returncode == 1, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("cmaprof: error:")]
    assert len(errors) == 1, proc.stderr
    assert "migrate:mm_migrate_pages" in errors[0] and "64 BPF programs" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert STATS.read_text() == stats
    assert [e for e in _perf_list() if e.get("pid") == proc.pid] == []
    # bpftrace gone: the same path records, without --force
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
