"""cmaprof plot on the checked-in recordings: OO matplotlib, 800 px wide; a figure is
written only with data, has a legend where it has several series, a title that fits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from cmaprof.analysis import compare, plots
from cmaprof.analysis.cma import df_cma_calls
from cmaprof.analysis.compare import load_side
from tests.conftest import DATA, run_cli

N_STOCK = 2  # stock iterations in the fixtures
STOCK = DATA / "recordings" / "guest-stock"
MOVABLE = DATA / "recordings" / "guest-movable"
HOST = DATA / "recordings" / "host-6.18-anon"
BLOCKERS = DATA / "recordings" / "guest-6.1-blockers"
#: A recording set on which each figure has data.
HAS_DATA = {
    "cma_latency_cdf": [STOCK, MOVABLE],
    "zone_gfp": [STOCK, MOVABLE],
    "cma_utilisation": [STOCK, MOVABLE],
    "failure_causes": [BLOCKERS],
    "alloc_rate": [HOST],
    "failed_calls_by_cause": [BLOCKERS],
}


@pytest.fixture(scope="module")
def sides():
    return [load_side(STOCK), load_side(MOVABLE)]


@pytest.mark.parametrize("name", list(plots.SIDE_PLOTS))
def test_figure_names_kernel_layout_workload(sides, name):
    fig = plots.SIDE_PLOTS[name][0](sides)
    assert isinstance(fig, Figure)
    assert fig.get_size_inches()[0] * fig.dpi == 800
    sup = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    text = "\n".join([ax.get_title() for ax in fig.axes] + [sup])
    assert "6.1.192" in text
    assert "CMA in DMA32" in text and "CMA in Movable" in text
    assert "iter.sh" in text


def test_latency_cdf_has_one_line_per_side(sides):
    fig = plots.plot_cma_latency_cdf(sides)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert len(labels) == 2 and "guest-stock" in labels[0] and f"{20 * N_STOCK} calls" in labels[0]


def test_utilisation_marks_every_call(sides):
    fig = plots.plot_cma_utilisation(sides)
    top = next(ax for ax in fig.axes if ax.get_title().startswith("guest-stock"))
    marks = sum(
        len(line.get_xdata()) for line in top.get_lines() if line.get_marker() in ("o", "x")
    )
    calls = sum(len(r.df_cma_alloc()) for r in sides[0].recordings)
    assert marks == calls


def test_failure_causes_say_not_recorded_without_blockers(sides):
    assert "blockers probe" in plots.SIDE_PLOTS["failure_causes"][1](sides)
    fig = plots.plot_failure_causes(sides)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("not recorded" in t for t in texts)


def test_cli_writes_every_plot(tmp_path, sides):
    proc = run_cli("plot", str(STOCK), str(MOVABLE), "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    written = {"cma_latency_cdf", "zone_gfp", "cma_utilisation", "alloc_rate"}
    for name in written:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    assert not (tmp_path / "failure_causes.png").exists()
    assert "skipped failure_causes: needs the blockers probe" in proc.stderr
    from matplotlib.image import imread

    assert imread(tmp_path / "zone_gfp.png").shape[1] == 800
    svg = tmp_path / "svg"
    paths = plots.save_sides(sides, svg, "svg")
    assert [p.suffix for p in paths] == [".svg"] * len(written)
    assert all(p.read_text().lstrip().startswith("<?xml") for p in paths)


def test_no_pyplot_in_library_code():
    # pyplot keeps global figure state; library figures are built with Figure()
    # the package: every module of it
    src = "\n".join(p.read_text() for p in sorted(Path(plots.__file__).parent.glob("*.py")))
    assert not re.search(
        r"^\s*(import matplotlib\.pyplot|from matplotlib import pyplot)", src, re.MULTILINE
    )
    assert "plt." not in src and "pyplot." not in src


def _series(fig: Figure) -> int:
    """Drawn data series: lines with points, bar containers, step patches."""
    n = 0
    for ax in fig.axes:
        n += sum(1 for line in ax.get_lines() if len(line.get_xdata()) and line.get_visible())
        n += len(ax.containers)
        n += sum(1 for p in ax.patches if type(p).__name__ == "StepPatch")
    return n


def _legend_entries(fig: Figure) -> int:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return sum(len(lg.get_texts()) for lg in legends)


def _titles_fit(fig: Figure) -> None:
    """Every title drawn inside the figure, no line longer than a title line holds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    texts = [fig._suptitle] if fig._suptitle is not None else []
    texts += [ax.title for ax in fig.axes if ax.get_title()]
    assert texts
    for t in texts:
        ext = t.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1, t.get_text()
        assert ext.y1 <= box.y1 + 1, t.get_text()
        assert all(len(line) <= plots.TITLE_CHARS for line in t.get_text().splitlines())


