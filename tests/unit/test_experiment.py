"""`cmaprof experiment`: planning, the manifest, resuming and the guest command line.

Guests are replaced by a fake runner that writes what a guest run leaves; the real
runs are tests/vm/test_scenario.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cmaprof import experiment as exp
from cmaprof.errors import BadInput, CmaprofError


def params(**kw):
    base = {
        "kernels": ["/k/bzImage-6.1.192-cma"],
        "layouts": ["stock", "movable"],
        "workloads": ["anon:64"],
        "iterations": 2,
    }
    base.update(kw)
    return exp.Params(**base)


class FakeGuest:
    """Writes what a guest run leaves behind; fails the runs named in ``fail``."""

    def __init__(self, fail=(), crash_at=None):
        self.calls: list[str] = []
        self.fail = set(fail)
        self.crash_at = crash_at

    def __call__(self, root: Path, p: exp.Params, run: exp.Run, echo=None) -> exp.Outcome:
        self.calls.append(run.name)
        run.run_dir(root).mkdir(parents=True)
        (run.run_dir(root) / "dmesg.txt").write_text("dmesg\n")
        rec = run.rec_dir(root)
        rec.mkdir(parents=True)
        if self.crash_at == run.name:
            raise KeyboardInterrupt  # interrupted mid-run: no run.json, no metadata
        if run.name in self.fail:
            return exp.Outcome("failed", "guest panicked", 3.0, 125, None)
        (rec / "metadata.json").write_text("{}")
        return exp.Outcome("ok", "", 2.0, 0, 0)


def test_plan_interleaves_iterations_and_names_sides():
    runs = exp.plan(params())
    assert [r.name for r in runs] == [
        "6.1.192-cma-stock/iter-01",
        "6.1.192-cma-movable/iter-01",
        "6.1.192-cma-stock/iter-02",
        "6.1.192-cma-movable/iter-02",
    ]
    assert runs[0].rec_dir(Path("/x")) == Path("/x/recordings/6.1.192-cma-stock/iter-01")
    assert runs[0].run_dir(Path("/x")) == Path("/x/runs/6.1.192-cma-stock/iter-01")


def test_two_kernels_with_the_same_file_name_get_distinct_labels():
    assert exp.kernel_labels(["/a/bzImage-6.1", "/b/bzImage-6.1", "/c/vmlinuz x"]) == [
        "6.1",
        "6.1.2",
        "vmlinuz_x",
    ]
    runs = exp.plan(params(kernels=["/a/bzImage-A", "/b/bzImage-B"], layouts=["stock"]))
    assert {r.side for r in runs} == {"A-stock", "B-stock"}


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"kernels": []}, "no kernel"),
        ({"layouts": ["zone_cma"]}, "unknown layout"),
        ({"layouts": ["stock", "stock"]}, "given twice"),
        ({"iterations": 0}, "at least 1"),
        ({"workloads": []}, "at least one --workload"),
    ],
)
def test_bad_plans(kw, words):
    with pytest.raises(BadInput, match=words):
        exp.plan(params(**kw))


def test_all_runs_complete_and_manifest(tmp_path):
    guest = FakeGuest()
    lines: list[str] = []
    man = exp.execute(tmp_path, params(), runner=guest, echo=lines.append)
    assert len(guest.calls) == 4
    disk = json.loads((tmp_path / "experiment.json").read_text())
    assert disk == json.loads(json.dumps(man))
    assert disk["version"] == 1 and disk["params"]["layouts"] == ["stock", "movable"]
    assert {v["status"] for v in disk["runs"].values()} == {"ok"}
    run = disk["runs"]["6.1.192-cma-movable/iter-02"]
    assert run["recording"] == "recordings/6.1.192-cma-movable/iter-02"
    assert run["attempts"] == 1 and run["seconds"] == 2.0
    info = json.loads((tmp_path / "runs/6.1.192-cma-stock/iter-01/run.json").read_text())
    assert info["status"] == "ok"
    assert lines[0] == "cmaprof experiment: [1/4] 6.1.192-cma-stock/iter-01: booting"
    assert "about 0m06s left" in lines[2]  # 2 s per run so far, 3 runs to go
    assert lines[-1] == "cmaprof experiment: [4/4] 6.1.192-cma-movable/iter-02: ok in 0m02s"


def test_resume_skips_complete_runs_and_reruns_interrupted_ones(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        exp.execute(tmp_path, params(), runner=FakeGuest(crash_at="6.1.192-cma-stock/iter-02"))
    man = json.loads((tmp_path / "experiment.json").read_text())
    assert man["runs"]["6.1.192-cma-stock/iter-02"]["status"] == "running"
    guest = FakeGuest()
    lines: list[str] = []
    exp.execute(tmp_path, params(), runner=guest, echo=lines.append)
    assert guest.calls == ["6.1.192-cma-stock/iter-02", "6.1.192-cma-movable/iter-02"]
    assert lines[0] == f"cmaprof experiment: resuming {tmp_path}: 2 of 4 runs complete"
    kept = tmp_path / "runs/6.1.192-cma-stock/iter-02.failed-1"
    assert (kept / "dmesg.txt").exists() and (kept / "recording").is_dir()
    # the set-aside partial recording is not a side's iteration any more
    side = tmp_path / "recordings/6.1.192-cma-stock"
    assert sorted(p.name for p in side.iterdir()) == ["iter-01", "iter-02"]
    man = json.loads((tmp_path / "experiment.json").read_text())
    assert man["runs"]["6.1.192-cma-stock/iter-02"]["attempts"] == 2
    assert {v["status"] for v in man["runs"].values()} == {"ok"}
    # a third time there is nothing left to do
    guest = FakeGuest()
    exp.execute(tmp_path, params(), runner=guest)
    assert guest.calls == []


def test_failed_runs_are_reported_and_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(exp, "guest_run", FakeGuest(fail={"6.1.192-cma-movable/iter-01"}))
    monkeypatch.setattr(exp, "SUMMARY_COMMANDS", frozenset())
    p = params()
    with pytest.raises(CmaprofError, match="1 run\\(s\\) failed: 6.1.192-cma-movable/iter-01"):
        exp.experiment(tmp_path, p)
    info = json.loads((tmp_path / "runs/6.1.192-cma-movable/iter-01/run.json").read_text())
    assert info["status"] == "failed" and info["vm_status"] == 125
    guest = FakeGuest()
    monkeypatch.setattr(exp, "guest_run", guest)
    exp.experiment(tmp_path, p)
    assert guest.calls == ["6.1.192-cma-movable/iter-01"]
    man = json.loads((tmp_path / "experiment.json").read_text())
    assert man["summary"]["compare"] == "cmaprof compare does not exist in this cmaprof yet"


def test_more_iterations_extend_other_changes_are_refused(tmp_path):
    exp.execute(tmp_path, params(iterations=1), runner=FakeGuest())
    guest = FakeGuest()
    exp.execute(tmp_path, params(iterations=2), runner=guest)
    assert guest.calls == ["6.1.192-cma-stock/iter-02", "6.1.192-cma-movable/iter-02"]
    with pytest.raises(BadInput, match="other workloads, memory"):
        exp.execute(tmp_path, params(workloads=["anon:1"], memory="4G"), runner=FakeGuest())


def test_a_foreign_directory_is_refused(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(BadInput, match="not an experiment directory"):
        exp.execute(tmp_path, params(), runner=FakeGuest())
    (tmp_path / "experiment.json").write_text("[1, 2]")
    with pytest.raises(BadInput, match="not an experiment manifest"):
        exp.execute(tmp_path, params(), runner=FakeGuest())


def test_guest_command_line(tmp_path):
    p = params(append=["page_owner=on"], probes="page_alloc,cma", memory="3G", cma="128M")
    run = exp.plan(p)[1]
    argv = exp.vm_argv(tmp_path, p, run)
    i = argv.index("run")
    assert argv[i - 1] == "vm"
    opts = argv[i + 1 : argv.index("--")]
    assert opts[opts.index("--kernel") + 1] == "/k/bzImage-6.1.192-cma"
    assert opts[opts.index("--memory") + 1] == "3G"
    assert opts[opts.index("--cma-in-movable") + 1] == "128M"
    assert "--cma" not in opts
    assert opts[opts.index("--append") + 1] == "page_owner=on"
    assert opts[opts.index("--output") + 1] == str(tmp_path.resolve())
    assert opts[opts.index("--log-dir") + 1] == str(run.run_dir(tmp_path).resolve() / "console")
    tail = argv[argv.index("--") + 1 :]
    assert tail[:2] == ["sh", "-c"] and tail[2] == exp.GUEST_SCRIPT
    assert tail[4:6] == [str(run.run_dir(tmp_path).resolve()), str(run.rec_dir(tmp_path).resolve())]
    assert tail[7:] == ["page_alloc,cma", "anon:64"]
    stock = exp.vm_argv(tmp_path, p, exp.plan(p)[0])
    assert stock[stock.index("--cma") + 1] == "128M"


def test_the_guest_script_runs_record_around_the_workloads(tmp_path):
    """Run GUEST_SCRIPT with a stand-in cmaprof that logs its argv."""
    import subprocess

    fake = tmp_path / "cmaprof"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" >"$LOG"\necho to-stderr >&2\nexit 3\n')
    fake.chmod(0o755)
    run_dir, rec = tmp_path / "run", tmp_path / "rec"
    run_dir.mkdir()
    args = [str(run_dir), str(rec), str(fake), "page_alloc,cma", "anon:1,hold=1", "cma-alloc:90%"]
    proc = subprocess.run(
        ["sh", "-c", exp.GUEST_SCRIPT, "sh", *args],
        env={"LOG": str(tmp_path / "argv"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 3
    assert (run_dir / "record.status").read_text() == "3\n"
    assert (run_dir / "record.err").read_text() == "to-stderr\n"
    assert (run_dir / "dmesg.txt").exists()
    assert (tmp_path / "argv").read_text().splitlines() == [
        "record",
        "-o",
        str(rec),
        "--probes",
        "page_alloc,cma",
        "--",
        str(fake),
        "workload",
        "anon:1,hold=1",
        "cma-alloc:90%",
    ]


def test_a_failed_boot_is_tried_again_at_once_and_both_attempts_kept(tmp_path):
    class Flaky(FakeGuest):
        def __call__(self, root, p, run):
            out = super().__call__(root, p, run)
            if self.calls.count(run.name) == 1 and run.layout == "stock":
                return exp.Outcome("failed", "Kernel panic at boot", 1.0, 125, None)
            return out

    guest = Flaky()
    lines: list[str] = []
    man = exp.execute(tmp_path, params(iterations=1), runner=guest, echo=lines.append)
    assert guest.calls == [
        "6.1.192-cma-stock/iter-01",
        "6.1.192-cma-stock/iter-01",
        "6.1.192-cma-movable/iter-01",
    ]
    assert man["runs"]["6.1.192-cma-stock/iter-01"]["attempts"] == 2
    assert man["runs"]["6.1.192-cma-stock/iter-01"]["status"] == "ok"
    assert (tmp_path / "runs/6.1.192-cma-stock/iter-01.failed-1/run.json").exists()
    assert any("trying again" in ln for ln in lines)


def test_the_summary_commands_exist_in_the_cli():
    from cmaprof.cli import cli

    assert exp.SUMMARY_COMMANDS <= set(cli.commands)


def test_neither_the_experiment_nor_the_guest_runner_imports_the_cli():
    import subprocess
    import sys

    code = (
        "import sys, cmaprof.experiment, cmaprof.guest; "
        "print(sorted(m for m in sys.modules if m == 'click' or m.startswith('cmaprof.cli')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def _stand_in_run(tmp_path, monkeypatch, script: str):
    """One run through a stand-in `cmaprof vm run` (``script``, with ``$RUN_DIR``), which
    then writes the recording's metadata; the run and the progress lines it gave."""
    p = params(iterations=1, layouts=["stock"])
    run = exp.plan(p)[0]
    rec, rdir = run.rec_dir(tmp_path), run.run_dir(tmp_path)
    script = f"RUN_DIR={rdir}; {script}mkdir -p {rec} && echo '{{}}' >{rec}/metadata.json"
    monkeypatch.setattr(exp, "vm_argv", lambda root, p, run: ["sh", "-c", script])
    lines: list[str] = []
    out = exp.guest_run(tmp_path, p, run, echo=lines.append)
    assert out.status == "ok", out
    return run, lines


