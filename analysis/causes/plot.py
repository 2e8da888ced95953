"""The failed-calls figure: calls per cause and side (:func:`plot_failed_calls_by_cause`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cmaprof.analysis.causes.frames import df_cma_failures, has_cma_probe
from cmaprof.analysis.causes.rules import Cause

if TYPE_CHECKING:  # matplotlib is imported by the functions: `cmaprof report` needs none
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def plot_failed_calls_by_cause(sides: list[Any]) -> Figure:
    """Failed cma_alloc() calls by cause (every cause class, not only blocked pages), one
    bar per side: calls summed over the side's iterations.

    :param sides: :class:`cmaprof.analysis.compare.Side` objects.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    kernels = ", ".join(dict.fromkeys(s.kernel for s in sides))
    layouts = " vs ".join(dict.fromkeys(s.layout for s in sides))
    workloads = ", ".join(dict.fromkeys(s.workload for s in sides))
    fig.suptitle(
        f"Failed cma_alloc() calls by cause (all iterations)\n"
        f"kernel {kernels}; {layouts}; workload: {workloads}",
        fontsize=10,
    )
    counts: dict[str, pd.Series] = {}
    missing = []
    for s in sides:
        recs = [r for r in s.recordings if has_cma_probe(r)]
        if not recs:
            missing.append(s.name)
            continue
        frames = [df_cma_failures(r) for r in recs]
        got = [f for f in frames if len(f)]
        vc = pd.concat(got)["cause"].astype(str).value_counts() if got else pd.Series(dtype=int)
        counts[s.name] = vc
    seen = [c for c in Cause if any(c.value in vc.index for vc in counts.values())]
    if not seen:
        text = "no failed cma_alloc() call"
        if missing:
            text += "\nnot recorded (no cma probe): " + ", ".join(missing)
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    height = 0.8 / max(1, len(counts))
    y = np.arange(len(seen))
    for i, (name, vc) in enumerate(counts.items()):
        ax.barh(y + i * height, [int(vc.get(c.value, 0)) for c in seen], height=height, label=name)
    ax.set_yticks(y + 0.4 - height / 2, [c.label for c in seen])
    ax.set_xlabel("failed calls")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    note_not_recorded(ax, missing)
    return fig


def note_not_recorded(ax: Axes, missing: list[str]) -> None:
    """Name, in the axes' lower right corner, the sides that did not record the data."""
    if missing:
        ax.text(
            0.99,
            0.01,
            "not recorded: " + ", ".join(missing),
            ha="right",
            transform=ax.transAxes,
            fontsize=8,
        )
