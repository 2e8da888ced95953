"""Figures of a recording (object-oriented matplotlib: no pyplot state).

``plot_*`` return a :class:`matplotlib.figure.Figure` 800 px wide at 100 dpi. Figures of
one recording take a :class:`Recording`; figures comparing sides (``cmaprof plot``) take a
list of :class:`~cmaprof.analysis.compare.Side`.

Figures of one recording are in :mod:`.single`, of sides in :mod:`.sides`, and what
``cmaprof plot`` writes in :mod:`.save`; this package re-exports their public names.
"""

from __future__ import annotations

from cmaprof.analysis.plots.save import SIDE_PLOTS, save_sides
from cmaprof.analysis.plots.sides import (
    MAX_CLASSES,
    df_zone_gfp_sides,
    plot_alloc_rate,
    plot_cma_latency_cdf,
    plot_cma_utilisation,
    plot_failure_causes,
    plot_zone_gfp_sides,
)
from cmaprof.analysis.plots.single import (
    FIGSIZE,
    TITLE_CHARS,
    TOP_GFP,
    draw_rate,
    fit_title,
    plot_pages_over_time,
    plot_zone_gfp,
    save_all,
)

__all__ = [
    "FIGSIZE",
    "MAX_CLASSES",
    "SIDE_PLOTS",
    "TITLE_CHARS",
    "TOP_GFP",
    "df_zone_gfp_sides",
    "draw_rate",
    "fit_title",
    "plot_alloc_rate",
    "plot_cma_latency_cdf",
    "plot_cma_utilisation",
    "plot_failure_causes",
    "plot_pages_over_time",
    "plot_zone_gfp",
    "plot_zone_gfp_sides",
    "save_all",
    "save_sides",
]