@pytest.mark.parametrize(("every", "beats"), [(0.0, 2), (3600.0, 0)])
def test_guest_progress_is_passed_on(tmp_path, monkeypatch, every, beats):
    """A stand-in `cmaprof vm run` writes what the real one does on stderr: its boot and
    summary lines are passed on at once, heartbeats at most every PROGRESS_S."""
    monkeypatch.setattr(exp, "PROGRESS_S", every)
    script = (
        "echo 'cmaprof: vm: booting bzImage under TCG' >&2; "
        "echo 'cmaprof: vm: booting the guest (0:30 elapsed, killed at 15:00)' >&2; "
        "echo 'other output' >&2; "
        "echo 'cmaprof: vm: running sh (1:00 elapsed, killed at 15:00)' >&2; "
    )
    run, lines = _stand_in_run(tmp_path, monkeypatch, script)
    assert lines[0] == f"cmaprof experiment: {run.name}: vm: booting bzImage under TCG"
    assert len(lines) == 1 + beats, lines
    assert not any("other output" in ln for ln in lines)


def test_the_compile_shows_in_the_progress(tmp_path, monkeypatch):
    """record's compile lines (the long pole under TCG) reach the experiment's progress
    from the run's record.err, with the time into the run; its other lines do not."""
    script = (
        'err="$RUN_DIR/record.err"; '
        "echo 'cmaprof: compiling the probes (page_alloc, cma) with BCC' >>$err; "
        "echo 'In file included from x.h:1:' >>$err; "
        "echo 'cmaprof: probes compiled and loaded in 140.2 s' >>$err; "
        "echo 'cmaprof: recording system-wide while the command runs' >>$err; "
        "sleep 1.5; "
    )
    _, lines = _stand_in_run(tmp_path, monkeypatch, script)
    said = [ln.split(": ", 2)[2] for ln in lines]
    assert [s.rsplit(" (", 1)[0] for s in said] == [
        "compiling the probes (page_alloc, cma) with BCC",
        "probes compiled and loaded in 140.2 s",
        "recording system-wide while the command runs",
    ], lines
    assert all(re.search(r"\(0:0\d into the run\)$", s) for s in said), lines
