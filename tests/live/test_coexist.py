"""``cmaprof record`` beside every other tracer of ``kmem:mm_page_alloc``.

Each of perf record, perf stat, bpftrace and a tracefs instance is attached to
``kmem:mm_page_alloc`` while a page-faulting allocator runs on every CPU; then
``cmaprof record -d 1`` runs ``CMAPROF_COEXIST_RUNS`` times beside each
(default 1) and ``CMAPROF_COEXIST_ALL_RUNS`` times (default 3) beside all of them at
once. Issue 13 asks for 5 and 20: ``CMAPROF_COEXIST_RUNS=5 CMAPROF_COEXIST_ALL_RUNS=20``
runs that (each run takes 5-25 s on the shared 2-CPU host). trace-cmd record is not
among them: on this host it cannot write /proc/sys/kernel/ftrace_enabled (EPERM, even
as root) and exits "Can't enable ftrace"; what it does to the tracepoint (enable the
ftrace event, read the ring buffer) is what the tracefs instance does.

Every run must succeed and agree with /proc/vmstat's pgalloc_* within 1% in every zone
with at least 10000 pages (``report``'s check rows: the kernel's counters, not ours).
With the calibration that paired classic and raw mm_page_alloc events, runs beside
perf record failed (issue 13: 8 of 8; here 1 of 3 without the allocators).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli

RUNS = int(os.environ.get("CMAPROF_COEXIST_RUNS", "1"))
ALL_RUNS = int(os.environ.get("CMAPROF_COEXIST_ALL_RUNS", "3"))
TRACEFS = Path("/sys/kernel/tracing")
EVENT = TRACEFS / "events/kmem/mm_page_alloc"
#: Faults in 32 MiB of fresh memory, over and over (at nice 5: cmaprof's start-up goes
#: first). Many pages per window also keep the 1% check above the host's noise: vmalloc
#: (e.g. KVM guests starting) allocates through alloc_pages_bulk(), which pgalloc_*
#: counts and no tracepoint sees (no kprobes here for the bulk probe).
ALLOCATOR = """
import mmap, os
os.nice(5)
while True:
    m = mmap.mmap(-1, 32 << 20)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, 32 << 20, 4096):
        m[off] = 1
    m.close()
"""


@pytest.fixture(scope="module", autouse=True)
def allocators() -> Iterator[None]:
    procs = [
        subprocess.Popen([sys.executable, "-c", ALLOCATOR]) for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def _process(argv: list[str], ready: Callable[[subprocess.Popen], bool], **kw) -> Iterator[None]:
    """Run a tracer until the block ends; wait (up to 30 s) until ``ready``."""
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} not installed (scripts/setup.sh installs it)")
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, **kw)
    try:
        deadline = time.monotonic() + 30
        while not ready(proc):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{argv[0]} did not start: {proc.communicate(timeout=10)[1]}")
            time.sleep(0.2)
        yield
        assert proc.poll() is None, f"{argv[0]} ended beside cmaprof: {proc.stderr}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _bpf_on_page_alloc(pid: int) -> bool:
    out = subprocess.run(
        ["bpftool", "--json", "perf", "list"], capture_output=True, text=True, check=False
    ).stdout
    return any(
        e.get("pid") == pid and e.get("tracepoint") == "mm_page_alloc"
        for e in json.loads(out or "[]")
    )


def _after(seconds: float) -> Callable[[subprocess.Popen], bool]:
    t = time.monotonic() + seconds
    return lambda proc: time.monotonic() >= t


@contextlib.contextmanager
def _perf_record(tmp: Path) -> Iterator[None]:
    with _process(
        ["perf", "record", "-a", "-e", "kmem:mm_page_alloc", "-o", "-"],
        _after(2),
        stdout=subprocess.DEVNULL,
    ):
        yield


@contextlib.contextmanager
def _perf_stat(tmp: Path) -> Iterator[None]:
    with _process(["perf", "stat", "-a", "-e", "kmem:mm_page_alloc"], _after(2)):
        yield


@contextlib.contextmanager
def _bpftrace(tmp: Path) -> Iterator[None]:
    with _process(
        ["bpftrace", "-e", "tracepoint:kmem:mm_page_alloc { @pages = count(); }"],
        lambda p: _bpf_on_page_alloc(p.pid),
        stdout=subprocess.DEVNULL,
    ):
        yield


@contextlib.contextmanager
def _tracefs_instance(tmp: Path) -> Iterator[None]:
    inst = TRACEFS / "instances" / f"cmaprof-coexist-{os.getpid()}"
    inst.mkdir()
    try:
        (inst / "events/kmem/mm_page_alloc/enable").write_text("1")
        (inst / "tracing_on").write_text("1")
        yield
    finally:
        (inst / "tracing_on").write_text("0")
        (inst / "events/kmem/mm_page_alloc/enable").write_text("0")
        inst.rmdir()


TRACERS = {
    "perf-record": _perf_record,
    "perf-stat": _perf_stat,
    "bpftrace": _bpftrace,
    "tracefs-instance": _tracefs_instance,
}


def _record_and_check(out: Path) -> str:
    """One ``cmaprof record -d 1``; the failures found, as text ('' when none)."""
    proc = run_cli("record", "-o", str(out), "-d", "1")
    if proc.returncode != 0:
        return f"{out.name}: exit {proc.returncode}: {proc.stderr.strip()}"
    rep = run_cli("report", str(out), "--format", "json")
    if rep.returncode != 0:
        return f"{out.name}: report exit {rep.returncode}: {rep.stderr.strip()}"
    rows = [r for r in json.loads(rep.stdout)["check"] if (r["kernel"] or 0) >= 10_000]
    bad = [r for r in rows if abs(r["diff_pct"]) > 1.0]
    if not rows or bad:
        return f"{out.name}: check rows off by more than 1% (or none): {bad or rows}"
    return ""


def _runs(tmp: Path, n: int) -> list[str]:
    return [f for f in (_record_and_check(tmp / f"rec{i}") for i in range(n)) if f]


@pytest.mark.parametrize("tracer", sorted(TRACERS))
def test_record_beside(tracer, tmp_path):
    with TRACERS[tracer](tmp_path):
        failures = _runs(tmp_path, RUNS)
    assert not failures, f"beside {tracer}: {len(failures)} of {RUNS} runs failed: {failures}"


def test_record_beside_all_at_once(tmp_path):
    with contextlib.ExitStack() as stack:
        for name, tracer in sorted(TRACERS.items()):
            d = tmp_path / name
            d.mkdir()
            stack.enter_context(tracer(d))
        failures = _runs(tmp_path, ALL_RUNS)
    assert not failures, f"beside all: {len(failures)} of {ALL_RUNS} runs failed: {failures}"
