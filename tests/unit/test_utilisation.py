"""CMA utilisation over time (held / borrowed / free) on the checked-in guest recordings,
checked against the kernel's own counters saved in them."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from cmaprof.analysis import load, plots, tables, utilisation
from tests.conftest import DATA

REC = DATA / "recordings"
STOCK = REC / "guest-stock" / "iter-1"
MOVABLE = REC / "guest-movable" / "iter-1"


def _vmstat_file(path):
    return {k: int(v) for k, v in (ln.split() for ln in path.read_text().splitlines())}


def test_first_and_last_samples_are_the_kernel_counters():
    rec = load(STOCK)
    df = utilisation.df_cma_utilisation(rec)
    first, last = df.iloc[0], df.iloc[-1]
    count = int((STOCK / "sys/start/cma/reserved/count").read_text())
    assert (df["count_pages"] == count).all()
    # t=0: debugfs used at the start, nr_free_cma of proc/start/vmstat
    assert first.held_pages == int((STOCK / "sys/start/cma/reserved/used").read_text()) == 138
    assert first.free_pages == _vmstat_file(STOCK / "proc/start/vmstat")["nr_free_cma"] == 65398
    assert first.borrowed_pages == count - 65398 - 138 == 0
    # the end: 20 calls of 1021 pages held (sysfs alloc_pages_success grew by 20420)
    grew = int((STOCK / "sys/end/cma/reserved/alloc_pages_success").read_text()) - int(
        (STOCK / "sys/start/cma/reserved/alloc_pages_success").read_text()
    )
    assert grew == 20 * 1021
    assert df["held_pages"].max() == 138 + grew
    assert last.free_pages == _vmstat_file(STOCK / "proc/end/vmstat")["nr_free_cma"]
    assert (df["held_pages"] + df["free_pages"] + df["borrowed_pages"] == count).all()


def test_movable_layout_lends_the_area_to_ordinary_allocations():
    stock = utilisation.df_cma_utilisation(load(STOCK))
    movable = utilisation.df_cma_utilisation(load(MOVABLE))
    # inside ZONE_MOVABLE the area was almost all borrowed at its peak; in DMA32 it was not
    assert movable["borrowed_pages"].max() > 0.9 * 65536
    assert stock["borrowed_pages"].max() < 0.25 * 65536
    assert movable["free_pages"].min() == 0


def test_several_areas_give_no_per_area_free_pages(tmp_path):
    import shutil

    dst = tmp_path / "rec"
    shutil.copytree(STOCK, dst)
    rec = load(dst)
    rec.meta["cma_areas"] = rec.meta["cma_areas"] + [
        {"name": "other", "base_pfn": 0x10000, "count": 1024, "source": "debugfs"}
    ]
    df = utilisation.df_cma_utilisation(rec)
    assert df["free_pages"].isna().all() and df["borrowed_pages"].isna().all()
    assert "only the global nr_free_cma" in " ".join(utilisation.table_cma_utilisation(rec).split())


def test_report_line_and_plot():
    rec = load(MOVABLE)
    text = tables.table_report(rec)
    assert "CMA utilisation per interval sample (pages)" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("reserved ") and "67" in ln)
    assert line.split()[:3] == ["reserved", "67", "65536"]
    assert max(map(len, text.splitlines())) <= 80
    assert "cma_utilisation" in tables.report_tables(rec)
    fig = utilisation.plot_cma_held_borrowed_free(rec)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "held by cma_alloc",
        "borrowed",
        "free",
    ]


def test_save_all_writes_the_stacked_plot(tmp_path):
    paths = plots.save_all(load(STOCK), tmp_path, "png")
    assert tmp_path / "cma_held_borrowed_free.png" in paths
    assert (tmp_path / "cma_held_borrowed_free.png").stat().st_size > 0
    assert not any(
        "held" in p.name for p in plots.save_all(load(REC / "host-6.18-anon"), tmp_path / "h")
    )


def test_no_series_no_rows():
    df = utilisation.df_cma_utilisation(load(REC / "host-6.18-anon"))
    assert df.empty and list(df.columns) == utilisation.COLUMNS
    assert isinstance(df, pd.DataFrame)
