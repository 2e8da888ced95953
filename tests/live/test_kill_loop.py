"""Kill ``cmaprof record`` at random moments: the recording always loads, nothing leaks.

``CMAPROF_KILL_LOOP`` kills (default 12; issue 7 asks for 50 in a longer run) go in
turn to start-up (BPF compile, calibration, attach: a random time before counting
starts), the running command (a random time after proc/start is written) and the
finish (a random time after proc/end is written), each with a random one of SIGINT,
SIGTERM, SIGHUP and SIGKILL. After each kill:

* no traceback on stderr;
* when the output directory exists, ``cmaprof report DIR --format json`` exits 0, or
  exits 2 with one ``cmaprof: error:`` line when metadata.json was never written;
* after SIGINT/SIGTERM/SIGHUP the metadata says complete, with a ``signal ...`` stop
  reason (or ``command exited`` when the signal came after the command had ended);
* after SIGKILL the report's ``recording`` row says complete false unless the
  run had already finished;
* no BPF program of ours, no kprobe event of the killed process, is left in the
  kernel, and ``kernel.bpf_stats_enabled`` is as it was.

``CMAPROF_KILL_SEED`` replays a run (the seed is printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import cmaprof_cmd, run_cli

KILLS = int(os.environ.get("CMAPROF_KILL_LOOP", "12"))
SEED = int(os.environ.get("CMAPROF_KILL_SEED") or random.SystemRandom().randrange(2**32))
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL)
#: Names of our BPF programs as the kernel keeps them (at most 15 characters).
OUR_PROGS = {
    n[:15]
    for n in (
        "page_alloc_raw",
        "page_alloc_btf",
        "stream_raw",
        "stream_btf",
        "calib_raw",
        "tracepoint__migrate__mm_migrate_pages",
        "tracepoint__migrate__mm_migrate_pages_start",
    )
}
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
PROBE_EVENTS = [
    Path(d) / f
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    for f in ("kprobe_events", "uprobe_events")
]


def _record_cmd(out: Path) -> list[str]:
    return cmaprof_cmd() + [
        "record",
        "-o",
        str(out),
        "-i",
        "0.2",
        "--",
        *cmaprof_cmd(),
        "workload",
        "anon:64",
    ]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _record_cmd(out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _reap_group(proc: subprocess.Popen) -> None:
    """Kill what is left of the process group we started (an orphaned workload)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _our_programs() -> dict[int, str]:
    """id -> name of loaded BPF programs with our names and no live owner but the kernel."""
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    progs = {}
    for p in json.loads(out or "[]"):
        if p.get("name") not in OUR_PROGS:
            continue
        owners = [o.get("pid") for o in p.get("pids", [])]
        if any(Path(f"/proc/{pid}").exists() for pid in owners):
            continue  # another live recording (a concurrent test run) owns it
        progs[p["id"]] = p["name"]
    return progs


def _probe_events_of(pid: int) -> list[str]:
    hits = []
    for f in PROBE_EVENTS:
        try:
            text = f.read_text()
        except OSError:
            continue
        hits += [line for line in text.splitlines() if f"bcc_{pid}" in line]
    return hits


