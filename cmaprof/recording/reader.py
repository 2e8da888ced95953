"""Recording directory -> typed metadata and DataFrames. The one place raw values
become names.

:func:`load` validates the recording (metadata, version, tables, format files) and
returns a :class:`Recording`; every problem is a :class:`~cmaprof.errors.BadInput`
naming the file and what is wrong. Decoding uses only what the recording holds:
GFP names from its ``formats/kmem/mm_page_alloc/format``, migratetype names from
its ``proc/start/pagetypeinfo``, zone names from its ``/proc/zoneinfo`` copy, CMA
areas from its metadata.

Decoded frames (``df_*``) add to the stored columns: ``zone`` (category),
``migratetype`` (category), ``gfp`` (string, as the kernel prints it) and
``cma_area`` (category, NA outside CMA). See :mod:`cmaprof.recording.schema`.
``Recording.meta`` is the typed :class:`~cmaprof.recording.metadata.Metadata`.
Frames that analysis derives (blockers decoded, streamed events) are methods of
:class:`cmaprof.analysis.Recording`, which :func:`cmaprof.analysis.load` returns.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cmaprof.errors import BadInput
from cmaprof.kernel import formats, procfs
from cmaprof.recording import schema
from cmaprof.recording.metadata import FORMAT_VERSION, METADATA, READABLE_VERSIONS, TOOL, Metadata
from cmaprof.recording.validate import validate_v1

__all__ = ["FORMAT_VERSION", "Recording", "load", "load_many"]
#: The loader of each readable format version (each validates, then builds).
LOADERS = {1: "load_v1"}
assert tuple(LOADERS) == READABLE_VERSIONS


class Recording:
    """A loaded recording. Use :func:`load` to make one."""

    def __init__(self, path: Path, meta: Metadata) -> None:
        self.path = path
        self.meta = meta

    # -- files ---------------------------------------------------------------
    def _file(self, rel: str) -> Path:
        return self.path / rel

    def read_text(self, rel: str) -> str | None:
        try:
            return self._file(rel).read_text()
        except OSError:
            return None
        except UnicodeDecodeError:
            raise BadInput(f"{self._file(rel)}: not a text file")

    @property
    def complete(self) -> bool:
        return bool(self.meta.complete)

    @property
    def label(self) -> str:
        return str(self.meta.label or self.path.name)

    @functools.cached_property
    def event_formats(self) -> dict[tuple[str, str], formats.EventFormat]:
        d = self._file("formats")
        if not d.is_dir():
            return {}
        return formats.load_format_dir(d)

    @functools.cached_property
    def gfp_table(self) -> formats.FlagTable:
        fmt = self.event_formats.get(("kmem", "mm_page_alloc"))
        if fmt is None:
            raise BadInput(
                f"{self._file('formats/kmem/mm_page_alloc/format')}: missing; "
                f"cannot decode GFP flags (the recording is damaged)"
            )
        try:
            return formats.gfp_table(fmt)
        except formats.FormatError as exc:
            where = self._file("formats/kmem/mm_page_alloc/format")
            msg = str(exc)
            raise BadInput(msg if str(where) in msg else f"{where}: {msg}") from None

    @functools.cached_property
    def migratetype_names(self) -> list[str]:
        for rel in ("proc/start/pagetypeinfo", "proc/end/pagetypeinfo"):
            text = self.read_text(rel)
            if text:
                try:
                    names = formats.migratetype_names_from_pagetypeinfo(text)
                except formats.FormatError as exc:
                    raise BadInput(f"{self._file(rel)}: {exc}") from None
                if names:
                    return names
        return []

    @property
    def zone_names(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.meta.zone_names.items()}

    @property
    def cma_placement_unknown(self) -> bool:
        """True for an imported trace without CMA ranges (cma_area_idx 254 rows)."""
        return self.meta.cma_placement_unknown

    @property
    def cma_area_names(self) -> list[str]:
        return self.meta.cma_area_names

    def vmstat(self, which: str) -> dict[str, int]:
        """The /proc/vmstat snapshot taken at ``which`` = "start" or "end" (empty if absent)."""
        rel = f"proc/{which}/vmstat"
        text = self.read_text(rel)
        return procfs.parse_vmstat(text, str(self._file(rel))) if text else {}

    def sys_counter(self, which: str, rel: str) -> int | None:
        """A /sys counter saved at ``which`` ("start"/"end"), e.g.
        ``cma/reserved/alloc_pages_success``; None when not saved."""
        text = self.read_text(f"sys/{which}/{rel}")
        try:
            return int(text.split()[0]) if text else None
        except (ValueError, IndexError):
            raise BadInput(f"{self._file(f'sys/{which}/{rel}')}: not a number") from None

    # -- raw tables -------------------------------------------------------------
    def table(self, name: str) -> pa.Table:
        """A stored table with its declared schema (empty if the recording lacks it)."""
        path = self._file(f"tables/{name}.parquet")
        want = schema.SCHEMAS[name]
        if not path.exists():
            return want.empty_table()
        try:
            t = pq.ParquetFile(path).read()  # not read_table: it imports pyarrow.dataset
            for f in schema.ADDED_COLUMNS.get(name, ()):  # a recording from before them
                if t.schema.get_field_index(f) < 0:
                    t = t.append_column(want.field(f), pa.nulls(t.num_rows, want.field(f).type))
            _check_schema(path, t.schema, want)
            t = t.select(want.names)
            t.validate(full=True)
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(
                f"{path}: unreadable Parquet ({_one_line(exc)}); the file is corrupt or truncated"
            ) from None
        return t

    def series(self, name: str) -> pa.Table:
        """All interval parts of ``series/<name>`` concatenated (empty if none)."""
        d = self._file(f"series/{name}")
        want = schema.SERIES_SCHEMAS[name]
        parts = sorted(d.glob("part-*.parquet")) if d.is_dir() else []
        if not parts:
            return want.empty_table()
        import pyarrow.dataset as ds  # here: a recording without interval parts needs none

        try:
            t = ds.dataset([str(p) for p in parts], format="parquet", schema=want).to_table()
            t.validate(full=True)
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(
                f"{_bad_part(parts, want, d)}: unreadable interval data ({_one_line(exc)})"
            )
        return t

    # -- decoded frames ---------------------------------------------------------
    def _decode(self, df: pd.DataFrame) -> pd.DataFrame:
        if "zone_idx" in df:
            zn = self.zone_names
            df["zone"] = pd.Categorical(
                [zn.get(int(i), f"zone{int(i)}") for i in df["zone_idx"]],
                categories=[zn[k] for k in sorted(zn)] or None,
            )
        if "migratetype_id" in df:
            mt = self.migratetype_names
            df["migratetype"] = pd.Categorical(
                [mt[int(i)] if int(i) < len(mt) else f"mt{int(i)}" for i in df["migratetype_id"]]
            )
        if "gfp_flags" in df and df.empty:
            # A recording killed before its format files were copied has no rows to decode.
            df["gfp"] = pd.Series(dtype="object")
        elif "gfp_flags" in df:
            table = self.gfp_table
            cache: dict[int, str] = {}
            df["gfp"] = [
                cache.setdefault(int(v), table.decode(int(v)))
                if int(v) not in cache
                else cache[int(v)]
                for v in df["gfp_flags"]
            ]
        if "cma_area_idx" in df:
            names = self.cma_area_names
            df["cma_area"] = pd.Categorical(
                [
                    None
                    if int(i) == schema.CMA_AREA_NONE
                    else "unknown"
                    if int(i) == schema.CMA_AREA_UNKNOWN
                    else (names[int(i)] if int(i) < len(names) else f"cma{int(i)}")
                    for i in df["cma_area_idx"]
                ],
                categories=(names + ["unknown"]) if self.cma_placement_unknown else (names or None),
            )
        return df

    def df_page_alloc(self) -> pd.DataFrame:
        """The page_alloc cube, decoded: one row per (gfp, node, zone, order, mt, CMA area)."""
        return self._decode(self.table("page_alloc").to_pandas())

    def df_page_alloc_fail(self) -> pd.DataFrame:
        """Failed allocations per (gfp, order, migratetype); ``pages`` = pages asked for."""
        return self._decode(self.table("page_alloc_fail").to_pandas())

    def df_page_alloc_bulk(self) -> pd.DataFrame:
        """Bulk-allocator pages per (node, zone): in pgalloc_*, without mm_page_alloc."""
        return self._decode(self.table("page_alloc_bulk").to_pandas())

    def df_cma_alloc(self) -> pd.DataFrame:
        """One row per cma_alloc() call (``tables/cma_alloc``, else the interval parts
        of an incomplete recording)."""
        t = self.table("cma_alloc")
        if t.num_rows == 0 and not (self.path / "tables/cma_alloc.parquet").exists():
            t = self.series("cma_alloc")
        return t.to_pandas()

    def df_cma_used_series(self) -> pd.DataFrame:
        """debugfs ``used`` pages per CMA area at every interval."""
        return self.series("cma_used").to_pandas()

    def df_page_alloc_series(self) -> pd.DataFrame:
        """Per-interval deltas of the cube, decoded; times relative to the start, in ns."""
        return self._decode(self.series("page_alloc").to_pandas())

    def df_vmstat_series(self) -> pd.DataFrame:
        """Per-interval cumulative /proc/vmstat values (long form)."""
        return self.series("vmstat").to_pandas()


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line, shortened (Arrow errors can span lines)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _bad_part(parts: list[Path], want: pa.Schema, d: Path) -> Path:
    """The first interval part that cannot be read with the ``want`` schema, else ``d``."""
    import pyarrow.dataset as ds

    for p in parts:
        try:
            ds.dataset([str(p)], format="parquet", schema=want).to_table().validate(full=True)
        except (pa.ArrowException, OSError):
            return p
    return d


def _check_schema(path: Path, have: pa.Schema, want: pa.Schema) -> None:
    for f in want:
        idx = have.get_field_index(f.name)
        if idx < 0:
            raise BadInput(
                f"{path}: column {f.name!r} missing; not a cmaprof table of this format version"
            )
        if have.field(idx).type != f.type:
            raise BadInput(
                f"{path}: column {f.name!r} is {have.field(idx).type}, expected {f.type}"
            )


#: metadata.json of a real recording is a few KiB.
_MAX_METADATA_BYTES = 16 << 20


def _only_regular_files(path: Path) -> None:
    """Refuse a recording holding a FIFO, socket or device (reading one would block or
    read a device), found by stat(2), which never blocks."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            p = Path(dirpath, name)
            try:
                mode = p.stat().st_mode
            except OSError:
                continue  # dangling link, loop: reported by whoever reads it
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise BadInput(f"{p}: not a regular file; the recording is damaged or foreign")


