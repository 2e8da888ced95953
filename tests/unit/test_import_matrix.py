"""Import of each newer kernel's own trace text (6.12, 7.3 guests), against its counters.

Each capture (tests/data/traces/guest-*/, made by tests/data/traces/capture.sh inside
the guest of that kernel, see tests/data/traces/README.md) holds one window recorded at
once by a tracefs instance, trace-cmd and perf, with /proc/vmstat read by shell
builtins right outside the window: seven 23-page debugfs allocations, one 70000-page
request (larger than the area), one 4096-page allocation, a 23-page free.
"""

from __future__ import annotations

import lzma
import re
from pathlib import Path

import pandas as pd
import pytest

from cmaprof.analysis import check, load
from cmaprof.collectors import text_import
from tests.conftest import DATA

CAPTURES = ["guest-6.12", "guest-7.3"]


def _dir(name: str) -> Path:
    return DATA / "traces" / name


def _vmstat(g: Path) -> dict[str, int]:
    def read(p: Path) -> dict[str, int]:
        return {k: int(v) for k, v in (ln.split() for ln in p.read_text().splitlines())}

    before, after = read(g / "proc" / "vmstat.before"), read(g / "proc" / "vmstat.after")
    return {k: after[k] - before.get(k, 0) for k in after}


def _common(g: Path) -> dict:
    return {
        "formats_dir": g / "formats",
        "zoneinfo": g / "proc" / "zoneinfo",
        "pagetypeinfo": g / "proc" / "pagetypeinfo",
        "cma_ranges": [str(g / "cma")],
    }


def _window(g: Path) -> tuple[float, float]:
    """The tracefs instance's first and last event, widened by 0.5 ms (see test_import)."""
    text = lzma.decompress((g / "tracefs.trace.xz").read_bytes()).decode()
    ts = re.findall(r"\]\s+\S+\s+(\d+\.\d+):", text)
    return float(ts[0]) - 0.0005, float(ts[-1]) + 0.0005


@pytest.fixture(scope="module", params=CAPTURES)
def capture(request, tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    g = _dir(request.param)
    base = tmp_path_factory.mktemp(request.param)
    out = {"tracefs": base / "tracefs"}
    text_import.import_text(
        [g / "tracefs.trace.xz"],
        out["tracefs"],
        vmstat_start=g / "proc" / "vmstat.before",
        vmstat_end=g / "proc" / "vmstat.after",
        **_common(g),
    )
    for name, src in (("trace-cmd", "trace-cmd.report.xz"), ("perf", "perf.script.xz")):
        out[name] = base / name
        text_import.import_text([g / src], out[name], window=_window(g), **_common(g))
    return g, out


def test_cma_calls_against_the_kernel(capture):
    g, out = capture
    rec = load(out["tracefs"])
    calls = rec.df_cma_alloc()
    assert sorted(calls["pages_requested"]) == [23] * 7 + [4096, 70000]
    assert calls.loc[~calls["success"], "pages_requested"].tolist() == [70000]
    df = check.df_check(rec).set_index("counter")
    delta = _vmstat(g)
    assert df.loc["cma_alloc_success", "traced"] == delta["cma_alloc_success"] == 8
    fail = df.loc["cma_alloc_fail"]
    assert fail["kernel"] == delta["cma_alloc_fail"]
    assert fail["traced"] == fail["kernel"], fail.to_dict()
    if delta["cma_alloc_fail"] == 0:  # 6.12: returned before counting, no finish event
        assert "returned before cma_alloc_finish" in fail["note"]
    else:  # 7.3: the finish event says why
        (err,) = calls.loc[~calls["success"], "errno"].tolist()
        assert err < 0


def test_migrations_exact(capture):
    g, out = capture
    df = check.df_check(load(out["tracefs"])).set_index("counter")
    for c in ("pgmigrate_success", "pgmigrate_fail"):
        assert df.loc[c, "traced"] == df.loc[c, "kernel"] == _vmstat(g)[c]


def test_pages_against_pgalloc(capture):
    """mm_page_alloc pages of the window against pgalloc_dma32 (DMA and DMA32 only in
    these guests; no bulk-allocator return in either window). Measured: 6.12 and 7.3
    trace a few pages fewer than vmstat counts (7.3: 1605 of 1622), as 6.1 did (13 of
    1519 unexplained, tests/data/traces/README.md)."""
    g, out = capture
    df = check.df_check(load(out["tracefs"])).set_index("counter")
    traced, kernel = int(df.loc["pgalloc_dma32", "traced"]), _vmstat(g)["pgalloc_dma32"]
    assert int(df.loc["pgalloc_dma32", "kernel"]) == kernel
    assert traced <= kernel and kernel - traced <= 24, (traced, kernel)


def _cube(path: Path) -> pd.DataFrame:
    df = load(path).df_page_alloc()
    keys = ["gfp_flags", "zone_idx", "order", "migratetype_id", "cma_area_idx"]
    return df.groupby(keys)[["allocs", "pages"]].sum().sort_index()


def test_three_tools_give_the_same_tables(capture):
    _, out = capture
    recs = {k: load(v) for k, v in out.items()}
    cols = ["area", "pages_requested", "success", "busy_retries"]
    cma = {
        k: r.df_cma_alloc()[cols].sort_values(cols[1:3]).reset_index(drop=True)
        for k, r in recs.items()
    }
    for other in ("trace-cmd", "perf"):
        pd.testing.assert_frame_equal(cma["tracefs"], cma[other])
        pd.testing.assert_frame_equal(_cube(out["tracefs"]), _cube(out[other]))
        pd.testing.assert_frame_equal(
            recs["tracefs"].table("migrate").to_pandas(), recs[other].table("migrate").to_pandas()
        )
