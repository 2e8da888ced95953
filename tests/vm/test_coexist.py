"""perf beside ``cmaprof record`` in a CMA guest: neither disturbs the other (issue 13).

One guest (--cma 256M, 2 GiB) runs the same workload three times under ``perf stat``
(per task, every event the workload causes), the middle time inside ``cmaprof record``
while ``perf record -a`` also takes every ``cma:*`` event system-wide:

  alone 1  ->  beside (cmaprof record + perf record -a)  ->  alone 2

The workload: eleven debugfs allocations of 23 pages, one request larger than the
area, 128 MiB of anonymous memory and an 8192-page allocation that has to migrate
pages out of the area (another process, outside perf stat, fills all but 450 MiB of
the guest's free memory first, in every run), then all of it freed again.

Checked, against perf and the kernel (never against cmaprof alone):
- perf stat counts of ``cma:*``, ``migrate:mm_migrate_pages``,
  ``page_isolation:test_pages_isolated`` and ``kmem:mm_page_alloc`` beside cmaprof
  equal those without it exactly for the cma events (the workload makes the same calls
  each time), and are never fewer for the others (a cmaprof program that returned 0 on
  a classic tracepoint made perf count 0 here);
- ``perf record -a`` beside cmaprof sees every migrated page vmstat counted;
- ``trace-cmd record`` (ftrace, on ``cma`` and ``migrate:mm_migrate_pages``) runs
  beside both and sees every ``cma_alloc_start`` (on the host trace-cmd cannot run: it
  cannot write /proc/sys/kernel/ftrace_enabled there, so tests/live/test_coexist.py
  uses a tracefs instance instead).
- ``cmaprof record`` succeeds beside ``perf record -a -e 'cma:*'``, its calls equal
  the ``cma_alloc_start`` events perf recorded, and its successes equal vmstat's
  ``cma_alloc_success`` over the recording.
"""

from __future__ import annotations

import json
import re

import pytest

from cmaprof.analysis import load
from cmaprof.analysis.layout import df_cma_layout, df_layout
from tests.conftest import run_cli
from tests.vm.conftest import fill_script
from tests.vm.layout_check import SAVE_SCRIPT as SAVE_LAYOUT
from tests.vm.layout_check import assert_layout_is_the_kernels
from tests.vm.phase_check import assert_phases_add_up

pytestmark = pytest.mark.vm

EVENTS = (
    "cma:cma_alloc_start",
    "cma:cma_alloc_finish",
    "cma:cma_release",
    "migrate:mm_migrate_pages",
    "page_isolation:test_pages_isolated",
    "kmem:mm_page_alloc",
)
EXACT = ("cma:cma_alloc_start", "cma:cma_alloc_finish", "cma:cma_release")

WORKLOAD = r"""
dbg=/sys/kernel/debug/cma/reserved
for i in 1 2 3 4 5 6 7 8 9 10 11; do echo 23 >$dbg/alloc; done
echo 70000 >$dbg/alloc 2>/dev/null
python3 - <<'PY'
import mmap
m = mmap.mmap(-1, 128 << 20)
m.madvise(mmap.MADV_NOHUGEPAGE)
for off in range(0, 128 << 20, 4096):
    m[off] = 1
PY
echo 8192 >$dbg/alloc 2>/dev/null
echo 8445 >$dbg/free
"""

#: Outside perf stat, before each run: anonymous memory until 450 MiB are free (so the
#: same share of the area's pageblocks is borrowed in every run, cmaprof or not).
FILL = fill_script(450)

SCRIPT = (
    r"""
out=$1
cd /tmp
cat >"$out/workload.sh" <<'EOS'
"""
    + WORKLOAD
    + r"""
EOS
cat >"$out/fill.sh" <<'EOS'
"""
    + FILL
    + r"""
EOS
fill() { . "$out/fill.sh"; }
ev='"""
    + " ".join(f"-e {e}" for e in EVENTS)
    + r"""'
snap() {
    cat /proc/vmstat >"$out/vmstat.$1"
    cat /sys/kernel/mm/cma/reserved/alloc_pages_success >"$out/pages_success.$1"
}
fill
perf stat -x, $ev -o "$out/alone1.csv" -- sh "$out/workload.sh"
echo $? >"$out/alone1.status"
kill $filler; wait $filler 2>/dev/null
waitstop='while [ ! -e /tmp/stop ]; do sleep 0.2; done'
perf record -a -e 'cma:*' -e migrate:mm_migrate_pages -o /tmp/perf.data -- sh -c "$waitstop" 2>"$out/perf-record.log" &
perfpid=$!
trace-cmd record -e cma -e migrate:mm_migrate_pages -o /tmp/trace.dat sh -c "$waitstop" \
    >"$out/trace-cmd.log" 2>&1 &
tcpid=$!
sleep 3
"""
    + SAVE_LAYOUT
    + r"""snap 0
cmaprof record -o "$out/rec" --probes page_alloc,cma,migrate -- \
    sh -c '. "$1/fill.sh"; perf stat -x, '"$ev"' -o "$1/beside.csv" -- sh "$1/workload.sh"
           st=$?; kill $filler; wait $filler; exit $st' sh "$out" 2>"$out/record.err"
echo $? >"$out/record.status"
snap 1
touch /tmp/stop
wait $perfpid
echo $? >"$out/perf-record.status"
wait $tcpid
echo $? >"$out/trace-cmd.status"
trace-cmd report -i /tmp/trace.dat 2>/dev/null | grep -c " cma_alloc_start:" >"$out/trace-cmd.starts"
perf script -i /tmp/perf.data -F event 2>/dev/null | sort | uniq -c >"$out/perf-record.counts"
perf script -i /tmp/perf.data -F event,trace 2>/dev/null | grep mm_migrate_pages: >"$out/perf-record.migrate"
fill
perf stat -x, $ev -o "$out/alone2.csv" -- sh "$out/workload.sh"
echo $? >"$out/alone2.status"
kill $filler; wait $filler 2>/dev/null
exit 0
"""
)