def _read_metadata(path: Path) -> dict[str, Any]:
    mpath = path / METADATA
    if not path.exists():
        raise BadInput(f"{path}: no such recording directory")
    if not path.is_dir():
        raise BadInput(
            f"{path}: not a directory; a recording is a directory made by `cmaprof record -o DIR`"
        )
    _only_regular_files(path)
    try:
        st = mpath.stat()
        if stat.S_ISREG(st.st_mode) and st.st_size > _MAX_METADATA_BYTES:
            raise BadInput(
                f"{mpath}: {st.st_size} bytes, more than a metadata file can be "
                f"({_MAX_METADATA_BYTES}); the recording is corrupt"
            )
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{mpath}: missing; {path} is not a cmaprof recording")
    except OSError as exc:
        raise BadInput(f"{mpath}: cannot read ({exc.strerror})")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{mpath}: not valid JSON ({exc}); the recording is corrupt or truncated")
    if not isinstance(meta, dict) or meta.get("tool") != TOOL:
        raise BadInput(f'{mpath}: not written by cmaprof (no "tool": "cmaprof")')
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadInput(f"{mpath}: format_version missing or not an integer")
    if version > FORMAT_VERSION:
        raise BadInput(
            f"{mpath}: format version {version} is newer than this cmaprof reads "
            f"({FORMAT_VERSION}); upgrade cmaprof"
        )
    if version not in LOADERS:
        raise BadInput(f"{mpath}: unknown format version {version}")
    return meta


