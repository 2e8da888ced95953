"""The short soak (``make soak`` runs the 10-minute one): ``cmaprof record`` under the
highest page-allocation rate of both CPUs, RSS sampled every 2 s after a 15 s warm-up.

Checked: RSS growth under 5% (median of the last quarter of the samples against the
first), no lost or dropped events, traced pages against ``/proc/vmstat`` within 1%, and
the recording growing with intervals, not with events (bytes per interval under load
within 1.5x of idle intervals while carrying at least 2x the events). The driver is
scripts/soak.py; its numbers are printed (pytest -s) and kept in the JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

DURATION_S = float(os.environ.get("CMAPROF_SOAK_S", "75"))


def test_short_soak(tmp_path):
    res_path = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            "--duration",
            str(DURATION_S),
            "--warmup",
            "15",
            "--idle",
            "5",
            "--out",
            str(tmp_path / "rec"),
            "--json",
            str(res_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=DURATION_S + 600,
    )
    print(proc.stdout)
    assert res_path.exists(), proc.stdout + proc.stderr
    res = json.loads(res_path.read_text())
    assert res["rss_samples"] >= (DURATION_S - 15) / 2 - 2
    assert res["rss_growth_pct"] < 5.0, res["rss_series"]
    # lost: the kernel's recursion_misses, an mm_page_alloc in an interrupt that came while
    # our program ran on that CPU (__bpf_trace_run() skips a program already active there).
    # Counted, shown in the report, and rare: 16 in 41 M and 33 in 27 M seen on a host
    # loaded by guests (0 on a quiet one); at most 10 per million events.
    lost = sum(res["lost"].values())
    assert lost <= res["traced_allocs"] / 1e5 and not res["dropped"], (res["lost"], res["dropped"])
    assert res["events_bpf_run_cnt"] > 0 and res["traced_pages"] > 0
    for c in res["check"]:
        if c["traced"] >= 10_000:
            assert abs(c["diff_pct"]) <= 1.0, c
    assert proc.returncode == 0, res["failures"]
