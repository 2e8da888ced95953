"""RecordingWriter: creates a recording directory and writes its files atomically.

The layout and the atomicity rules are in :mod:`cmaprof.recording`; metadata.json
has the shape of :class:`~cmaprof.recording.metadata.Metadata`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cmaprof.errors import BadInput, EnvironmentProblem
from cmaprof.recording.metadata import FORMAT_VERSION, METADATA, TOOL, Metadata

__all__ = ["FORMAT_VERSION", "METADATA", "RecordingWriter"]
FILE_MODE = 0o644
DIR_MODE = 0o755


def _disk_error(path: Path, exc: OSError) -> EnvironmentProblem:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EnvironmentProblem(
            f"disk full while writing {path}; the files written before it are complete "
            f"and readable: free space and record again"
        )
    return EnvironmentProblem(f"cannot write {path}: {exc.strerror}")


def _is_recording(path: Path) -> bool:
    try:
        meta = json.loads((path / METADATA).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("tool") == TOOL


class RecordingWriter:
    """Creates a recording directory and writes its files atomically.

    :param path: the directory to create; it must not exist, unless ``force`` is set
        and it is an earlier cmaprof recording or empty (never anything else).
    """

    def __init__(self, path: Path, force: bool = False) -> None:
        self.path = Path(path)
        self._parts: dict[str, int] = {}
        if self.path.is_symlink():
            raise BadInput(f"{self.path} is a symbolic link; give a real directory path")
        if self.path.exists():
            if not force:
                raise BadInput(
                    f"{self.path} exists; choose another -o or add --force to "
                    f"replace an earlier recording"
                )
            if not self.path.is_dir():
                raise BadInput(f"{self.path} exists and is not a directory; refusing to replace it")
            if any(self.path.iterdir()) and not _is_recording(self.path):
                raise BadInput(
                    f"{self.path} is not a cmaprof recording; refusing to replace it "
                    f"even with --force"
                )
            shutil.rmtree(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.path, DIR_MODE)
        except OSError as exc:
            raise _disk_error(self.path, exc) from exc
        self._note("_dirs", self.path)

    def _mkdirs(self, rel: str) -> Path:
        target = self.path / rel
        d = self.path
        for part in Path(rel).parent.parts:
            d = d / part
            if not d.exists():
                os.mkdir(d, DIR_MODE)
                self._note("_dirs", d)
        return target

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write ``data`` to ``rel`` inside the recording, atomically."""
        target = self._mkdirs(rel)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            if tmp.exists() or tmp.is_symlink():
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            self._note("_files", target)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise _disk_error(target, exc) from exc
        return target

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_text(rel, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_metadata(self, meta: Metadata | dict[str, Any]) -> Path:
        """Write ``metadata.json`` (stamped with the tool and :data:`FORMAT_VERSION`);
        a plain dict is read as :class:`Metadata` first, so its keys keep their shape."""
        return self.write_json(METADATA, Metadata.coerce(meta).for_writing())

    def _parquet_bytes(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue().to_pybytes()

    def write_table(self, name: str, table: pa.Table) -> Path:
        """Write a final table as ``tables/<name>.parquet``."""
        return self.write_bytes(f"tables/{name}.parquet", self._parquet_bytes(table))

    def append_series(self, name: str, table: pa.Table) -> Path:
        """Append one interval's rows as ``series/<name>/part-NNNNNN.parquet``."""
        n = self._parts.get(name, 0) + 1
        self._parts[name] = n
        return self.write_bytes(f"series/{name}/part-{n:06d}.parquet", self._parquet_bytes(table))

    def _note(self, kind: str, path: Path) -> None:
        """Remember a file written (``_files``) or a directory created (``_dirs``), in
        order, for :meth:`discard` (set up lazily: bench and tests build writers with
        ``__new__``)."""
        self.__dict__.setdefault(kind, []).append(path)

    def discard(self) -> None:
        """Remove every file this writer wrote and every directory it created, newest
        first, by name (no directory listing, so it works with no file descriptor
        left); anything else found in them stays, and so do its directories."""
        for f in reversed(self.__dict__.get("_files", [])):
            try:
                f.unlink()
            except OSError:
                pass
        for d in reversed(self.__dict__.get("_dirs", [])):
            try:
                d.rmdir()
            except OSError:
                pass
        self.__dict__.pop("_files", None)
        self.__dict__.pop("_dirs", None)

    def copy_file(self, src: Path, rel: str) -> Path | None:
        """Copy a (small, text) kernel file into the recording; None when unreadable."""
        try:
            data = Path(src).read_bytes()
        except OSError:
            return None
        return self.write_bytes(rel, data)