R = TypeVar("R", bound=Recording)


def load(path: str | Path, cls: type[R] = Recording) -> R:  # type: ignore[assignment]
    """Load and validate the recording at ``path``.

    :param cls: the class to build (analysis passes its :class:`Recording` subclass).
    :raises BadInput: missing, corrupt, foreign or newer-version recording.
    """
    path = Path(path)
    meta = _read_metadata(path)
    loader = globals()[LOADERS[meta["format_version"]]]
    return cls(path, loader(path, meta))


def counting_window_s(meta: Metadata | dict[str, Any]) -> tuple[float, float] | None:
    """The counting window (CLOCK_MONOTONIC seconds, as perf -k mono prints them), or
    None for a recording made before windows were kept or never switched off."""
    win = Metadata.coerce(meta).counting_window
    return win.seconds() if win is not None else None


def load_v1(path: Path, meta: dict[str, Any]) -> Metadata:
    """Format version 1: check the field types, then read the typed metadata."""
    validate_v1(path, meta)
    return Metadata.from_json(meta)


def load_many(paths: list[str | Path], cls: type[R] = Recording) -> list[R]:  # type: ignore[assignment]
    """Load several recordings; a directory holding recordings stands for all of them."""
    out: list[R] = []
    for p in map(Path, paths):
        if (p / METADATA).exists() or not p.is_dir():
            out.append(load(p, cls))
        else:
            subs = sorted(d for d in p.iterdir() if (d / METADATA).exists())
            if not subs:
                raise BadInput(f"{p}: neither a recording nor a directory of recordings")
            out.extend(load(d, cls) for d in subs)
    return out