@pytest.mark.parametrize("name", list(plots.SIDE_PLOTS))
def test_figure_has_data_legend_and_a_title_that_fits(name):
    sides = [load_side(p) for p in HAS_DATA[name]]
    fn, why_empty = plots.SIDE_PLOTS[name]
    assert why_empty(sides) is None
    fig = fn(sides)
    series = _series(fig)
    assert series >= 1, name
    if series > 1:
        assert _legend_entries(fig) >= 2, name
    _titles_fit(fig)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("cma_latency_cdf", "no side ran the cma probe"),
        ("cma_utilisation", "no CMA area"),
        ("failure_causes", "needs the blockers probe"),
    ],
)
def test_host_recording_skips_what_it_has_no_data_for(tmp_path, name, why):
    skipped: dict[str, str] = {}
    paths = plots.save_sides([load_side(HOST)], tmp_path, "png", skipped)
    assert {p.stem for p in paths} == {"zone_gfp", "alloc_rate"}
    assert why in skipped[name]
    assert not (tmp_path / f"{name}.png").exists()


def test_alloc_rate_draws_traced_and_vmstat_per_zone():
    fig = plots.plot_alloc_rate([load_side(HOST)])
    labels = [
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()
    ]
    assert labels == ["Normal traced", "Normal vmstat"]


def test_zone_gfp_does_not_stack_cma_onto_the_zones(sides):
    """The left bars sum to the pages per zone; the CMA panel is their CMA part."""
    from cmaprof.analysis.compare import LOGICAL_CMA, df_compare

    fig = plots.plot_zone_gfp_sides(sides)
    left, right = fig.axes[:2]
    mib = 4096 / (1 << 20)

    def heights(ax):
        tops: dict[float, float] = {}
        for c in ax.containers:
            for r in c:
                tops[r.get_x()] = tops.get(r.get_x(), 0.0) + r.get_height()
        return sorted(tops.values())

    df = df_compare(sides)
    amean = df[(df["stat"] == "Amean") & (df["section"] == "zones")]
    zones = amean[(amean["metric"] != LOGICAL_CMA) & (amean["value"] > 0)]["value"]
    assert heights(left) == pytest.approx(sorted(zones * mib))
    cma = amean[amean["metric"] == LOGICAL_CMA]["value"]
    assert heights(right) == pytest.approx(sorted(cma * mib))
    assert not any(LOGICAL_CMA in t.get_text() for t in left.get_xticklabels())


def test_zone_gfp_names_the_buffer_head_class():
    """GFP_NOFS|__GFP_MOVABLE without __GFP_HIGHMEM: placed in CMA, a ZONE_CMA kernel
    refuses it; named in the legend even though it is small."""
    fig = plots.plot_zone_gfp_sides([load_side(BLOCKERS)])
    labels = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    bh = [x for x in labels if x.startswith("GFP_NOFS|__GFP_NOFAIL|") and "__GFP_MOVABLE" in x]
    assert bh and bh[0].endswith("[ZONE_CMA refuses]")


def test_one_call_cdf_still_shows_the_call():
    side = load_side(BLOCKERS)
    (lat,) = compare.latencies_ns(side) / 1e6
    fig = plots.plot_cma_latency_cdf([side])
    (ax,) = fig.axes
    (line,) = [x for x in ax.get_lines() if not x.get_label().startswith("_")]
    assert len(line.get_xdata()) >= 2 and line.get_marker() == "o"
    lo, hi = ax.get_xlim()
    assert lo < lat < hi
    assert "1 call" in line.get_label()


def test_utilisation_marks_each_call_at_the_size_it_asked_for():
    """The blockers run's one call asked for 49152 of 65536 pages and failed: an x at
    75%, not at the top of the axis whatever the request."""
    side = load_side(BLOCKERS)
    fig = plots.plot_cma_utilisation([side])
    top = fig.axes[0]
    (fail,) = [x for x in top.get_lines() if x.get_marker() == "x" and len(x.get_xdata())]
    calls = df_cma_calls(side.recordings[0])
    want = calls["pages_requested"].iloc[0] / side.recordings[0].meta["cma_areas"][0]["count"]
    assert list(fail.get_ydata()) == pytest.approx([want * 100])
    assert 0 < want * 100 < 100


@pytest.mark.parametrize("name", list(plots.SIDE_PLOTS))
def test_a_title_line_of_full_width_still_fits(name, monkeypatch):
    """The longest second title line (kernel; layouts; workload) make demo gives: the
    failure-cause title was cut at the right when drawn over its (narrower) axes."""
    from cmaprof.analysis.compare import Side

    demo = "cmaprof workload snapshot:owners=0..."
    monkeypatch.setattr(Side, "workload", property(lambda s: demo))
    monkeypatch.setattr(
        Side,
        "layout",
        property(lambda s: "CMA in Movable" if "movable" in s.name else "CMA in DMA32"),
    )
    paths = HAS_DATA[name] + ([] if MOVABLE in HAS_DATA[name] else [MOVABLE])
    fn, _ = plots.SIDE_PLOTS[name]
    _titles_fit(fn([load_side(p) for p in paths]))
