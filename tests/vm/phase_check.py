"""Issue 12 item 4 on every guest test's recording: the phases of every cma_alloc() call
add up to its latency (the unattributed rest is measured in BPF, not computed here), and
no phase's return was lost."""

from __future__ import annotations

from pathlib import Path

from cmaprof.analysis import cma, load, phases


def assert_phases_add_up(rec_path: Path) -> None:
    rec = load(rec_path)
    calls = cma.df_cma_calls(rec)
    chk = phases.df_cma_phase_check(rec)
    assert len(chk) == len(calls), (len(chk), len(calls))
    bad = chk[chk["diff_ns"] != 0]
    assert bad.empty, bad.to_string()
    assert int(chk["lost"].sum()) == 0, chk[chk["lost"] > 0].to_string()
