"""``record --by comm,tgid,stack`` against perf on the same window (issue 17 item 1).

``cmaprof record --by comm,tgid,stack`` runs system-wide; beside it, ``perf record -a
-g -e kmem:mm_page_alloc -- byfault 96`` runs a small C program (``BYFAULT``: maps
96 MiB of anonymous memory without THP and writes one byte per page, so each write
fault allocates one order-0 page; a distinctive comm). perf enables its events before
it lets the program exec and stops after it exits, and cmaprof counts from before perf
starts to after it exits, so every allocation of the program is inside both windows:
the window-edge tolerance of the other live tests (allocations of processes that run
across an edge) is zero here, and the pages of comm ``byfault`` must be equal exactly.
perf's buffer is 8 MiB per CPU and the test fails if perf reports lost samples.

The checks:

* per (comm, pid) of the program, perf's pages (``1 << order`` of every event with a
  page) == cmaprof's ``page_alloc_by`` pages for (comm, tgid);
* ``page_alloc_by`` totals + ``page_alloc.by`` overflow == ``page_alloc`` totals, and
  the metadata's ``self_tgid`` is the cmaprof process;
* the program's top call path in cmaprof (its stacks by pages, the tracing frames
  trimmed: analysis/stacks.py ``trim``) is, function by function, perf's most frequent
  callchain of the program's events (kernel part, trimmed the same way), with the same
  pages, and that chain is a page fault's (perf names ``handle_mm_fault`` in it);
* no kernel address in any file of the recording, its reports or plots (the scan of
  tests/unit/test_redact.py).
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import start_record

MIB = 96
COMM = "byfault"
BYFAULT = r"""
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv)
{
	size_t len = (size_t)atoi(argv[1]) << 20;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return 1;
	madvise(p, len, MADV_NOHUGEPAGE);
	for (size_t off = 0; off < len; off += 4096)
		p[off] = 1;
	munmap(p, len);
	return 0;
}
"""
#: perf script's event header: ``comm tid event: field=value ...``
HEADER = re.compile(r"^(\S.*?)\s+(\d+)\s+kmem:mm_page_alloc:(.*)$")
#: a callchain line: ``\t<hex address> <symbol>``; kernel frames are in the upper half
FRAME = re.compile(r"^\s+([0-9a-f]+)\s+(\S+)")
KERNEL_HALF = 0xFFFF800000000000


def _build(tmp: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the byfault workload")
    src, binary = tmp / f"{COMM}.c", tmp / COMM
    src.write_text(BYFAULT)
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(src)], check=True)
    return binary


def parse_perf_script(text: str) -> list[tuple[str, int, int, tuple[str, ...]]]:
    """(comm, tid, pages, kernel callchain function names innermost first) of each
    ``kmem:mm_page_alloc`` event with a page (failed allocations, pfn -1, left out)."""
    out = []
    cur: list | None = None
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            cur = None
            fields = dict(re.findall(r"(\w+)=(\S+)", m.group(3)))
            if fields.get("pfn", "").lower() in ("0xffffffffffffffff", "-1"):
                continue
            cur = [m.group(1), int(m.group(2)), 1 << int(fields["order"]), []]
            out.append(cur)
        elif cur is not None:
            f = FRAME.match(line)
            if f and int(f.group(1), 16) >= KERNEL_HALF:
                cur[3].append(f.group(2))
    return [(c, t, p, tuple(ch)) for c, t, p, ch in out]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if shutil.which("perf") is None:
        pytest.skip("perf not installed (scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("by")
    binary = _build(tmp)
    rec = tmp / "rec"
    cm = start_record(rec, "--by", "comm,tgid,stack")
    try:
        data = tmp / "perf.data"
        perf = subprocess.run(
            ["perf", "record", "-q", "-m", "8M", "-a", "-g", "-e", "kmem:mm_page_alloc"]
            + ["-o", str(data), "--", str(binary), str(MIB)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert perf.returncode == 0, perf.stderr
    finally:
        cm.send_signal(signal.SIGINT)
        _, err = cm.communicate(timeout=120)
    assert cm.returncode == 0, err
    stats = subprocess.run(
        ["perf", "report", "-i", str(data), "--stats"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout
    lost = [ln for ln in stats.splitlines() if "LOST" in ln and not ln.strip().endswith(" 0")]
    assert not lost, f"perf lost samples; the comparison would not be exact: {lost}"
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,tid,event,trace,ip,sym"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return rec, parse_perf_script(script), cm.pid


def test_pages_per_comm_and_tgid_equal_perfs(run):
    """Exact, less the events our program missed: a tracepoint hit while the BPF program
    runs on the same CPU (an interrupt's allocation amid ours) is skipped by the kernel
    and counted in the program's recursion_misses (metadata ``lost``); such an
    allocation counts for the interrupted task, possibly byfault. Seen once in 12 runs."""
    from cmaprof.analysis import load

    rec_dir, events, _ = run
    rec = load(rec_dir)
    perf_pages = collections.Counter()
    perf_allocs = collections.Counter()
    for c, t, p, _ in events:
        if c == COMM:
            perf_pages[t] += p
            perf_allocs[t] += 1
    by = rec.df_page_alloc_by()
    mine = by[by["comm"] == COMM].groupby("tgid")[["allocs", "pages"]].sum()
    missed = sum(rec.meta.lost.values())
    msg = f"{COMM}: perf pages {dict(perf_pages)}, cmaprof {mine.to_dict()}, missed {missed}"
    print(msg)
    assert len(perf_pages) == 1 and sum(perf_pages.values()) >= MIB * 256, msg
    assert [int(t) for t in mine.index] == list(perf_pages), msg
    (tgid,) = perf_pages
    gap = perf_allocs[tgid] - int(mine.loc[tgid, "allocs"])
    assert 0 <= gap <= missed, msg
    if missed == 0:
        assert int(mine.loc[tgid, "pages"]) == perf_pages[tgid], msg


def test_by_totals_plus_overflow_equal_the_cube(run):
    from cmaprof.analysis import load

    rec_dir, _, cm_pid = run
    rec = load(rec_dir)
    by, cube = rec.df_page_alloc_by(), rec.df_page_alloc()
    info = rec.meta.page_alloc.by
    assert info.by_keys == ["comm", "tgid", "stack"]
    assert info.entries_used == len(by) <= info.max_entries
    assert int(by["pages"].sum()) + info.overflow_pages == int(cube["pages"].sum())
    assert int(by["allocs"].sum()) + info.overflow_allocs == int(cube["allocs"].sum())
    assert info.self_tgid == cm_pid and info.workload_tgid is None
    # cmaprof's own start-up and reading allocate too: its tgid has rows
    assert (by["tgid"] == cm_pid).any()


def test_top_stack_is_perfs_page_fault_callchain(run):
    from cmaprof.analysis import load
    from cmaprof.analysis import stacks as st

    rec_dir, events, _ = run
    rec = load(rec_dir)
    by = rec.df_page_alloc_by()
    frames = st.stack_frames(rec, "pa_stacks")
    # stacks that differ only in the tracing frames (bpf_trace_run4 returns to two
    # places, with bpf_stats on and off) are one call path: summed by trimmed functions
    paths: collections.Counter = collections.Counter()
    for sid, pages in by[by["comm"] == COMM].groupby("stack_id")["pages"].sum().items():
        paths[tuple(st.function(f) for f in st.trim(frames[int(sid)]))] += int(pages)
    ours, our_pages = paths.most_common(1)[0]
    # perf's chain may start in the tracepoint's own frames too (__traceiter_*): trimmed
    chains = collections.Counter(
        st.trim(ch) for c, _, p, ch in events if c == COMM for _ in range(p)
    )
    perf_top, n = chains.most_common(1)[0]
    assert n > 0.9 * MIB * 256, chains.most_common(3)
    assert "handle_mm_fault" in perf_top, perf_top  # perf's own chain is a page fault's
    assert ours == perf_top, f"ours {ours}\nperf {perf_top}"
    print(f"top stack {our_pages} pages, perf's top chain {n}: {' <- '.join(ours)}")
    # and the pages of that call path are perf's count of that chain
    assert our_pages == n


def test_no_kernel_address_in_the_recording(run, tmp_path):
    from tests.unit.test_redact import scan_outputs

    rec_dir, _, _ = run
    res = scan_outputs(rec_dir, tmp_path)
    assert res["files"] > 10
    assert (rec_dir / "tables" / "stacks.parquet").exists()


def test_a_full_table_is_counted_as_overflow(tmp_path):
    """``--by-entries 8``: the table fills at once; what did not fit is in the overflow
    counts, and the totals still add up to the cube's exactly."""
    from cmaprof.analysis import load
    from tests.conftest import run_cli

    res = run_cli("record", "-o", str(tmp_path / "r"), "--by", "comm,stack", "--by-entries", "8",
                  "-d", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rec = load(tmp_path / "r")
    by, cube, info = rec.df_page_alloc_by(), rec.df_page_alloc(), rec.meta.page_alloc.by
    assert info.max_entries == 8 and info.entries_used == len(by) <= 8
    assert info.overflow_allocs > 0 and info.overflow_pages >= info.overflow_allocs
    assert int(by["pages"].sum()) + info.overflow_pages == int(cube["pages"].sum())
    assert int(by["allocs"].sum()) + info.overflow_allocs == int(cube["allocs"].sum())


@pytest.mark.parametrize(
    "args, error",
    [
        (["--by", "pid"], "--by pid: unknown key; known: comm, tgid, stack"),
        (["--by-entries", "10"], "--by-entries sizes the tables of --by: give --by KEY too"),
        (["--by", "comm", "--by-entries", "0"], "--by-entries 0: give 1 to"),
    ],
)
def test_bad_by_is_refused_before_any_file(tmp_path, args, error):
    from tests.conftest import run_cli

    res = run_cli("record", "-o", str(tmp_path / "r"), *args, "-d", "1")
    assert res.returncode == 2 and error in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()
