import json
import os
import stat

import pytest

from cmaprof.errors import BadInput
from cmaprof.recording import schema
from cmaprof.recording.writer import RecordingWriter


def test_refuses_existing_without_force(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(BadInput, match="exists; choose another -o or add --force"):
        RecordingWriter(tmp_path / "r")


def test_force_replaces_only_recordings(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious").write_text("x")
    with pytest.raises(BadInput, match="not a cmaprof recording"):
        RecordingWriter(other, force=True)
    assert (other / "precious").exists()
    w = RecordingWriter(tmp_path / "rec")
    w.write_metadata({"complete": True})
    w2 = RecordingWriter(tmp_path / "rec", force=True)
    assert not (w2.path / "metadata.json").exists()


def test_symlink_output_refused(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(BadInput, match="symbolic link"):
        RecordingWriter(tmp_path / "link", force=True)


def test_planted_symlink_tmp_name_not_followed(tmp_path):
    w = RecordingWriter(tmp_path / "rec")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (w.path / ".metadata.json.tmp").symlink_to(victim)
    w.write_metadata({"a": 1})
    assert victim.read_text() == "keep"
    meta = json.loads((w.path / "metadata.json").read_text())
    assert meta["tool"] == "cmaprof" and meta["format_version"] == 1


def test_files_not_world_writable_and_series_parts(tmp_path):
    w = RecordingWriter(tmp_path / "rec")
    t = schema.to_table(
        "vmstat", {"t_ns": [1], "counter": ["pgalloc_normal"], "value": [5]}, series=True
    )
    p1 = w.append_series("vmstat", t)
    p2 = w.append_series("vmstat", t)
    assert (p1.name, p2.name) == ("part-000001.parquet", "part-000002.parquet")
    for p in w.path.rglob("*"):
        assert not os.stat(p).st_mode & stat.S_IWOTH, p
    assert not list(w.path.rglob("*.tmp"))


def test_disk_full_is_one_clear_error_and_keeps_earlier_files(tmp_path, monkeypatch):
    import errno

    from cmaprof.errors import EnvironmentProblem

    w = RecordingWriter(tmp_path / "rec")
    w.write_metadata({"complete": False})

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(EnvironmentProblem, match=r"disk full while writing .*vmstat.*readable"):
        w.write_text("proc/start/vmstat", "pgalloc_normal 1\n")
    monkeypatch.undo()
    assert json.loads((w.path / "metadata.json").read_text())["complete"] is False
    assert not list(w.path.rglob("*.tmp"))


def test_discard_removes_only_what_the_writer_wrote(tmp_path):
    from cmaprof.recording.writer import RecordingWriter

    out = tmp_path / "rec"
    w = RecordingWriter(out)
    w.write_metadata({"complete": False})
    w.write_text("formats/kmem/mm_page_alloc/format", "name: mm_page_alloc\n")
    w.discard()
    assert not out.exists()
    w = RecordingWriter(out)
    w.write_text("formats/kmem/mm_page_alloc/format", "x\n")
    (out / "formats" / "mine").write_text("not cmaprof's")
    w.discard()
    assert (out / "formats" / "mine").read_text() == "not cmaprof's"
    assert not (out / "formats" / "kmem").exists()
