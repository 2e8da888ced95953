"""What ``cmaprof experiment`` runs: its parameters, every (kernel, layout) x iteration
it plans, the outcome of one guest run, and the worked example's parameters."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cmaprof.errors import BadInput

LAYOUTS = {"stock": "--cma", "movable": "--cma-in-movable"}


@dataclass(frozen=True)
class Params:
    """What an experiment runs; stored in the manifest and compared on resume."""

    kernels: list[str]
    layouts: list[str]
    workloads: list[str]
    iterations: int
    memory: str = "2G"
    cma: str = "256M"
    cpus: int = 2
    append: list[str] = field(default_factory=list)
    probes: str | None = None
    timeout_s: float = 1800.0

    def same_experiment(self, other: Params) -> list[str]:
        """Names of the parameters that differ, apart from ``iterations``."""
        a, b = asdict(self), asdict(other)
        return [k for k in a if k not in ("iterations", "timeout_s") and a[k] != b[k]]


@dataclass(frozen=True)
class Run:
    """One guest boot: a kernel, a layout and an iteration (1-based)."""

    kernel: str
    label: str
    layout: str
    iteration: int

    @property
    def side(self) -> str:
        return f"{self.label}-{self.layout}"

    @property
    def name(self) -> str:
        return f"{self.side}/iter-{self.iteration:02d}"

    def rec_dir(self, root: Path) -> Path:
        return root / "recordings" / self.side / f"iter-{self.iteration:02d}"

    def run_dir(self, root: Path) -> Path:
        return root / "runs" / self.side / f"iter-{self.iteration:02d}"


def kernel_labels(kernels: list[str]) -> list[str]:
    """File-system-safe, distinct labels: ``bzImage-6.1.192-cma`` -> ``6.1.192-cma``."""
    labels: list[str] = []
    for k in kernels:
        base = re.sub(r"^(bzImage|vmlinuz)-", "", Path(k).name) or "kernel"
        base = re.sub(r"[^A-Za-z0-9._+-]", "_", base)
        label, n = base, 2
        while label in labels:
            label, n = f"{base}.{n}", n + 1
        labels.append(label)
    return labels


def plan(p: Params) -> list[Run]:
    """Every (kernel, layout) x iteration, iterations outermost (interleaved, so a drift
    of the host over time hits every side alike)."""
    if not p.kernels:
        raise BadInput("experiment: no kernel (give --kernel, or build a test kernel)")
    if not p.layouts:
        raise BadInput("experiment: no layout")
    for lay in p.layouts:
        if lay not in LAYOUTS:
            raise BadInput(f"experiment: unknown layout {lay!r}; known: {', '.join(LAYOUTS)}")
    if len(set(p.layouts)) != len(p.layouts) or len(set(p.kernels)) != len(p.kernels):
        raise BadInput("experiment: a kernel or layout is given twice")
    if p.iterations < 1:
        raise BadInput("experiment: --iterations must be at least 1")
    if not p.workloads:
        raise BadInput("experiment: give at least one --workload NAME[:ARGS]")
    labels = kernel_labels(p.kernels)
    return [
        Run(k, lab, lay, i)
        for i in range(1, p.iterations + 1)
        for k, lab in zip(p.kernels, labels)
        for lay in p.layouts
    ]


@dataclass
class Outcome:
    """What one guest run gave."""

    status: str  # ok | failed
    reason: str
    seconds: float
    vm_status: int | None = None
    record_status: int | None = None


#: The worked example's guest workloads (docs/worked-example.md, tests/vm/test_scenario.py).
WORKED_EXAMPLE_WORKLOADS = [
    "snapshot:owners=0",
    "anon:leave=400,hold=1,thp=1",
    "bdev-metadata:size=256,files=1000,seconds=30",
    "snapshot",
    "cma-alloc:pages=100%maxchunk,hold=1",
    "snapshot:owners=0",
]


def worked_example(kernel: str, timeout_s: float = 2400.0) -> Params:
    """The worked example's experiment on ``kernel``: stock CMA against CMA inside
    ZONE_MOVABLE, one iteration each (2 GiB, a 256 MiB area, ``page_owner=on``)."""
    return Params(
        kernels=[kernel],
        layouts=["stock", "movable"],
        workloads=list(WORKED_EXAMPLE_WORKLOADS),
        iterations=1,
        memory="2G",
        cma="256M",
        append=["page_owner=on"],
        probes="page_alloc,cma,migrate,blockers",
        timeout_s=timeout_s,
    )
