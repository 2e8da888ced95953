"""Recording directory -> typed DataFrames. The one place raw values become names.

:func:`load` validates the recording (metadata, version, tables, format files) and
returns a :class:`Recording`; every problem is a :class:`~cmaprof.errors.BadInput`
naming the file and what is wrong. Decoding uses only what the recording holds:
GFP names from its ``formats/kmem/mm_page_alloc/format``, migratetype names from
its ``proc/start/pagetypeinfo``, zone names from its ``/proc/zoneinfo`` copy, CMA
areas from its metadata.

Decoded frames (``df_*``) add to the stored columns: ``zone`` (category),
``migratetype`` (category), ``gfp`` (string, as the kernel prints it) and
``cma_area`` (category, NA outside CMA). See :mod:`cmaprof.analysis.schema`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cmaprof.analysis import formats, schema
from cmaprof.collectors import procfs
from cmaprof.errors import BadInput

FORMAT_VERSION = 1
LOADERS = {1: "load_v1"}


class Recording:
    """A loaded recording. Use :func:`load` to make one."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
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
        return bool(self.meta.get("complete"))

    @property
    def label(self) -> str:
        return str(self.meta.get("label") or self.path.name)

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
        return formats.gfp_table(fmt)

    @functools.cached_property
    def migratetype_names(self) -> list[str]:
        for rel in ("proc/start/pagetypeinfo", "proc/end/pagetypeinfo"):
            text = self.read_text(rel)
            if text:
                names = formats.migratetype_names_from_pagetypeinfo(text)
                if names:
                    return names
        return []

    @functools.cached_property
    def zone_names(self) -> dict[int, str]:
        names = self.meta.get("zone_names") or {}
        return {int(k): str(v) for k, v in names.items()}

    @functools.cached_property
    def cma_area_names(self) -> list[str]:
        return [str(a.get("name")) for a in self.meta.get("cma_areas") or []]

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
            t = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(f"{path}: unreadable Parquet ({exc}); the file is corrupt or truncated")
        _check_schema(path, t.schema, want)
        return t.select(want.names)

    def series(self, name: str) -> pa.Table:
        """All interval parts of ``series/<name>`` concatenated (empty if none)."""
        d = self._file(f"series/{name}")
        want = schema.SERIES_SCHEMAS[name]
        parts = sorted(d.glob("part-*.parquet")) if d.is_dir() else []
        if not parts:
            return want.empty_table()
        try:
            t = ds.dataset([str(p) for p in parts], format="parquet", schema=want).to_table()
        except (pa.ArrowException, OSError) as exc:
            raise BadInput(f"{d}: unreadable interval data ({exc})")
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
        if "gfp_flags" in df:
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
                    else (names[int(i)] if int(i) < len(names) else f"cma{int(i)}")
                    for i in df["cma_area_idx"]
                ],
                categories=names or None,
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


def _read_metadata(path: Path) -> dict[str, Any]:
    mpath = path / "metadata.json"
    if not path.exists():
        raise BadInput(f"{path}: no such recording directory")
    if not path.is_dir():
        raise BadInput(
            f"{path}: not a directory; a recording is a directory made by `cmaprof record -o DIR`"
        )
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{mpath}: missing; {path} is not a cmaprof recording")
    except OSError as exc:
        raise BadInput(f"{mpath}: cannot read ({exc.strerror})")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"{mpath}: not valid JSON ({exc}); the recording is corrupt or truncated")
    if not isinstance(meta, dict) or meta.get("tool") != "cmaprof":
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


def load(path: str | Path) -> Recording:
    """Load and validate the recording at ``path``.

    :raises BadInput: missing, corrupt, foreign or newer-version recording.
    """
    path = Path(path)
    meta = _read_metadata(path)
    return globals()[LOADERS[meta["format_version"]]](path, meta)


def load_v1(path: Path, meta: dict[str, Any]) -> Recording:
    rec = Recording(path, meta)
    for key in ("kernel_release", "zone_names"):
        if key not in meta:
            raise BadInput(f"{path / 'metadata.json'}: field {key!r} missing")
    return rec


def load_many(paths: list[str | Path]) -> list[Recording]:
    """Load several recordings; a directory holding recordings stands for all of them."""
    out: list[Recording] = []
    for p in map(Path, paths):
        if (p / "metadata.json").exists() or not p.is_dir():
            out.append(load(p))
        else:
            subs = sorted(d for d in p.iterdir() if (d / "metadata.json").exists())
            if not subs:
                raise BadInput(f"{p}: neither a recording nor a directory of recordings")
            out.extend(load(d) for d in subs)
    return out
