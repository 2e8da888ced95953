"""cma and migrate probes in a CMA guest, checked against vmstat and CMA sysfs/debugfs.

One guest (--cma 256M, 2 GiB) runs one recording over four phases, snapshotting the
kernel's counters between phases itself (outside cmaprof):
  1. seven debugfs allocations of 23 pages (a prime: catches off-by-one and doubles);
  2. one request larger than the area (6.1 fires start but no finish);
  3. memory filled with anonymous memory and page cache, then a large allocation
     that has to migrate pages out of the area;
  4. the page_alloc workload (per-zone check within 1%, as on the host).
"""

from __future__ import annotations

import json

import pytest

from cmaprof.analysis import cma, phases
from tests.conftest import run_cli

pytestmark = pytest.mark.vm

PHASES = r"""
out=$1
dbg=/sys/kernel/debug/cma/reserved
sys=/sys/kernel/mm/cma/reserved
snap() {
    cat /proc/vmstat >"$out/vmstat.$1"
    cat $sys/alloc_pages_success >"$out/pages_success.$1"
    cat $sys/alloc_pages_fail >"$out/pages_fail.$1"
    cat $dbg/used >"$out/used.$1"
}
snap 0
for i in 1 2 3 4 5 6 7; do echo 23 >$dbg/alloc; done
snap 1
echo 70000 >$dbg/alloc 2>/dev/null
snap 2
python3 - <<'PY'
import mmap, os, tempfile
# page cache and anonymous memory until CMA pageblocks are used too
fd, path = tempfile.mkstemp(dir="/tmp")
buf = b"x" * (1 << 20)
for _ in range(300):
    os.write(fd, buf)
os.fsync(fd)
m = mmap.mmap(-1, 1200 << 20)
for off in range(0, 1200 << 20, 4096):
    m[off] = 1
with open("/sys/kernel/debug/cma/reserved/alloc", "w") as f:
    try:
        f.write("32768")
    except OSError:
        pass
os.unlink(path)
PY
snap 3
cmaprof workload anon:256 pagecache:64
snap 4
for i in 1 2 3 4 5 6 7 8 9 10 11; do echo 23 >$dbg/alloc; done
snap 5
"""

SCRIPT = (
    r"""
out=$1
cat >"$out/phases.sh" <<'EOS'
"""
    + PHASES
    + r"""
EOS
cmaprof record -o "$out/rec" -- sh "$out/phases.sh" "$out" 2>"$out/record.err"
echo $? >"$out/record.status"
cmaprof doctor >"$out/doctor.txt" 2>&1
echo $? >"$out/doctor.status"
awk '$2 ~ /^[Tt]$/ {print $3}' /proc/kallsyms >"$out/kallsyms.txt"
"""
)


@pytest.fixture(scope="module")
def guest(vm_boot):
    # BCC's compile under TCG takes minutes on a loaded 2-core machine
    g = vm_boot("cma", ["--cma", "256M", "--memory", "2G"], SCRIPT, timeout_s=1800)
    assert g.returncode == 0, g.failure()
    assert g.read("record.status").strip() == "0", g.read("record.err")
    return g


def _int(g, name: str) -> int:
    return int(g.read(name).split()[0])


