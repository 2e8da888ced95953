"""A cause for every failed cma_alloc() call: the checked-in guest recordings (checked
against the kernel's own counters and dump_page() records) and one synthetic call per
cause class."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from cmaprof.analysis import causes, load, tables
from cmaprof.analysis.causes import Cause, Evidence, failures_frame
from cmaprof.kernel.procfs import CmaArea
from tests.conftest import DATA

REC = DATA / "recordings"
BLOCKERS = REC / "guest-6.1-blockers"
TOO_LARGE = REC / "guest-6.1-cma"


def _sys(rec_dir, which, rel):
    return int((rec_dir / "sys" / which / rel).read_text())


def test_vocabulary_is_defined_once_with_a_label_each():
    assert len({c.value for c in Cause}) == len(Cause) == len(causes.LABELS)
    assert causes.CAUSE_NAMES[-1] == "unknown"


def test_real_request_larger_than_the_area():
    rec = load(TOO_LARGE)
    df = causes.df_cma_failures(rec)
    assert len(df) == 1
    row = df.iloc[0]
    count = _sys(TOO_LARGE, "start", "cma/reserved/count")  # debugfs: 16384
    assert row.pages_requested == 20000 > count
    assert row.cause == Cause.TOO_LARGE_FOR_AREA.value and row.decided_by == "area count"
    # the kernel counted this failure: sysfs alloc_pages_fail grew by the request
    fail = _sys(TOO_LARGE, "end", "cma/reserved/alloc_pages_fail") - _sys(
        TOO_LARGE, "start", "cma/reserved/alloc_pages_fail"
    )
    assert fail == row.pages_requested
    end, start = rec.vmstat("end"), rec.vmstat("start")
    assert end["cma_alloc_fail"] - start["cma_alloc_fail"] == len(df)


def test_real_ebusy_failure_with_buffer_head_blockers():
    rec = load(BLOCKERS)
    df = causes.df_cma_failures(rec)
    assert len(df) == 1
    row = df.iloc[0]
    assert row.cause == Cause.MIGRATION_FAILED.value and row.decided_by == "blockers"
    assert row.busy_retries == 97 and "97 busy retries" in row.evidence
    assert "no errorno on this kernel" in row.evidence  # 6.1: the ending is inferred
    assert row.blocker_causes == "bdev_buffer_head" and row.blocker_pages == 32
    ours = {int(p) for p in row.blocker_pfns.split(",")}
    assert row.first_busy_pfn in ours
    # the kernel's own dump_page() records of the same run ("migration failure"): every
    # pfn it printed is one we name, and every one is block-device page cache
    dmesg = (DATA / "dmesg/guest-6.1-blockers.txt").read_text()
    kernel_pfns = {int(x, 16) for x in re.findall(r"pfn:(0x[0-9a-f]+)", dmesg)}
    assert kernel_pfns and kernel_pfns <= ours
    assert set(re.findall(r"aops:(\S+)", dmesg)) == {"def_blk_aops"}
    # the kernel counted the failed pages
    fail = _sys(BLOCKERS, "end", "cma/reserved/alloc_pages_fail") - _sys(
        BLOCKERS, "start", "cma/reserved/alloc_pages_fail"
    )
    assert fail == row.pages_requested == 49152


def test_successful_recordings_have_no_failed_calls():
    for path in (REC / "guest-stock" / "iter-1", REC / "guest-movable" / "iter-1"):
        rec = load(path)
        assert causes.df_cma_failures(rec).empty
        assert causes.table_cma_failure_causes(rec) == ""
        assert rec.vmstat("end")["cma_alloc_fail"] == rec.vmstat("start")["cma_alloc_fail"]


def test_report_lists_causes_with_the_100_percent_total():
    text = tables.table_report(load(BLOCKERS))
    assert "Why cma_alloc() failed (each failed call: one cause)" in text
    lines = text.splitlines()
    i = lines.index("Why cma_alloc() failed (each failed call: one cause)")
    assert lines[i + 2].split()[-2:] == ["1", "100.0%"] and lines[i + 2].startswith("migration")
    assert lines[i + 3].split() == ["total", "1", "100.0%"]
    assert max(map(len, lines)) <= 80
    red = tables.table_report(load(BLOCKERS), redact=True)
    assert "migration failed" in red and "0x71408" in text and "0x71408" not in red
    frames = tables.report_tables(load(BLOCKERS), redact=True)
    assert frames["cma_failed_calls"]["blocker_pfns"].isna().all()


# ------------------------------------------------------------------ synthetic calls

AREA = CmaArea("a", 0x40000, 1024, "debugfs")  # base aligned to order 18


def _call(**kw):
    row = {
        "start_ns": 10_000,
        "latency_ns": 5_000,
        "area": "a",
        "pages_requested": 100,
        "align": 0,
        "success": False,
        "errno": None,
        "busy_retries": 0,
        "migrate_succeeded": 0,
        "migrate_failed": 0,
        "isolate_tests": 0,
        "isolate_failures": 0,
        "first_busy_pfn": None,
        "pfn": None,
        "pid": 7,
        "comm": "t",
    }
    row.update(kw)
    return pd.DataFrame([row])


def _used(used_pages, t_ns=5_000, later=None):
    """Samples at t=0 (``used_pages``) and at ``t_ns`` (``later``, default the same)."""
    later = used_pages if later is None else later
    return pd.DataFrame(
        {
            "t_ns": [0, t_ns],
            "area": ["a", "a"],
            "used_pages": [used_pages, later],
            "count_pages": [1024, 1024],
        }
    )


def _blockers(stage, cause="anon", pfns=(0x40010, 0x40020)):
    return pd.DataFrame(
        {
            "tid": [7] * len(pfns),
            "cma_start_ns": [10_000] * len(pfns),
            "stage": [stage] * len(pfns),
            "cause": [cause] * len(pfns),
            "state": ["pinned"] * len(pfns),
            "pfn": list(pfns),
        }
    )


def _one(calls, **ev):
    ev.setdefault("areas", {"a": AREA})
    df = failures_frame(calls, Evidence(**ev))
    assert len(df) == 1
    return df.iloc[0]


CASES = {
    "too_large_for_area": (_call(pages_requested=1025), {}),
    "never_fits": (
        # the hugetlb0: 1 GiB at base pfn 261632, align 18 (1 GiB)
        _call(area="h", pages_requested=262144, align=18),
        {"areas": {"h": CmaArea("h", 261632, 262144, "debugfs")}},
    ),
    "too_large_for_available": (_call(pages_requested=200), {"used": _used(900)}),
    "no_aligned_free_range": (_call(pages_requested=500), {"used": _used(100)}),
    "isolation_refused": (
        _call(busy_retries=3, pfn=0x40300),
        {"isolate": True},
    ),
    "migration_failed": (
        _call(busy_retries=2, isolate_tests=2, isolate_failures=2, migrate_failed=5, pfn=0x40200),
        {"migrate": True, "isolate": True},
    ),
    "busy_retries": (
        _call(busy_retries=4, isolate_tests=4, isolate_failures=4, pfn=0x40300),
        {"isolate": True},
    ),
    "enomem": (
        _call(errno=-12, pfn=0x40000, migrate_succeeded=10, migrate_failed=3),
        {"errorno": True, "migrate": True},
    ),
    "interrupted": (_call(errno=-4, pfn=0x40000, busy_retries=1), {"errorno": True}),
    "unknown": (_call(pfn=0x40000, isolate_tests=1), {"isolate": True}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_cause_class(name):
    calls, ev = CASES[name]
    row = _one(calls, **ev)
    assert row.cause == name, row.evidence
    assert row.evidence and row.decided_by


def test_every_class_has_a_synthetic_case():
    assert set(CASES) == set(causes.CAUSE_NAMES)


def _case(name):
    calls, ev = CASES[name]
    return _one(calls, **ev)


def test_evidence_says_what_decided_and_what_was_missing():
    row = _case("never_fits")
    # ALIGN(261632, 2**18) = 262144: 512 pages past the base, 261632 pages left
    assert "base+512" in row.evidence and "leaving 261632" in row.evidence
    assert "order 9" in row.evidence
    row = _case("too_large_for_available")
    assert "124 free of 1024" in row.evidence and "debugfs used 900, read between" in row.evidence
    row = _case("busy_retries")
    assert "-EBUSY after 4 busy retries" in row.evidence
    assert "no errorno on this kernel" in row.evidence
    assert "blockers probe not run" in row.evidence and "migrate probe not run" in row.evidence
    row = _case("unknown")
    assert "-ENOMEM or -EINTR" in row.evidence
    row = _one(_call(errno=-22, pfn=0x40000), errorno=True)
    assert row.cause == "unknown" and "-EINVAL" in row.evidence


def test_a_used_sample_maybe_read_during_the_call_is_not_taken():
    # the sample stamped 8000 ns may have been read after the call started at 10000 ns
    # (record reads debugfs after the page_alloc cube); the one stamped 0 was read before
    # the tick at 8000: 100 used, 924 free >= 500
    row = _one(_call(pages_requested=500), used=_used(100, t_ns=8_000, later=900))
    assert row.cause == "no_aligned_free_range"
    row = _one(_call(pages_requested=500), used=_used(900, t_ns=10_001))
    assert row.cause == "no_aligned_free_range"
    assert "no debugfs used sample surely read before the call" in row.evidence


def test_no_aligned_free_range_gives_the_saved_maxchunk():
    calls, ev = CASES["no_aligned_free_range"]
    row = _one(calls, **ev, maxchunk={"a": {"start": 900, "end": 300}})
    assert "900 pages at the start, 300 pages at the end" in row.evidence
    assert "no debugfs maxchunk" in _case("no_aligned_free_range").evidence


def test_enomem_without_a_range_tried_is_the_bitmap_search():
    row = _one(_call(errno=-12, pages_requested=500), errorno=True, used=_used(100))
    assert row.cause == "no_aligned_free_range" and "errorno -ENOMEM" in row.evidence


def test_blockers_decide_between_migration_and_isolation():
    base = _call(busy_retries=1, isolate_tests=1, isolate_failures=1, pfn=0x40000)
    row = _one(base, blockers=True, blocker_rows=_blockers("migrate", "bdev_buffer_head"))
    assert row.cause == "migration_failed" and row.blocker_causes == "bdev_buffer_head"
    assert row.blocker_pfns == f"{0x40010},{0x40020}" and row.blocker_pages == 2
    row = _one(base, blockers=True, blocker_rows=_blockers("isolate", "unmovable_kernel"))
    assert row.cause == "isolation_refused" and "unmovable_kernel" in row.evidence
    # blockers of another call do not count
    other = _blockers("migrate").assign(cma_start_ns=99)
    row = _one(base, blockers=True, blocker_rows=other, isolate=True)
    assert row.cause == "busy_retries"


def test_one_cause_per_failed_call_and_shares_sum_to_one():
    calls = pd.concat([CASES[n][0] for n in ("too_large_for_area", "interrupted")])
    calls = pd.concat([calls, _call(success=True), _call(pages_requested=2000)])
    df = failures_frame(calls, Evidence(areas={"a": AREA}, errorno=True))
    assert len(df) == 3 and df["cause"].notna().all()
    assert list(df["cause"].cat.categories) == causes.CAUSE_NAMES
    assert list(df["cause"]) == ["too_large_for_area", "interrupted", "too_large_for_area"]
    by = causes.causes_frame(df)
    assert dict(zip(by["cause"], by["calls"])) == {"too_large_for_area": 2, "interrupted": 1}
    assert by["share"].sum() == pytest.approx(1.0)


def test_compare_shows_causes_per_side():
    from cmaprof.analysis.compare import load_side

    sides = [load_side(TOO_LARGE), load_side(BLOCKERS)]
    text = causes.table_causes_compare(sides)
    rows = {ln[:30].strip(): ln[30:].split() for ln in text.splitlines()[2:]}
    assert rows["request larger than the area"] == ["1", "(100%)", "0", "(0%)"]
    assert rows["migration failed"] == ["0", "(0%)", "1", "(100%)"]
    assert rows["total failed calls"] == ["1", "1"]
    assert max(map(len, text.splitlines())) <= 80
    stock = load_side(REC / "guest-stock")
    assert causes.table_causes_compare([stock]).endswith("none on any side")
    assert "not recorded" in causes.table_causes_compare([load_side(REC / "host-6.18-anon")])


def test_compare_side_without_failures_has_no_share():
    """A side with no failed call shows its 0 without a share (was ``0 (nan%)``)."""
    from cmaprof.analysis.compare import load_side

    text = causes.table_causes_compare([load_side(BLOCKERS), load_side(REC / "guest-movable")])
    rows = {ln[:30].strip(): ln[30:].split() for ln in text.splitlines()[2:]}
    assert rows["migration failed"] == ["1", "(100%)", "0"]
    assert "nan" not in text


def test_dmesg_cross_check():
    # lines in the format of 6.1 mm/cma.c (pr_err_ratelimited in cma_alloc())
    dmesg = (
        "[  211.9] cma_alloc: reserved: alloc failed, req-size: 49152 pages, ret: -16\n"
        "[  300.1] some other line\n"
        "[  301.0] cma_alloc: big: alloc failed, req-size: 262144 pages, ret: -12\n"
    )
    parsed = causes.parse_dmesg_alloc_failed(dmesg)
    assert parsed.to_dict("records") == [
        {"area": "reserved", "pages": 49152, "ret": -16},
        {"area": "big", "pages": 262144, "ret": -12},
    ]
    fails = causes.df_cma_failures(load(BLOCKERS))
    never = _case("never_fits")
    both = pd.concat(
        [fails, pd.DataFrame([never]).assign(area="big", start_ns=fails.start_ns[0] + 1)]
    )
    chk = causes.check_against_dmesg(both, parsed)
    assert chk["kernel_ret"].tolist() == [-16, -12] and chk["agrees"].all()
    # 6.1 prints no line for a request larger than the area
    chk = causes.check_against_dmesg(causes.df_cma_failures(load(TOO_LARGE)), parsed)
    assert chk["kernel_ret"].isna().all() and chk["agrees"].all()
    # a wrong cause disagrees with the kernel
    wrong = fails.assign(cause=pd.Categorical(["interrupted"], categories=causes.CAUSE_NAMES))
    assert not causes.check_against_dmesg(wrong, parsed)["agrees"].any()


def test_plot_shows_every_cause_class_per_side():
    from cmaprof.analysis.compare import load_side

    fig = causes.plot_failed_calls_by_cause([load_side(TOO_LARGE), load_side(BLOCKERS)])
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [Cause.TOO_LARGE_FOR_AREA.label, Cause.MIGRATION_FAILED.label]
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == [0, 0, 1, 1]  # one failed call of each cause, on its own side
    empty = causes.plot_failed_calls_by_cause([load_side(REC / "guest-stock")])
    assert "no failed cma_alloc() call" in empty.axes[0].texts[0].get_text()


def test_errorno_zero_on_a_failed_call_is_no_evidence():
    row = _one(_call(errno=0, pfn=0x40000, isolate_tests=1), errorno=True, isolate=True)
    assert row.cause == "unknown" and "-ENOMEM or -EINTR" in row.evidence


def test_sigkill_pending_at_return_is_interrupted_without_errorno():
    """6.1 has no errorno: the cma probe marks a failed call that returned with SIGKILL
    pending (measured in the 6.1 guest: dmesg 'alloc failed, req-size: 60000 pages,
    ret: -4' for a SIGKILLed debugfs writer)."""
    row = _one(
        _call(errno=-4, pfn=0x40000, outcome_source="inferred: SIGKILL pending at return"),
        errorno=False,
    )
    assert row.cause == "interrupted" and row.decided_by == "fatal signal", row.evidence
    assert "SIGKILL pending at return" in row.evidence
    # the same failure without the mark stays undecided between -ENOMEM and -EINTR
    row = _one(_call(pfn=0x40000, outcome_source="inferred: returned page"), errorno=False)
    assert row.cause == "unknown" and "-ENOMEM or -EINTR" in row.evidence
