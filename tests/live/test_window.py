"""The recording's own counting window lines it up with a perf capture of the same time.

``perf record -a -k mono -e kmem:mm_page_alloc`` runs while ``cmaprof record`` runs a
64 MiB page-faulting command; ``cmaprof import --window-of REC`` keeps the perf events
of the recording's CLOCK_MONOTONIC counting window (metadata ``counting_window``).
Both must give the same allocations per (order, gfp, migratetype): every key with at
least 200 allocations within 1%, the total within 0.5% (each end of the window is
known to within one BPF map update, ~0.1 ms, and perf takes its own timestamp).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import run_cli

KEYS = ["order", "gfp_flags", "migratetype_id"]
TOUCH = """
import mmap
m = mmap.mmap(-1, 64 << 20)
m.madvise(mmap.MADV_NOHUGEPAGE)
for off in range(0, 64 << 20, 4096):
    m[off] = 1
"""


def _by_key(rec) -> pd.Series:
    df = pd.read_parquet(rec / "tables" / "page_alloc.parquet")
    if "migratetype_id" not in df.columns:
        df = df.rename(columns={"migratetype": "migratetype_id"})
    return df.groupby(KEYS)["allocs"].sum()


def test_perf_mono_capture_matches_on_the_recorded_window(tmp_path):
    if shutil.which("perf") is None:
        pytest.skip("perf not installed (scripts/setup.sh installs it)")
    data, rec, imp = tmp_path / "perf.data", tmp_path / "rec", tmp_path / "imp"
    perf = subprocess.Popen(
        ["perf", "record", "-q", "-a", "-k", "mono", "-m", "2048", "-e", "kmem:mm_page_alloc"]
        + ["-o", str(data)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
        assert perf.poll() is None, perf.communicate()[1]
        proc = run_cli("record", "-o", str(rec), "--", sys.executable, "-c", TOUCH)
        assert proc.returncode == 0, proc.stderr
    finally:
        perf.send_signal(signal.SIGINT)
        perf.communicate(timeout=120)
    script = tmp_path / "perf.txt"
    with script.open("w") as f:
        subprocess.run(["perf", "script", "-i", str(data)], stdout=f, check=True)
    proc = run_cli(
        "import", str(script), "--window-of", str(rec), "--formats",
        "/sys/kernel/tracing/events", "-o", str(imp),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "lost (per the tool): 0" in proc.stderr, proc.stderr  # perf kept every event
    ours, theirs = _by_key(rec), _by_key(imp)
    assert ours.sum() >= 64 * 256, ours.sum()  # the command's faults are in the window
    both = pd.concat({"cmaprof": ours, "perf": theirs}, axis=1).fillna(0)
    big = both[both.max(axis=1) >= 200]
    off = big[(big["cmaprof"] - big["perf"]).abs() > 0.01 * big.max(axis=1)]
    assert off.empty, f"keys off by more than 1%:\n{off}\nall:\n{big}"
    total = abs(ours.sum() - theirs.sum()) / ours.sum()
    assert total <= 0.005, f"totals cmaprof {ours.sum()} perf {theirs.sum()}"
