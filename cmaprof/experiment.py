"""``cmaprof experiment``: every (kernel, layout) x iteration in a fresh guest, resumable.

Each run boots a new guest with ``cmaprof vm run`` and runs ``cmaprof record [--probes
...] -- cmaprof workload SPEC...`` inside it. The output directory (``-o DIR``) is laid
out as follows; ``experiment.json`` is the manifest::

    DIR/experiment.json                 parameters, and every run with its status
    DIR/recordings/<side>/iter-NN/      the recording of each run; each <side> is a
                                        directory of iterations, as `cmaprof compare`,
                                        `cmaprof plot` and analysis.load_many() take it
    DIR/runs/<side>/iter-NN/            run.json (written last: the run is complete),
                                        console/console-*.log (the guest's console),
                                        dmesg.txt, record.err (record and workload
                                        stderr), record.status, guest.out, guest.err,
                                        snapshots/NN/ (workload `snapshot`: the kernel's
                                        own counters, for cross-checks)
    DIR/runs/<side>/iter-NN.failed-K/   an earlier attempt that did not complete (kept,
                                        with its partial recording in recording/)
    DIR/compare.txt, DIR/compare.json   `cmaprof compare` over the sides, when it exists
    DIR/plots/                          `cmaprof plot` over the sides, when it exists

``<side>`` is ``<kernel label>-<layout>``; the kernel label is the bzImage name without
its ``bzImage-`` prefix. Re-running the same command resumes: complete runs are
skipped, incomplete or failed ones are moved aside and run again. A different set of
parameters for an existing DIR is refused (only ``--iterations`` may grow).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cmaprof.errors import BadInput, CmaprofError
from cmaprof.experiment_plan import (
    LAYOUTS,
    WORKED_EXAMPLE_WORKLOADS,
    Outcome,
    Params,
    Run,
    kernel_labels,
    plan,
    worked_example,
)
from cmaprof.guest import default_test_kernel
from cmaprof.guest.launch import fmt_elapsed

__all__ = [
    "LAYOUTS",
    "WORKED_EXAMPLE_WORKLOADS",
    "Outcome",
    "Params",
    "Run",
    "execute",
    "experiment",
    "guest_run",
    "kernel_labels",
    "plan",
    "summarise",
    "vm_argv",
    "worked_example",
]

MANIFEST = "experiment.json"
MANIFEST_VERSION = 1
#: The cmaprof commands :func:`summarise` runs over the sides.
SUMMARY_COMMANDS = frozenset({"compare", "plot"})
#: Seconds between the heartbeats of a guest passed on as progress (its other lines at once).
PROGRESS_S = 120.0
_HEARTBEAT = re.compile(r"\(\d+:\d\d(?::\d\d)? elapsed")

#: The script each guest runs: ``sh -c GUEST_SCRIPT sh RUN_DIR REC_DIR CMAPROF PROBES
#: SPEC...``. Snapshots of the kernel's counters are taken by the `snapshot` workload;
#: dmesg is saved whatever happens.
GUEST_SCRIPT = r"""
run=$1; rec=$2; cmaprof=$3; probes=$4; shift 4
export CMAPROF_SNAPSHOT_DIR="$run/snapshots"
set -- "$cmaprof" record -o "$rec" ${probes:+--probes "$probes"} -- "$cmaprof" workload "$@"
"$@" 2>"$run/record.err"
status=$?
echo $status >"$run/record.status"
dmesg >"$run/dmesg.txt" 2>&1
exit $status
"""


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (temporary name, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with _open_w(tmp) as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _open_w(path: Path) -> Any:
    """Open ``path`` for writing without following a planted symlink."""
    if path.is_symlink():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "w")


def run_complete(root: Path, run: Run) -> bool:
    """A run is complete when its run.json says ok and its recording has metadata."""
    try:
        info = json.loads((run.run_dir(root) / "run.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("status") == "ok" and (run.rec_dir(root) / "metadata.json").is_file()


def set_aside(root: Path, run: Run) -> Path | None:
    """Move what an incomplete attempt left to ``iter-NN.failed-K``; its path, or None."""
    rdir, rec = run.run_dir(root), run.rec_dir(root)
    if not rdir.exists() and not rec.exists():
        return None
    k = 1
    while (dest := rdir.with_name(f"{rdir.name}.failed-{k}")).exists():
        k += 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    if rdir.exists():
        rdir.rename(dest)
    else:
        dest.mkdir()
    if rec.exists():
        rec.rename(dest / "recording")
    return dest


def load_or_create(root: Path, p: Params) -> dict[str, Any]:
    """The manifest of ``root``: created for ``p``, or checked against ``p`` on resume."""
    path = root / MANIFEST
    if path.exists():
        try:
            man = json.loads(path.read_text())
            old = Params(**man["params"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{path}: not an experiment manifest ({exc})") from None
        diff = old.same_experiment(p)
        if diff:
            raise BadInput(
                f"{root} holds an experiment with other {', '.join(diff)}: resume it with "
                "the same parameters, or use another -o"
            )
        man["params"] = asdict(p)
        return man
    if root.exists() and any(root.iterdir()):
        raise BadInput(f"{root} exists and is not an experiment directory: use another -o")
    root.mkdir(parents=True, exist_ok=True)
    return {"version": MANIFEST_VERSION, "params": asdict(p), "runs": {}}


def cmaprof_argv() -> list[str]:
    """The cmaprof command, the same path on the host and in the guest (shared root)."""
    script = Path(sys.executable).with_name("cmaprof")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cmaprof"]


def vm_argv(root: Path, p: Params, run: Run) -> list[str]:
    """The ``cmaprof vm run`` command line of ``run``."""
    rdir, rec = run.run_dir(root), run.rec_dir(root)
    cmaprof = cmaprof_argv()
    argv = cmaprof + [
        "vm",
        "run",
        "--kernel",
        run.kernel,
        "--memory",
        p.memory,
        "--cpus",
        str(p.cpus),
        LAYOUTS[run.layout],
        p.cma,
        "--output",
        str(root.resolve()),
        "--log-dir",
        str(rdir.resolve() / "console"),
        "--timeout",
        str(p.timeout_s),
    ]
    for word in p.append:
        argv += ["--append", word]
    # the guest runs the cmaprof of this host (its root is ours, read-only)
    guest_cmaprof = cmaprof[0] if len(cmaprof) == 1 else "cmaprof"
    return argv + [
        "--",
        "sh",
        "-c",
        GUEST_SCRIPT,
        "sh",
        str(rdir.resolve()),
        str(rec.resolve()),
        guest_cmaprof,
        p.probes or "",
        *p.workloads,
    ]


#: Lines of the guest's record.err passed on as progress: the BCC compile, the long pole
#: of a TCG iteration (collectors/record_setup.py prints them), and the end.
_RECORD_PROGRESS = (
    "cmaprof: compiling the probes",
    "cmaprof: probes compiled",
    "cmaprof: recording ",
)


class _Lines:
    """The complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos = path, 0

    def new(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.pos += len(complete)
        return complete.decode(errors="replace").splitlines()


def _follow(proc: subprocess.Popen, rdir: Path, echo: Callable[[str], None], name: str) -> None:
    """Until ``proc`` ends, pass on the lines ``cmaprof vm run`` writes to the run's
    guest.err (the boot, its summary and warnings at once, its heartbeats at most every
    PROGRESS_S) and record's compile lines from record.err, with the guest's time."""
    vm, rec = _Lines(rdir / "guest.err"), _Lines(rdir / "record.err")
    t0 = last_beat = time.monotonic()
    while True:
        done = proc.poll() is not None
        for line in vm.new():
            if not line.startswith("cmaprof: vm: "):
                continue
            if _HEARTBEAT.search(line):
                if time.monotonic() - last_beat < PROGRESS_S:
                    continue
                last_beat = time.monotonic()
            echo(f"cmaprof experiment: {name}: {line.removeprefix('cmaprof: ')}")
        for line in rec.new():
            if line.startswith(_RECORD_PROGRESS):
                said = line.removeprefix("cmaprof: ")
                at = fmt_elapsed(time.monotonic() - t0)
                echo(f"cmaprof experiment: {name}: {said} ({at} into the run)")
        if done:
            return
        time.sleep(1.0)


def guest_run(
    root: Path, p: Params, run: Run, echo: Callable[[str], None] | None = None
) -> Outcome:
    """Boot one guest for ``run``; what came of it.

    :param echo: where the guest's progress goes (boot, summary, a heartbeat every
        PROGRESS_S); the whole of it is kept in the run's ``guest.err``.
    """
    rdir, rec = run.run_dir(root), run.rec_dir(root)
    rdir.mkdir(parents=True)
    rec.parent.mkdir(parents=True, exist_ok=True)
    argv = vm_argv(root, p, run)
    (rdir / "argv.json").write_text(json.dumps(argv, indent=1) + "\n")
    t0 = time.monotonic()
    with open(rdir / "guest.out", "wb") as out, open(rdir / "guest.err", "wb") as err:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=err)
        except OSError as exc:
            return Outcome("failed", f"cannot start cmaprof vm run: {exc}", 0.0)
        try:
            _follow(proc, rdir, echo or (lambda s: None), run.name)
        finally:
            if proc.poll() is None:  # interrupted: vm run stops its guest on SIGTERM
                proc.terminate()
            proc.wait()
    return _outcome(proc.returncode, rdir, rec, time.monotonic() - t0)


