"""What ``cmaprof vm run`` boots and runs, and the error a failed guest raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cmaprof.errors import CmaprofError

DEFAULT_TIMEOUT_S = 900.0
#: Exit status of ``cmaprof vm run`` when the guest itself failed (as ``docker run``: 125).
GUEST_FAILURE_EXIT = 125


class GuestFailure(CmaprofError):
    """The guest did not run the command to the end: panic, Oops, hang or QEMU failure."""

    exit_code = GUEST_FAILURE_EXIT


@dataclass
class VmOptions:
    """What ``cmaprof vm run`` boots and runs.

    :param kernel: bzImage of the kernel under test.
    :param memory: guest RAM, QEMU syntax (``2G``, ``2048M``; a bare number is MiB).
    :param cpus: virtual CPUs.
    :param numa: NUMA nodes; RAM is split evenly, CPUs in contiguous blocks.
    :param append: extra kernel command-line words, as given (split like a shell would).
    :param out: host directory shared read-write with the guest at the same path
        (``--output``).
    :param cma: ``cma=SIZE``: one area where the kernel puts it (stock placement).
    :param cma_in_movable: SIZE of one area placed inside ZONE_MOVABLE
        (``movablecore=`` plus ``cma=SIZE@BASE``): ZONE_CMA's allocation rule on a stock kernel.
    :param cma_pernuma: ``cma_pernuma=SIZE``: one area per node (kernels that honour it).
    :param timeout_s: seconds from launch until QEMU is killed and the run fails as a hang.
    :param kvm: ``auto`` (KVM when usable, TCG fallback), ``on`` or ``off`` (TCG).
    :param command: the command to run inside, as an argument vector.
    :param log_dir: where the console log is kept (default ``~/.cache/cmaprof/vm-logs``).
    :param hugetlb_cma: ``hugetlb_cma=SIZE``: per-node areas for gigantic pages (1 GiB each).
    """

    kernel: Path
    memory: str = "2G"
    cpus: int = 2
    numa: int = 1
    append: list[str] = field(default_factory=list)
    out: Path | None = None
    cma: str | None = None
    cma_in_movable: str | None = None
    cma_pernuma: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    kvm: str = "auto"
    command: list[str] = field(default_factory=list)
    log_dir: Path | None = None
    hugetlb_cma: str | None = None
