"""``cmaprof experiment``: workloads recorded in fresh guests per kernel and layout."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(short_help="Record workloads in fresh guests per kernel and layout.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="experiment directory"
)
@click.option(
    "--kernel",
    "kernels",
    multiple=True,
    metavar="BZIMAGE",
    help="kernel to boot (repeatable) [default: the test kernel of `cmaprof vm run`]",
)
@click.option(
    "--layout",
    "layouts",
    multiple=True,
    type=click.Choice(["stock", "movable"]),
    help="CMA placement (repeatable): stock (cma=) or movable (inside ZONE_MOVABLE) "
    "[default: stock]",
)
@click.option(
    "--workload",
    "workload_specs",
    multiple=True,
    required=True,
    metavar="NAME[:ARGS]",
    help="workload run under `cmaprof record` in each guest, in order (repeatable); "
    "see `cmaprof workload --help`",
)
@click.option("--iterations", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--memory", default="2G", show_default=True, help="guest RAM")
@click.option("--cma", "cma_size", default="256M", show_default=True, help="CMA area size")
@click.option("--cpus", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--append", multiple=True, help="extra kernel command-line words (repeatable)")
@click.option("--probes", "probe_list", metavar="NAME,...", help="passed to `cmaprof record`")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=1800.0,
    show_default=True,
    help="seconds before a guest is killed",
)
def experiment(
    output: Path,
    kernels: tuple[str, ...],
    layouts: tuple[str, ...],
    workload_specs: tuple[str, ...],
    iterations: int,
    memory: str,
    cma_size: str,
    cpus: int,
    append: tuple[str, ...],
    probe_list: str | None,
    timeout: float,
) -> None:
    """Record workloads in a fresh guest per (kernel, layout) x iteration, then compare.

    Every run's recording, console log, dmesg and record stderr are kept under
    OUTPUT (layout and manifest: see cmaprof/experiment.py). Running the same
    command again resumes: complete runs are skipped, incomplete ones rerun.

    With fewer than 4 iterations a side no Mann-Whitney test in `compare` can reach
    p <= 0.05; one iteration shows the effect, 4 or more test it.

    \b
    Examples:
      cmaprof experiment -o out/exp --layout stock --layout movable --iterations 4 \\
          --probes page_alloc,cma,migrate,blockers \\
          --workload anon:leave=400,hold=1,thp=1 \\
          --workload bdev-metadata:size=256,files=1000,seconds=30 \\
          --workload cma-alloc:pages=100%maxchunk,hold=1
      cmaprof experiment -o out/one --layout stock --workload anon:512
    """
    from cmaprof import experiment as exp
    from cmaprof import workloads

    for spec in workload_specs:
        workloads.parse_spec(spec)  # a typo fails here, not in the guest
    ks = list(kernels) or [k for k in [exp.kernel_default()] if k]
    params = exp.Params(
        kernels=[str(Path(k).resolve()) for k in ks],
        layouts=list(layouts) or ["stock"],
        workloads=list(workload_specs),
        iterations=iterations,
        memory=memory,
        cma=cma_size,
        cpus=cpus,
        append=list(append),
        probes=probe_list,
        timeout_s=timeout,
    )
    exp.experiment(output, params, echo=lambda s: click.echo(s, err=True))
