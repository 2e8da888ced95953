"""CLI arguments that are not recordings, or outputs that cannot be written: one
``cmaprof: error:`` line naming the file, exit 2 (bad input) or 1 (cannot write), never
a traceback or a hang. (Corrupt, truncated, foreign and newer recordings are the fuzz
test's: tests/unit/test_fuzz_recording.py.)

Run in-process through :func:`cmaprof.cli.main`, the console script's entry point.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from cmaprof import cli
from tests.conftest import DATA

HOST = DATA / "recordings" / "host-6.18-anon"


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cmaprof", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def _one_error(err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("cmaprof: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def _fifo_metadata(tmp_path):
    d = tmp_path / "fifo"
    d.mkdir()
    os.mkfifo(d / "metadata.json")
    return d, "metadata.json: not a regular file"


def _fifo_inside(tmp_path):
    d = tmp_path / "rec"
    shutil.copytree(HOST, d)
    (d / "proc/start/zoneinfo").unlink()
    os.mkfifo(d / "proc/start/zoneinfo")
    return d, "proc/start/zoneinfo: not a regular file"


def _huge_metadata(tmp_path):
    d = tmp_path / "big"
    d.mkdir()
    with open(d / "metadata.json", "wb") as f:
        f.truncate(64 << 20)  # sparse: no disk used
    return d, "more than a metadata file can be"


def _missing(tmp_path):
    return tmp_path / "nope", "no such recording directory"


def _a_file(tmp_path):
    p = tmp_path / "file"
    p.write_text("x")
    return p, "not a directory"


def _empty_dir(tmp_path):
    return tmp_path, "metadata.json: missing"


def _metadata_is_dir(tmp_path):
    (tmp_path / "metadata.json").mkdir()
    return tmp_path, "metadata.json: cannot read"


def _symlink_loop(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a", "a:"


@pytest.mark.parametrize(
    "make",
    [
        _missing,
        _a_file,
        _empty_dir,
        _metadata_is_dir,
        _symlink_loop,
        _fifo_metadata,
        _fifo_inside,
        _huge_metadata,
    ],
)
@pytest.mark.parametrize("command", ["report", "report --redact", "compare", "plot"])
def test_bad_recording_argument(make, command, tmp_path, monkeypatch, capsys):
    path, words = make(tmp_path)
    args = [*command.split(), str(path)]
    if command == "plot":
        args += ["-o", str(tmp_path / "plots")]
    rc, _, err = run_main(monkeypatch, capsys, *args)
    assert rc == 2, err
    # compare and plot take a recording or a directory of them: their words may differ
    _one_error(err, words if command.startswith("report") else path.name)


@pytest.mark.parametrize("target", ["file", "readonly"])
def test_plot_output_that_cannot_be_written(target, tmp_path, monkeypatch, capsys):
    if target == "file":
        out = tmp_path / "plots"
        out.write_text("not a directory")
        words = "File exists"
    else:
        out = tmp_path / "proc-like" / "plots"
        (tmp_path / "proc-like").write_text("a file, so no directory below it")
        words = "Not a directory"
    rc, _, err = run_main(monkeypatch, capsys, "plot", str(HOST), "-o", str(out))
    assert rc == 1, err
    _one_error(err, str(out.name), words)


def test_bad_option_is_clicks_usage_error(monkeypatch, capsys):
    rc, _, err = run_main(monkeypatch, capsys, "report", str(HOST), "--format", "xml")
    assert rc == 2 and "Invalid value for '--format'" in err and "Traceback" not in err
