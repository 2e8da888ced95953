"""``cmaprof vm``: boot a kernel under test in QEMU (virtme-ng) and run commands in it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cmaprof.errors import BadInput
from cmaprof.guest import DEFAULT_TIMEOUT_S, VmOptions, default_test_kernel, run


@click.group(
    short_help="Boot a kernel under test in QEMU and run commands in it.",
    epilog="\b\nExamples:\n"
    "  cmaprof vm run --cma 256M -- cat /sys/kernel/debug/cma/reserved/count\n"
    "  cmaprof vm run --cma-in-movable 256M -- cmaprof doctor",
)
def vm() -> None:
    """Boot a kernel under test in QEMU (virtme-ng) and run commands in it."""


@vm.command("run", context_settings={"allow_interspersed_args": False})
@click.option(
    "--kernel",
    type=click.Path(path_type=Path),
    help="bzImage to boot [default: $CMAPROF_TEST_KERNEL, else the newest "
    "../shared/kernels/bzImage-*-cma]",
)
@click.option("--memory", default="2G", show_default=True, help="guest RAM (QEMU -m)")
@click.option("--cpus", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--numa",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="NUMA nodes, RAM split evenly",
)
@click.option("--append", multiple=True, help="kernel command-line words (repeatable)")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="host directory shared read-write, at the same path inside",
)
# deprecated spelling of --output, kept for old scripts
@click.option("--out", "out_old", type=click.Path(path_type=Path), hidden=True)
@click.option("--cma", metavar="SIZE", help="cma=SIZE: one area, stock placement")
@click.option(
    "--cma-in-movable",
    metavar="SIZE",
    help="one CMA area inside ZONE_MOVABLE (movablecore= plus a computed cma base)",
)
@click.option(
    "--cma-pernuma",
    metavar="SIZE",
    help="cma_pernuma=SIZE: an area per node (x86 6.1 ignores it: see the warning)",
)
@click.option(
    "--hugetlb-cma", metavar="SIZE", help="hugetlb_cma=SIZE: per-node areas for 1 GiB pages"
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="seconds before a hung guest is killed",
)
@click.option(
    "--kvm",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="auto: KVM when it works, else TCG",
)
@click.option(
    "--log-dir",
    type=click.Path(path_type=Path),
    help="where the console log is kept [default: ~/.cache/cmaprof/vm-logs]",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(
    kernel: Path | None,
    memory: str,
    cpus: int,
    numa: int,
    append: tuple[str, ...],
    output: Path | None,
    out_old: Path | None,
    cma: str | None,
    cma_in_movable: str | None,
    cma_pernuma: str | None,
    hugetlb_cma: str | None,
    timeout_s: float,
    kvm: str,
    log_dir: Path | None,
    command: tuple[str, ...],
) -> None:
    """Boot a kernel with the host's root file system and run COMMAND inside.

    The exit status is COMMAND's; a panic, Oops, hang or QEMU failure is an error (status
    125) quoting the console, whose full log is kept.

    \b
    Examples:
      cmaprof vm run --cma 256M -- cat /sys/kernel/debug/cma/reserved/count
      cmaprof vm run --cma-in-movable 256M -o /tmp/rec -- \\
          cmaprof record -o /tmp/rec/x -- cmaprof workload anon:512
    """
    if kernel is None:
        kernel = default_test_kernel()
        if kernel is None:
            raise BadInput(
                "no kernel to boot: give --kernel BZIMAGE or set "
                "CMAPROF_TEST_KERNEL (scripts/build-test-kernel.sh builds one)"
            )
    opts = VmOptions(
        kernel=kernel,
        memory=memory,
        cpus=cpus,
        numa=numa,
        append=list(append),
        out=output or out_old,
        cma=cma,
        cma_in_movable=cma_in_movable,
        cma_pernuma=cma_pernuma,
        hugetlb_cma=hugetlb_cma,
        timeout_s=timeout_s,
        kvm=kvm,
        command=list(command),
        log_dir=log_dir,
    )
    sys.exit(run(opts))
