"""The counting window in metadata (CLOCK_MONOTONIC ns) and ``import --window-of``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cmaprof.analysis import load
from cmaprof.collectors import text_import as importer
from cmaprof.errors import BadInput
from cmaprof.recording import reader as recording
from tests.conftest import DATA, run_cli

OLD = DATA / "recordings" / "host-6.18-anon"
WINDOW = {
    "clock": "CLOCK_MONOTONIC",
    "on_before_ns": 2767073258271,
    "on_ns": 2767073322391,
    "on_realtime_ns": 1796302678231169710,
    "off_ns": 2768073712382,
    "off_after_ns": 2768073825865,
    "off_realtime_ns": 1796302679231559701,
    "intervals_ns": [[2767073322391, 2767797558827], [2767797558827, 2768073712382]],
    "intervals_realtime_ns": [
        [1796302678231169710, 1796302678955406146],
        [1796302678955406146, 1796302679231559701],
    ],
}


def _with_window(tmp_path: Path, window: object) -> Path:
    rec = tmp_path / "rec"
    shutil.copytree(OLD, rec)
    meta = json.loads((rec / "metadata.json").read_text())
    meta["counting_window"] = window
    (rec / "metadata.json").write_text(json.dumps(meta))
    return rec


def test_old_recordings_load_without_a_window():
    old = [
        p.parent
        for p in sorted((DATA / "recordings").glob("*/metadata.json"))
        if "counting_window" not in json.loads(p.read_text())  # newer ones have one
    ]
    assert old
    for rec in old:
        assert recording.counting_window_s(load(rec).meta) is None, rec


def test_window_in_seconds_of_the_monotonic_clock(tmp_path):
    rec = load(_with_window(tmp_path, WINDOW))
    assert recording.counting_window_s(rec.meta) == (2767.073322391, 2768.073712382)
    assert importer.window_arg(None, rec.path) == (2767.073322391, 2768.073712382)
    assert importer.window_arg((1.0, 2.0), None) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("window", "words"),
    [
        ({"clock": "CLOCK_REALTIME", "on_ns": 1}, "clock CLOCK_MONOTONIC"),
        (dict(WINDOW, on_ns="2767"), "counting_window.on_ns' must be nanoseconds"),
        (dict(WINDOW, intervals_ns=[[1, 2, 3]]), "list of \\[start_ns, end_ns\\]"),
        ([1, 2], "must be an object"),
    ],
)
def test_bad_window_is_one_clear_error(tmp_path, window, words):
    with pytest.raises(BadInput, match=words):
        load(_with_window(tmp_path, window))


def test_window_of_an_old_recording_is_refused():
    with pytest.raises(BadInput, match="has no counting window.*--window START END"):
        importer.window_arg(None, OLD)
    with pytest.raises(BadInput, match="exclude each other"):
        importer.window_arg((1.0, 2.0), OLD)


def test_cli_window_of_old_recording_exits_2(tmp_path):
    proc = run_cli(
        "import",
        str(DATA / "traces" / "guest-6.1" / "perf.script.xz"),
        "--window-of",
        str(OLD),
        "-o",
        str(tmp_path / "imp"),
    )
    assert proc.returncode == 2, proc.stderr
    assert "has no counting window" in proc.stderr
    assert not (tmp_path / "imp").exists()
