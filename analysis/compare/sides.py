"""What a side is (:class:`Side`: one recording or a directory of iterations), how one
is described (kernel, layout, workload), and the sections and names the comparison uses."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from cmaprof.analysis import counterfactual
from cmaprof.analysis.loaded import Recording, load_many

WIDTH = 80


LOGICAL_CMA = "logical CMA"


#: Zone order for the union of rows (others follow in order of appearance).
ZONE_ORDER = ["DMA", "DMA32", "Normal", "HighMem", "Movable", "CMA", "Device"]


#: GFP classes shown per zone (the rest are summed into one row).
TOP_GFP = 5


QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


#: /proc/vmstat counters whose deltas are compared (prefixes), plus any with "cma".
VMSTAT_PREFIXES = ("pgalloc_", "pgmigrate_", "compact_stall", "compact_fail", "compact_success")


SECTIONS = {
    "zones": "Pages allocated per zone (logical CMA: CMA pageblocks or zone CMA)",
    "zone_gfp": "Pages per zone and GFP class (flags in the baseline kernel's order)",
    "cma_gfp": "GFP classes landing in CMA (logical CMA)",
    "counterfactual": "ZONE_CMA counterfactual: CMA pages a ZONE_CMA kernel refuses "
    "(__GFP_MOVABLE without __GFP_HIGHMEM)",
    "cma_alloc": "cma_alloc() calls (latency over all calls of a side, pooled)",
    "failures": "cma_alloc() failure causes (pages)",
    "migrate": "migrate_pages() by reason (pages)",
    "vmstat": "/proc/vmstat and CMA sysfs deltas",
    "lost": "Lost and dropped events",
}


@dataclass
class Side:
    """One column: recordings taken as iterations of the same run.

    :param path: what the user named (a recording or a directory of them)
    :param recordings: the iterations, in directory order
    """

    path: Path
    recordings: list[Recording]

    @property
    def name(self) -> str:
        return self.path.resolve().name or str(self.path)

    @property
    def kernel(self) -> str:
        ks = sorted({str(r.meta.kernel_release) for r in self.recordings})
        return ",".join(ks)

    @property
    def layout(self) -> str:
        ls = sorted({layout_of(r) for r in self.recordings})
        return ",".join(ls)

    @property
    def workload(self) -> str:
        ws = sorted({workload_of(r) for r in self.recordings})
        return ",".join(ws)

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.recordings)} recording(s), kernel {self.kernel}, "
            f"{self.layout}, workload: {self.workload}"
        )


def layout_of(rec: Recording) -> str:
    """Where the recording's CMA memory is: "ZONE_CMA", "CMA in <zone>" or "no CMA"."""
    if counterfactual.CMA_ZONE in rec.zone_names.values():
        return "ZONE_CMA"
    zones = sorted({str(z.name) for z in rec.meta.zones if (z.cma or 0) > 0})
    if zones:
        return "CMA in " + "+".join(zones)
    return "CMA area" if rec.meta.cma_areas else "no CMA"


def workload_of(rec: Recording) -> str:
    """The recorded command, shortened (program names without directories)."""
    if rec.meta.label:
        return str(rec.meta.label)
    cmd = [str(c) for c in rec.meta.command or []]
    if not cmd:
        return "system-wide"
    if len(cmd) > 2 and cmd[1] == "-m":  # python -m cmaprof ...
        cmd = cmd[2:]
    words = [c.rsplit("/", 1)[-1] if c.startswith("/") or i == 0 else c for i, c in enumerate(cmd)]
    return textwrap.shorten(" ".join(words), 40, placeholder="...")


def load_side(path: str | Path) -> Side:
    """A recording, or a directory whose subdirectories are recordings (iterations)."""
    p = Path(path)
    return Side(p, load_many([p]))
