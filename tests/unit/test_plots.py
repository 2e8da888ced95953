"""cmaprof plot on the guest fixtures: four figures, OO matplotlib, 800 px wide."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from cmaprof.analysis import plots
from cmaprof.analysis.compare import load_side
from tests.conftest import DATA, run_cli

N_STOCK = 2  # stock iterations in the fixtures
STOCK = DATA / "recordings" / "guest-stock"
MOVABLE = DATA / "recordings" / "guest-movable"


@pytest.fixture(scope="module")
def sides():
    return [load_side(STOCK), load_side(MOVABLE)]


@pytest.mark.parametrize("name", list(plots.SIDE_PLOTS))
def test_figure_names_kernel_layout_workload(sides, name):
    fig = plots.SIDE_PLOTS[name](sides)
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
    fig = plots.plot_failure_causes(sides)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("not recorded" in t for t in texts)


def test_cli_writes_every_plot(tmp_path, sides):
    proc = run_cli("plot", str(STOCK), str(MOVABLE), "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for name in plots.SIDE_PLOTS:
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    from matplotlib.image import imread

    assert imread(tmp_path / "zone_gfp.png").shape[1] == 800
    svg = tmp_path / "svg"
    paths = plots.save_sides(sides, svg, "svg")
    assert [p.suffix for p in paths] == [".svg"] * len(plots.SIDE_PLOTS)
    assert all(p.read_text().lstrip().startswith("<?xml") for p in paths)


def test_no_pyplot_in_library_code():
    # pyplot keeps global figure state; library figures are built with Figure()
    src = Path(plots.__file__).read_text()
    assert not re.search(
        r"^\s*(import matplotlib\.pyplot|from matplotlib import pyplot)", src, re.MULTILINE
    )
    assert "plt." not in src and "pyplot." not in src
