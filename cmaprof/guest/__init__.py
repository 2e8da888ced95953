"""The QEMU guest runner behind ``cmaprof vm run`` and ``cmaprof experiment``.

``layout`` (the q35 memory model, ZONE_MOVABLE and CMA placement, the kernel command
line), ``kvm`` (KVM or TCG), ``launch`` (one virtme-ng launch: script, process group,
console, heartbeat), ``diagnose`` (panic, Oops, hang, QEMU failure; the boot summary),
``runner`` (:func:`run`: all of it, with the TCG fallback) and ``kernels`` (the shared
test kernels). No click here: the command line is :mod:`cmaprof.cli.vm`.
"""

from cmaprof.guest.kernels import default_test_kernel, kernel_version, shared_test_kernels
from cmaprof.guest.kvm import kvm_usable
from cmaprof.guest.launch import fmt_elapsed, progress_line
from cmaprof.guest.layout import (
    cma_in_movable_layout,
    guest_ram_ranges,
    kernel_cmdline,
    movable_zone_start_pfns,
    parse_size,
)
from cmaprof.guest.options import DEFAULT_TIMEOUT_S, GUEST_FAILURE_EXIT, GuestFailure, VmOptions
from cmaprof.guest.runner import run

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GUEST_FAILURE_EXIT",
    "GuestFailure",
    "VmOptions",
    "cma_in_movable_layout",
    "default_test_kernel",
    "fmt_elapsed",
    "guest_ram_ranges",
    "kernel_cmdline",
    "kernel_version",
    "kvm_usable",
    "movable_zone_start_pfns",
    "parse_size",
    "progress_line",
    "run",
    "shared_test_kernels",
]
