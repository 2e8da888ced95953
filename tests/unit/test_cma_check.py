"""Failed cma_alloc() calls against the kernel's counters, where kernels disagree."""

from __future__ import annotations

from cmaprof.analysis.cma import _fail_row


def test_early_return_uncounted_by_the_kernel_is_said_not_inf():
    # 6.12: a request larger than the area returns before the kernel counts it
    row = _fail_row(
        "cma_alloc_fail", "/proc/vmstat", "calls", traced=1, early=1, kernel=0, off=None
    )
    assert row["traced"] == 0 and row["kernel"] == 0 and row["diff_pct"] == 0.0
    assert "1 failed call returned before cma_alloc_finish" in row["note"]
    assert "traced in all: 1" in row["note"]


def test_kernel_that_counts_early_returns_compares_all():
    # 6.1: cma_alloc() counts the same request (goto out)
    row = _fail_row(
        "cma_alloc_fail", "/proc/vmstat", "calls", traced=2, early=1, kernel=2, off=None
    )
    assert row["traced"] == 2 and row["note"] == ""


def test_any_other_mismatch_stays_visible():
    row = _fail_row(
        "reserved/alloc_pages_fail", "sysfs", "pages", traced=5, early=1, kernel=1, off=None
    )
    assert row["traced"] == 5 and row["note"] == "" and row["diff_pct"] == 400.0


def test_cma_probe_off_is_null_with_its_reason():
    row = _fail_row("cma_alloc_fail", "/proc/vmstat", "calls", 0, 0, 3, off="cma probe did not run")
    assert row["traced"] is None and row["diff_pct"] is None
    assert row["note"] == "cma probe did not run"