@pytest.fixture(scope="module")
def guest(vm_boot):
    g = vm_boot("coexist", ["--cma", "256M", "--memory", "2G"], SCRIPT, timeout_s=1800)
    assert g.returncode == 0, g.failure()
    assert g.read("record.status").strip() == "0", g.read("record.err")
    return g


def perf_stat(text: str) -> dict[str, int]:
    """``perf stat -x,`` output: event -> count (``<not counted>`` is an error)."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 3 or line.startswith("#"):
            continue
        assert fields[0].isdigit(), f"perf stat did not count {fields[2]}: {line}"
        counts[fields[2]] = int(fields[0])
    return counts


def perf_record_counts(text: str) -> dict[str, int]:
    """``perf script -F event | uniq -c``: event -> events recorded."""
    out = {}
    for line in text.splitlines():
        n, event = line.split()
        out[event.rstrip(":")] = int(n)
    return out


@pytest.fixture(scope="module")
def stats(guest):
    for run in ("alone1", "alone2"):
        assert guest.read(f"{run}.status").strip() == "0"
    return {run: perf_stat(guest.read(f"{run}.csv")) for run in ("alone1", "beside", "alone2")}


def test_perf_stat_counts_every_event_in_every_run(stats):
    for run, counts in stats.items():
        assert set(counts) == set(EVENTS), run
        for event in ("cma:cma_alloc_start", "kmem:mm_page_alloc", "migrate:mm_migrate_pages"):
            assert counts[event] > 0, (run, event, counts)


def test_cma_events_beside_cmaprof_equal_those_without(stats):
    for event in EXACT:
        assert stats["alone1"][event] == stats["alone2"][event], (event, stats)
        assert stats["beside"][event] == stats["alone1"][event], (event, stats)
    assert stats["alone1"]["cma:cma_alloc_start"] == 13  # 11 + the too-large one + 8192


def test_other_events_beside_cmaprof_never_fewer(stats):
    """Beside cmaprof, perf sees at least what it sees without it (less the alone runs'
    own spread), and mm_page_alloc within 5%. Migrations may be more: cmaprof's own
    start-up (BCC's compile) leaves page cache in the area that the 8192-page allocation
    then migrates away (measured on 7.3.4: 12, 12 calls alone, 146 beside)."""
    for event in sorted(set(EVENTS) - set(EXACT)):
        a, b = stats["alone1"][event], stats["alone2"][event]
        slack = max(abs(a - b), 0.05 * max(a, b), 5)
        beside = stats["beside"][event]
        print(f"{event}: alone {a}, {b}; beside {beside}")
        assert beside >= min(a, b) - slack, (event, a, b, beside)
        if event == "kmem:mm_page_alloc":
            assert beside <= max(a, b) + slack, (event, a, b, beside)


def test_perf_record_beside_cmaprof_sees_every_migration_the_kernel_counted(guest):
    """perf record -a on migrate:mm_migrate_pages during the recording: its nr_succeeded
    sum against vmstat pgmigrate_success (the kernel counts both in migrate_pages())."""
    succeeded = [
        int(m) for m in re.findall(r"nr_succeeded=(\d+)", guest.read("perf-record.migrate"))
    ]
    v0, v1 = guest.vmstat(0), guest.vmstat(1)
    kernel = v1["pgmigrate_success"] - v0["pgmigrate_success"]
    assert kernel > 0, "nothing migrated beside cmaprof: the check would be empty"
    assert kernel <= sum(succeeded) <= kernel * 1.01 + 16, (sum(succeeded), kernel)


@pytest.fixture(scope="module")
def report(guest):
    proc = run_cli("report", str(guest.out / "rec"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_record_beside_perf_record_agrees_with_perf_and_vmstat(guest):
    import cmaprof.analysis as an
    from cmaprof.analysis.cma import df_cma_calls

    assert guest.read("perf-record.status").strip() == "0", guest.read("perf-record.log")
    recorded = perf_record_counts(guest.read("perf-record.counts"))
    calls = df_cma_calls(an.load(guest.out / "rec"))
    assert len(calls) == recorded["cma:cma_alloc_start"], (len(calls), recorded)
    assert guest.read("trace-cmd.status").strip() == "0", guest.read("trace-cmd.log")
    assert int(guest.read("trace-cmd.starts")) == recorded["cma:cma_alloc_start"]
    v0, v1 = guest.vmstat(0), guest.vmstat(1)
    assert int(calls["success"].sum()) == v1["cma_alloc_success"] - v0["cma_alloc_success"]
    pages = int(calls.loc[calls["success"], "pages_requested"].sum())
    assert pages == int(guest.read("pages_success.1")) - int(guest.read("pages_success.0"))


def test_report_check_within_one_percent_beside_perf(report):
    rows = [r for r in report["check"] if r["zone"] and r["kernel"] and r["kernel"] >= 10_000]
    assert rows, report["check"]
    for r in rows:
        assert abs(r["diff_pct"]) <= 1.0, r


def test_layout_is_the_kernels_on_one_node(guest):
    """The layout report of a 1-node guest equals its /proc/zoneinfo and CMA debugfs."""
    rec = load(guest.out / "rec")
    assert_layout_is_the_kernels(
        df_layout(rec), df_cma_layout(rec), guest.read("zoneinfo"), guest.read("cma_debugfs")
    )


def test_phases_add_up_for_every_call(guest):
    """Beside perf and trace-cmd: phases + unattributed == latency, nothing lost."""
    assert_phases_add_up(guest.out / "rec")