def _wait_for(path: Path, proc: subprocess.Popen, limit_s: float) -> float | None:
    """Seconds until ``path`` exists (polling every 5 ms); None if the process ended first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if path.exists():
            return time.monotonic() - t0
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    return None


@pytest.fixture(scope="module")
def phases(tmp_path_factory) -> dict[str, float]:
    """When, in an uninterrupted run on this host, counting starts (proc/start
    written), the command has ended (proc/end written) and the process exits."""
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed (apt-get install bpftool)")
    out = tmp_path_factory.mktemp("kill") / "full"
    t0 = time.monotonic()
    proc = _start(out)
    t_run = _wait_for(out / "proc/start/vmstat", proc, 120)
    t_end = _wait_for(out / "proc/end/vmstat", proc, 120)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - t0
    _reap_group(proc)
    assert proc.returncode == 0, err
    assert t_run is not None and t_end is not None, err
    return {"run": t_run, "end": t_run + t_end, "exit": took}


def test_kill_at_random_moments(phases, tmp_path):
    rng = random.Random(SEED)
    stats_before = STATS.read_text()
    progs_before = _our_programs()
    results = []
    failures = []
    for i in range(KILLS):
        # Phases in turn: start-up (compile, calibrate, attach), running (the command
        # runs, intervals are written), finishing (snapshot, tables, metadata).
        phase = ("start-up", "running", "finishing")[i % 3]
        sig = rng.choice(SIGNALS)
        out = tmp_path / f"rec{i}"
        t0 = time.monotonic()
        proc = _start(out)
        if phase == "start-up":
            time.sleep(rng.uniform(0, phases["run"]))
        elif phase == "running":
            _wait_for(out / "proc/start/vmstat", proc, 120)
            time.sleep(rng.uniform(0, max(0.0, phases["end"] - phases["run"])))
        else:
            _wait_for(out / "proc/end/vmstat", proc, 120)
            time.sleep(rng.uniform(0, max(0.0, phases["exit"] - phases["end"])))
        delay = time.monotonic() - t0
        finished_before = proc.poll() is not None
        meta_before = (out / "metadata.json").exists()
        if not finished_before:
            proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            failures.append(f"kill {i}: {sig.name} at {delay:.2f}s: did not exit within 60 s")
        _reap_group(proc)
        what = f"kill {i}: {sig.name} at {delay:.2f}s ({phase}; seed {SEED})"
        row = {
            "i": i,
            "phase": phase,
            "signal": sig.name,
            "at_s": round(delay, 2),
            "rc": proc.returncode,
            "finished_first": finished_before,
        }

        if "Fatal Python error: init_import_site" in err and not out.exists():
            # SIGINT while the interpreter itself starts (site import, before any line
            # of cmaprof runs): Python's own KeyboardInterrupt report; nothing was made
            row["before_cmaprof"] = True
        elif "Traceback" in err:
            failures.append(f"{what}: traceback on stderr:\n{err}")
        meta_path = out / "metadata.json"
        if out.exists():
            rep = run_cli("report", str(out), "--format", "json")
            row["report_rc"] = rep.returncode
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                row["complete"] = meta.get("complete")
                row["stop_reason"] = meta.get("stop_reason")
                if rep.returncode != 0:
                    failures.append(f"{what}: report exit {rep.returncode}: {rep.stderr.strip()}")
                else:
                    summary = json.loads(rep.stdout)["recording"][0]
                    if summary["complete"] != bool(meta.get("complete")):
                        failures.append(f"{what}: report says complete={summary['complete']}")
                    if sig == signal.SIGKILL and not finished_before:
                        done = meta.get("complete") and meta.get("stop_reason") == "command exited"
                        if summary["complete"] and not done:
                            failures.append(f"{what}: SIGKILLed recording reported complete")
                if sig != signal.SIGKILL and not finished_before:
                    reason = meta.get("stop_reason") or ""
                    if meta.get("complete") is not True or not (
                        reason.startswith("signal") or reason == "command exited"
                    ):
                        failures.append(
                            f"{what}: after {sig.name} metadata says complete="
                            f"{meta.get('complete')} stop_reason={reason!r} "
                            f"(metadata existed when signalled: {meta_before}; "
                            f"exit {proc.returncode}; stderr {err.strip()[-300:]!r})"
                        )
            else:
                lines = [ln for ln in rep.stderr.splitlines() if ln.strip()]
                if rep.returncode != 2 or len(lines) != 1 or "cmaprof: error:" not in lines[0]:
                    failures.append(
                        f"{what}: no metadata.json; report exit {rep.returncode}, "
                        f"stderr {rep.stderr!r}"
                    )
        else:
            row["report_rc"] = None

        leaked = {k: v for k, v in _our_programs().items() if k not in progs_before}
        if leaked:
            # Program teardown after a process exits is asynchronous: give it a moment.
            time.sleep(1.0)
            leaked = {k: v for k, v in _our_programs().items() if k not in progs_before}
        if leaked:
            failures.append(f"{what}: BPF programs left loaded: {leaked}")
        events = _probe_events_of(proc.pid)
        if events:
            failures.append(f"{what}: probe events left: {events}")
        if STATS.read_text() != stats_before:
            failures.append(f"{what}: bpf_stats_enabled now {STATS.read_text().strip()}")
        results.append(row)

    print(f"\nkill loop (seed {SEED}; uninterrupted run: {phases}):")
    for r in results:
        print("  ", r)
    assert not failures, "\n".join(failures)


#: collectors/record.py installs its stop-signal handlers only after metadata.json is
#: written and the format files are copied; a signal in that window ends the process
#: with complete: false (the recording still loads: checked below).
HANDLER_WINDOW = (
    "signal before record.py installed its handlers: recording left incomplete "
    "(complete: false) instead of finished with a 'signal ...' stop reason"
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_signal_right_after_metadata_is_written(sig, tmp_path):
    """A signal as soon as metadata.json exists (no format file copied yet, no
    handlers yet) leaves a recording that loads."""
    out = tmp_path / "rec"
    proc = _start(out)
    t0 = time.monotonic()
    while not (out / "metadata.json").exists() and proc.poll() is None:
        assert time.monotonic() - t0 < 120, "metadata.json never appeared"
        time.sleep(0.0005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    _reap_group(proc)
    assert "Traceback" not in err, err
    rep = run_cli("report", str(out), "--format", "json")
    assert rep.returncode == 0, rep.stderr
    meta = json.loads((out / "metadata.json").read_text())
    summary = json.loads(rep.stdout)["recording"][0]
    assert summary["complete"] == bool(meta.get("complete"))
    if sig != signal.SIGKILL and meta.get("complete") is not True:
        print(f"\nknown record.py bug, {sig.name}: {HANDLER_WINDOW}")