def _outcome(returncode: int, rdir: Path, rec: Path, secs: float) -> Outcome:
    try:
        rstatus: int | None = int((rdir / "record.status").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        rstatus = None
    if returncode != 0:
        tail = (rdir / "guest.err").read_text(errors="replace").strip().splitlines()[-3:]
        return Outcome(
            "failed",
            f"cmaprof vm run exited {returncode}: {' / '.join(tail)}",
            secs,
            returncode,
            rstatus,
        )
    if not (rec / "metadata.json").is_file():
        return Outcome("failed", "no recording written", secs, returncode, rstatus)
    return Outcome("ok", "", secs, returncode, rstatus)


def _fmt_s(s: float) -> str:
    return f"{int(s) // 60}m{int(s) % 60:02d}s"


def _attempt(
    root: Path,
    p: Params,
    r: Run,
    man: dict[str, Any],
    runner: Callable[[Path, Params, Run], Outcome],
    echo: Callable[[str], None],
    tag: str,
    took: list[float],
    remaining: int,
) -> Outcome:
    """One attempt at run ``r``: set earlier attempts aside, boot, record the outcome."""
    moved = set_aside(root, r)
    if moved:
        echo(f"cmaprof experiment: earlier attempt of {r.name} kept in {moved}")
    entry = man["runs"].setdefault(r.name, {})
    entry.update(
        {
            "kernel": r.kernel,
            "layout": r.layout,
            "iteration": r.iteration,
            "recording": str(r.rec_dir(root).relative_to(root)),
            "run_dir": str(r.run_dir(root).relative_to(root)),
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    entry["attempts"] = entry.get("attempts", 0) + 1
    _write_json(root / MANIFEST, man)
    eta = f", about {_fmt_s(sum(took) / len(took) * remaining)} left" if took else ""
    echo(f"cmaprof experiment: {tag} {r.name}: booting{eta}")
    out = runner(root, p, r)
    took.append(out.seconds)
    entry.update(
        {
            "status": out.status,
            "reason": out.reason,
            "seconds": round(out.seconds, 1),
            "vm_status": out.vm_status,
            "record_status": out.record_status,
        }
    )
    if r.run_dir(root).is_dir():
        _write_json(r.run_dir(root) / "run.json", entry)
    _write_json(root / MANIFEST, man)
    echo(
        f"cmaprof experiment: {tag} {r.name}: {out.status} in "
        f"{_fmt_s(out.seconds)}" + (f" ({out.reason})" if out.reason else "")
    )
    return out


def execute(
    root: Path,
    p: Params,
    runner: Callable[[Path, Params, Run], Outcome] | None = None,
    echo: Callable[[str], None] = lambda s: None,
    retries: int = 1,
) -> dict[str, Any]:
    """Run what is not complete yet in ``root``; the manifest, also written to disk.

    Progress (run n of N, time taken so far) goes to ``echo``; ``runner`` boots one
    guest (default :func:`guest_run`). A failed run is tried ``retries`` more times
    at once (each attempt kept), then left for the next resume.
    """
    if runner is None:

        def runner(root: Path, p: Params, r: Run) -> Outcome:  # real guests, progress on echo
            return guest_run(root, p, r, echo=echo)

    runs = plan(p)
    man = load_or_create(root, p)
    todo = [r for r in runs if not run_complete(root, r)]
    done = len(runs) - len(todo)
    if done:
        echo(f"cmaprof experiment: resuming {root}: {done} of {len(runs)} runs complete")
    for r in runs:
        if run_complete(root, r):
            man["runs"].setdefault(r.name, {})["status"] = "ok"
    _write_json(root / MANIFEST, man)
    took: list[float] = []
    for n, r in enumerate(todo, 1):
        for attempt in range(retries + 1):
            tag, left = f"[{done + n}/{len(runs)}]", len(todo) - n + 1
            out = _attempt(root, p, r, man, runner, echo, tag, took, left)
            if out.status == "ok" or out.record_status not in (None, 0):
                break  # done, or cmaprof record itself failed: trying again would not help
            if attempt < retries:
                echo(f"cmaprof experiment: {r.name}: trying again (a boot can fail on a busy host)")
    return man


def summarise(
    root: Path, p: Params, echo: Callable[[str], None] = lambda s: None
) -> dict[str, str]:
    """Run ``cmaprof compare`` and ``cmaprof plot`` over the sides, if they exist.

    Returns what was done for each (written file, or why not), also kept in the
    manifest under ``summary``.
    """
    sides = list(dict.fromkeys(r.side for r in plan(p)))
    dirs = [str(root / "recordings" / s) for s in sides]
    result: dict[str, str] = {}
    cmd = cmaprof_argv()
    if len(dirs) < 2:
        result["compare"] = "one side only: nothing to compare"
    elif "compare" not in SUMMARY_COMMANDS:
        result["compare"] = "cmaprof compare does not exist in this cmaprof yet"
    else:
        for fmt, name in (("text", "compare.txt"), ("json", "compare.json")):
            proc = subprocess.run(
                cmd + ["compare", *dirs, "--format", fmt], capture_output=True, check=False
            )
            if proc.returncode == 0:
                (root / name).write_bytes(proc.stdout)
                result[f"compare_{fmt}"] = name
            else:
                result[f"compare_{fmt}"] = "failed: " + proc.stderr.decode(errors="replace")[-300:]
    if "plot" not in SUMMARY_COMMANDS:
        result["plot"] = "cmaprof plot does not exist in this cmaprof yet"
    else:
        proc = subprocess.run(
            cmd + ["plot", *dirs, "-o", str(root / "plots")], capture_output=True, check=False
        )
        result["plot"] = (
            "plots"
            if proc.returncode == 0
            else "failed: " + proc.stderr.decode(errors="replace")[-300:]
        )
    for k, v in result.items():
        echo(f"cmaprof experiment: {k}: {v}")
    man = json.loads((root / MANIFEST).read_text())
    man["summary"] = result
    _write_json(root / MANIFEST, man)
    return result


def experiment(root: Path, p: Params, echo: Callable[[str], None] = lambda s: None) -> None:
    """Run, resume and summarise an experiment; :class:`CmaprofError` if a run failed."""
    man = execute(root, p, echo=echo)
    failed = [k for k, v in man["runs"].items() if v.get("status") != "ok"]
    summarise(root, p, echo=echo)
    if failed:
        raise CmaprofError(
            f"{len(failed)} run(s) failed: {', '.join(failed)}; see {root}/runs/*/*/guest.err; "
            "run the same command again to retry them"
        )


def kernel_default() -> str | None:
    """The test kernel of ``cmaprof vm run`` (see :func:`cmaprof.guest.default_test_kernel`)."""
    k = default_test_kernel()
    return str(k) if k else None
