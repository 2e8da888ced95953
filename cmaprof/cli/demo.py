"""``cmaprof demo``: the quick host part, then stock against movable CMA in a guest."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from cmaprof.errors import BadInput, CmaprofError

#: What the guest part takes (two guests, each booting, compiling the probes, running the
#: worked example's workloads): measured under TCG on a 2-CPU host; KVM is much faster.
GUEST_MINUTES_TCG = "20-25"


@click.command(short_help="Record on the host, then stock vs movable CMA in a guest.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="OUTPUT/host: the host recording and its plots; OUTPUT/guest: the guest experiment",
)
@click.option("--host-only", is_flag=True, help="only the host part (about a minute)")
@click.option(
    "--kernel",
    type=click.Path(path_type=Path),
    help="bzImage of the guest part [default: $CMAPROF_TEST_KERNEL, else the newest "
    "../shared/kernels/bzImage-*-cma]",
)
@click.option("--anon-mib", default=1024, show_default=True, help="host part: anonymous memory")
@click.option("--pagecache-mib", default=256, show_default=True, help="host part: page cache")
def demo(
    output: Path, host_only: bool, kernel: Path | None, anon_mib: int, pagecache_mib: int
) -> None:
    """The main job in two parts. Host: doctor, record a built-in workload, print the
    report, write plots. Guest: the worked example (docs/worked-example.md) in a guest
    of the newest shared kernel: stock CMA against CMA inside ZONE_MOVABLE, one boot per
    layout, ending with the compare table and its figures. Run again, it resumes the
    guest part (complete guest runs are kept).

    \b
    Examples:
      cmaprof demo
      cmaprof demo --host-only
      cmaprof demo -o out/demo2 --anon-mib 512 --host-only
      cmaprof demo --kernel ../shared/kernels/bzImage-6.1.192-cma
    """
    guest_kernel = None if host_only else _guest_kernel(kernel)
    parts = 1 if host_only else 2
    _say(
        f"cmaprof demo: part 1 of {parts}, on the host (about a minute): doctor, a recorded "
        f"workload, its report and plots in {output / 'host'}"
    )
    if guest_kernel is not None:
        _say(
            f"cmaprof demo: part 2 of 2, in a {guest_kernel.name} guest "
            f"({_guest_estimate(guest_kernel)}): the worked example, stock CMA against CMA "
            f"inside ZONE_MOVABLE, ending with the compare table and figures of {output / 'guest'}"
        )
    _host_part(output / "host", anon_mib, pagecache_mib)
    if guest_kernel is not None:
        _say(f"cmaprof demo: part 2 of 2: booting the first of 2 guests ({guest_kernel.name})")
        _guest_part(output / "guest", guest_kernel, _say)


def _say(text: str) -> None:
    click.echo(text, err=True)


def _guest_kernel(kernel: Path | None) -> Path:
    from cmaprof.guest import default_test_kernel

    found = kernel or default_test_kernel()
    if found is None:
        raise BadInput(
            "no kernel for the guest part: give --kernel BZIMAGE, set CMAPROF_TEST_KERNEL "
            "(scripts/build-test-kernel.sh builds one), or run cmaprof demo --host-only"
        )
    return found.resolve()


def _guest_estimate(kernel: Path) -> str:
    from cmaprof.guest import kvm

    if kvm.kvm_usable() is None and kvm.kernel_sha256(kernel) not in kvm.known_failures():
        return f"minutes under KVM; about {GUEST_MINUTES_TCG} minutes if it falls back to TCG"
    return f"about {GUEST_MINUTES_TCG} minutes under TCG"


def _host_part(output: Path, anon_mib: int, pagecache_mib: int) -> None:
    """Doctor, then record the workload, then print the report and write the plots."""
    from cmaprof.analysis import plots, tables
    from cmaprof.analysis.loaded import load
    from cmaprof.collectors import doctor as doc
    from cmaprof.collectors.record import RecordOptions
    from cmaprof.collectors.record import record as do_record

    checks = doc.run_checks()
    click.echo(doc.table_checks(checks))
    if not doc.recording_possible(checks):
        raise CmaprofError("recording is not possible on this machine: fix the 'fail' rows above")
    cmd = [
        sys.executable,
        "-m",
        "cmaprof",
        "workload",
        f"anon:{anon_mib}",
        f"pagecache:{pagecache_mib}",
    ]
    status = do_record(RecordOptions(output=output, force=True, interval_s=1.0, command=cmd))
    if status:
        raise CmaprofError(f"the demo workload failed with status {status}")
    rec = load(output)
    click.echo()
    click.echo(tables.table_report(rec), nl=False)
    for path in plots.save_all(rec, output / "plots"):
        click.echo(f"plot: {path}")


def _guest_part(output: Path, kernel: Path, say: Callable[[str], None]) -> None:
    """The worked example's experiment, then its compare table and figures."""
    from cmaprof import experiment as exp

    exp.experiment(output, exp.worked_example(str(kernel)), echo=say)
    compare = output / "compare.txt"
    if compare.is_file():
        click.echo()
        click.echo(compare.read_text(), nl=False)
    for path in sorted((output / "plots").glob("*.png")):
        click.echo(f"plot: {path}")
