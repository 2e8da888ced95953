"""doctor predicts whether record works: a probe broken on purpose is named by both.

``CMAPROF_CFLAGS='-DHAVE_MIGRATE_START=('`` makes probes/migrate.bpf.c fail to compile
for real (its ``#if HAVE_MIGRATE_START`` becomes a syntax error). Each test gets its own
compile cache (XDG_CACHE_HOME).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.live

BROKEN = "-DHAVE_MIGRATE_START=("


def _env(tmp_path, cflags=None):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    if cflags:
        env["CMAPROF_CFLAGS"] = cflags
    return env


def test_doctor_says_possible_and_record_works(tmp_path):
    env = _env(tmp_path)
    doc = run_cli("doctor", env=env)
    assert doc.returncode == 0, doc.stdout + doc.stderr
    assert "recording: possible" in doc.stdout
    assert "compile and load here" in doc.stdout
    rec = run_cli("record", "-o", str(tmp_path / "r"), "-d", "0.2", env=env)
    assert rec.returncode == 0, rec.stderr


def test_broken_probe_named_by_doctor_and_record(tmp_path):
    env = _env(tmp_path, BROKEN)
    doc = run_cli("doctor", "--format", "json", env=env)
    assert doc.returncode != 0
    rows = {r["name"]: r for r in json.loads(doc.stdout)}
    row = rows["probes"]
    assert row["status"] == "fail" and row["required"]
    assert row["detail"].startswith("probe migrate does not compile or load on this kernel")
    assert "migrate.bpf.c" in row["detail"] and "error:" in row["detail"]
    assert "--skip-unavailable would leave out migrate" in row["detail"]

    out = tmp_path / "r"
    rec = run_cli("record", "-o", str(out), "-d", "0.2", env=env)
    assert rec.returncode != 0
    assert "probe migrate does not compile or load on this kernel" in rec.stderr
    assert not out.exists(), "a failed start left a directory"

    rec = run_cli("record", "-o", str(out), "-d", "0.2", "--skip-unavailable", env=env)
    assert rec.returncode == 0, rec.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert "migrate" not in meta["probes"]
    assert meta["probes_unavailable"]["migrate"].startswith("does not compile here")
    assert meta["complete"] is True


def test_record_alone_names_the_probe_without_a_cache(tmp_path):
    """No doctor run first: record's own compile finds the same probe."""
    env = _env(tmp_path, BROKEN)
    out = tmp_path / "r"
    rec = run_cli("record", "-o", str(out), "-d", "0.2", env=env)
    assert rec.returncode != 0
    assert "probe migrate does not compile or load on this kernel" in rec.stderr
    assert not out.exists()