@pytest.fixture(scope="module")
def report(guest):
    """The report, made on the host (pandas under TCG would cost minutes)."""
    proc = run_cli("report", str(guest.out / "rec"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def calls(guest):
    import cmaprof.analysis as an
    from cmaprof.analysis.cma import df_cma_calls

    return df_cma_calls(an.load(guest.out / "rec")).sort_values("start_ns", ignore_index=True)


def test_seven_allocations_of_23_pages(guest, calls):
    first = calls.iloc[:7]
    assert len(calls) >= 9
    assert list(first["pages_requested"]) == [23] * 7
    assert first["success"].all()
    assert first["pages_requested"].sum() == 161
    assert ((first["latency_ns"] > 0) & (first["latency_ns"] < 10_000_000_000)).all()
    v0, v1 = guest.vmstat(0), guest.vmstat(1)
    assert v1["cma_alloc_success"] - v0["cma_alloc_success"] == 7
    assert _int(guest, "pages_success.1") - _int(guest, "pages_success.0") == 161
    assert _int(guest, "used.1") - _int(guest, "used.0") == 161


def test_request_larger_than_area_is_one_failure(guest, calls, report):
    big = calls.iloc[7]
    assert big["pages_requested"] == 70000 and not big["success"]
    assert (calls["pages_requested"] == 70000).sum() == 1
    v1, v2 = guest.vmstat(1), guest.vmstat(2)
    counted = v2["cma_alloc_fail"] - v1["cma_alloc_fail"]
    pages = _int(guest, "pages_fail.2") - _int(guest, "pages_fail.1")
    # the kernel's own account: 6.1 and 7.3 count the failure, 6.12's __cma_alloc()
    # returns before counting it (and before cma_alloc_finish)
    assert (counted, pages) in ((1, 70000), (0, 0)), (counted, pages)
    fail = {r["counter"]: r for r in report["check"]}["cma_alloc_fail"]
    assert fail["traced"] == fail["kernel"], fail
    if counted == 0:
        assert "returned before cma_alloc_finish" in fail["note"], fail
        assert big["outcome_source"] != "kernel errorno"


def test_doctor_agrees_with_record(guest):
    """doctor in the same guest after a successful record: its compile check (answered
    from the result record stored) says the default probes load here."""
    text = guest.read("doctor.txt")
    assert guest.read("doctor.status").strip() == "0", text
    assert "recording: possible" in text
    probes_row = [line for line in text.splitlines() if line.startswith("probes*")]
    assert probes_row and " ok " in probes_row[0], text
    assert "blockers" in text, "the default probes of a CMA guest include blockers"


def test_migrations_equal_pgmigrate(guest, calls, report):
    call = calls.iloc[8]
    assert call["pages_requested"] == 32768
    v2, v3 = guest.vmstat(2), guest.vmstat(3)
    # the phase also saw kcompactd/reclaim migrations: the call's pages are a part;
    # the recording-wide totals are compared exactly in the check test below
    assert 0 < call["migrate_succeeded"] <= v3["pgmigrate_success"] - v2["pgmigrate_success"]
    assert call["migrate_failed"] <= v3["pgmigrate_fail"] - v2["pgmigrate_fail"]
    contig = [r for r in report["migrate"] if r["reason"] == "contig_range"]
    assert sum(r["succeeded"] for r in contig) >= call["migrate_succeeded"]


def test_summary_and_check_agree_with_the_kernel(report):
    (row,) = [r for r in report["cma_alloc"] if r["area"] == "reserved"]
    assert row["calls"] == row["succeeded"] + row["failed"]
    # percentiles only where the area has enough calls to estimate them (null otherwise)
    need = {q: cma.calls_needed(v) for q, v in cma.PERCENTILES.items()}
    assert all((row[f"{q}_ns"] is None) == (row["calls"] < n) for q, n in need.items()), row
    shown = [row[f"{q}_ns"] for q in need if row[f"{q}_ns"] is not None]
    assert (
        row["max_ns"] > 0 and shown == sorted(shown) and all(0 < v <= row["max_ns"] for v in shown)
    )
    checks = {r["counter"]: r for r in report["check"]}
    for name in (
        "cma_alloc_success",
        "cma_alloc_fail",
        "reserved/alloc_pages_success",
        "reserved/alloc_pages_fail",
        "pgmigrate_success",
        "pgmigrate_fail",
    ):
        assert checks[name]["traced"] == checks[name]["kernel"], checks[name]


def test_page_alloc_per_zone_within_one_percent(report):
    rows = [r for r in report["check"] if r["zone"] and r["traced"] >= 10_000]
    assert rows
    for r in rows:
        assert abs(r["diff_pct"]) <= 1.0, r


def test_cma_placement_seen(report):
    placed = [r for r in report["zone_gfp"] if r["cma_area"] == "reserved"]
    assert placed, "no allocation landed in the CMA area"
    assert all("MOVABLE" in r["gfp"] for r in placed)


@pytest.fixture(scope="module")
def phase_check(guest, calls):
    import cmaprof.analysis as an

    chk = phases.df_cma_phase_check(an.load(guest.out / "rec"))
    return chk.merge(calls[["start_ns", "pid", "pages_requested", "busy_retries"]]).sort_values(
        "start_ns", ignore_index=True
    )


def test_phases_add_up_to_the_latency_of_every_call(calls, phase_check):
    """Every call has its phases, and they add up to its latency exactly: the
    unattributed rest is measured in BPF (the task's time at depth 0 of its phase
    stack), not computed here, so a frame counted twice or lost would show."""
    chk = phase_check
    assert len(chk) == len(calls)
    assert (chk["attributed_ns"] + chk["unattributed_ns"] == chk["latency_ns"]).all(), chk
    assert (chk["attributed_ns"] >= 0).all() and (chk["unattributed_ns"] >= 0).all()
    assert chk["lost"].sum() == 0, chk[chk["lost"] > 0]


def test_phases_seen_are_the_functions_the_kernel_has(guest):
    """Which phases were attached follows the guest's own /proc/kallsyms: a phase with
    a function there is attached, or the kernel refused the kprobe (6.1 refuses one on
    bitmap_find_next_zero_area_off); one without is missing for that reason."""
    import cmaprof.analysis as an
    from cmaprof.collectors.cma import PHASE_SYMBOLS

    kallsyms = set(guest.read("kallsyms.txt").split())
    info = an.load(guest.out / "rec").meta["cma_phases"]
    for phase, groups in PHASE_SYMBOLS.items():
        have = [next((s for s in g if s in kallsyms), None) for g in groups]
        want = [s for s in have if s is not None]
        got = info["attached"].get(phase, [])
        if got != want:
            assert set(got) < set(want), (phase, info)
        if want and not got:
            assert "the kernel refused a kprobe on " + want[0] in info["missing"][phase], (
                phase,
                info,
            )
        if not want:
            assert "in /proc/kallsyms" in info["missing"][phase], (phase, info)
    # the phases this test needs to mean anything
    assert {"contig", "isolate", "migrate", "test"} <= set(info["attached"]), info


def test_phase_entries_agree_with_the_tracepoints(guest, phase_check):
    """kprobes and tracepoints see the same call: one alloc_contig_range() attempt per
    busy retry plus the last; test_pages_isolated() entered as often as its tracepoint
    fired; the request larger than the area reaches no phase."""
    import cmaprof.analysis as an

    rec = an.load(guest.out / "rec")
    per = phases.df_cma_call_phases(rec).pivot_table(
        index=["start_ns", "pid"], columns="phase", values="entries", observed=False
    )
    calls = cma.df_cma_calls(rec).set_index(["start_ns", "pid"])
    big = calls["pages_requested"] == 70000
    assert (per.loc[big[big].index, "contig"] == 0).all()
    assert phase_check.loc[phase_check["pages_requested"] == 70000, "attributed_ns"].eq(0).all()
    reached = calls[~big]
    assert (per.loc[reached.index, "contig"] == reached["busy_retries"] + 1).all()
    assert (per.loc[reached.index, "test"] == reached["isolate_tests"]).all()


def test_most_of_the_time_is_in_a_phase(phase_check):
    """Of the calls that reach alloc_contig_range(), the phases hold most of the time
    (the rest: the cma_mutex wait, the bitmap update, our own probes' cost)."""
    reached = phase_check[phase_check["pages_requested"] != 70000]
    share = reached["attributed_ns"].sum() / reached["latency_ns"].sum()
    assert share >= 0.8, (share, reached)
    big = phase_check[phase_check["pages_requested"] == 32768]
    assert (big["attributed_pct"] >= 80).all(), big


def test_report_shows_the_phases(guest, report):
    rows = [r for r in report["cma_phases"] if r["area"] == "reserved"]
    assert [r["phase"] for r in rows] == list(phases.PHASES)
    for r in rows:
        assert (r["total_ns"] is None) == (not r["seen"]), r
        assert r["seen"] or r["reason"], r
    assert sum(r["share_pct"] for r in rows if r["seen"]) == pytest.approx(100, abs=0.1)
    # 20 calls: p50 is estimable, p90 is not
    assert all((r["p50_ns"] is None) == (not r["seen"]) for r in rows), rows
    assert all(r["p90_ns"] is None for r in rows)
    text = run_cli("report", str(guest.out / "rec"))
    assert text.returncode == 0, text.stderr
    assert "Where the time of cma_alloc() went" in text.stdout
