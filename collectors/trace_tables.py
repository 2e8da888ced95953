"""The tables of ``cmaprof import``, built from trace events parsed out of text
(:func:`cmaprof.kernel.trace_text.parse_files`): the ``page_alloc`` cube and
``page_alloc_fail`` (:func:`build_page_alloc`), and ``cma_alloc`` paired per task,
``cma_release`` and ``migrate`` (:func:`build_cma_migrate`). Zones come from pfn spans,
CMA placement from the ``--cma-ranges`` given (:func:`parse_cma_ranges`); see
:mod:`cmaprof.collectors.text_import` for what the text can and cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cmaprof.errors import BadInput
from cmaprof.kernel import formats, procfs
from cmaprof.kernel.trace_fields import NULL_POINTERS, ValueEncoder, page_alloc_values
from cmaprof.kernel.trace_text import ParsedText, key_values
from cmaprof.probes import abi
from cmaprof.recording import schema

#: zone_idx / node of a page whose zone the text cannot tell.
ZONE_UNKNOWN = 255


NODE_UNKNOWN = 0xFFFF


#: cma_area_idx of a page whose CMA placement is unknown (no CMA ranges given).
CMA_AREA_UNKNOWN = schema.CMA_AREA_UNKNOWN


_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class CmaRange:
    """A CMA area: ``count`` pages from ``base_pfn`` (debugfs ``base_pfn``/``count``)."""

    name: str
    base_pfn: int
    count: int


def parse_cma_ranges(specs: list[str]) -> list[CmaRange]:
    """``NAME:BASE_PFN:COUNT`` (numbers in C notation) or a saved debugfs ``cma``
    directory (``<area>/base_pfn``, ``<area>/count``; or one area's directory)."""
    out: list[CmaRange] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            dirs = (
                [p] if (p / "base_pfn").exists() else sorted(d for d in p.iterdir() if d.is_dir())
            )
            for d in dirs:
                try:
                    base = int((d / "base_pfn").read_text().split()[0], 0)
                    count = int((d / "count").read_text().split()[0], 0)
                except (OSError, ValueError, IndexError):
                    raise BadInput(f"{d}: no readable base_pfn and count (debugfs cma copy)")
                name = d.name if d != p or p.name not in ("", ".") else "cma"
                out.append(CmaRange(name, base, count))
            continue
        parts = spec.split(":")
        try:
            name, base, count = parts[0], int(parts[1], 0), int(parts[2], 0)
            if len(parts) != 3 or not name or base < 0 or count <= 0:
                raise ValueError
        except (ValueError, IndexError):
            raise BadInput(
                f"--cma-ranges {spec!r}: want NAME:BASE_PFN:COUNT or a debugfs cma directory"
            ) from None
        out.append(CmaRange(name, base, count))
    if len({r.name for r in out}) != len(out):
        raise BadInput("--cma-ranges names an area twice")
    return out


class BadLines:
    """Malformed event lines: count and the first one."""

    def __init__(self, parsed: ParsedText) -> None:
        self.count = 0
        self.first: str | None = None
        self.at: tuple[int, int] | None = None
        #: cma_alloc_finish events whose start precedes the capture (not a call row)
        self.finish_without_start = 0
        self.inputs = parsed.inputs

    def add(self, n: int, file: int, line: int, text: str, why: str) -> None:
        if n <= 0:
            return
        self.count += n
        if self.at is None or (file, line) < self.at:
            self.first = f"{self.inputs[file]}:{line}: {why}: {text[:120]}"
            self.at = (file, line)


def _zone_of(pfns: np.ndarray, zones: list[procfs.Zone]) -> tuple[np.ndarray, np.ndarray]:
    """Zone index and node of each pfn from zone spans; unknown where no span or
    several spans hold it (overlapping spans: ZONE_MOVABLE beside Normal, multi-node)."""
    spans = [z for z in zones if z.start_pfn is not None and z.spanned]
    hits = np.zeros(len(pfns), dtype=np.int32)
    zone = np.full(len(pfns), ZONE_UNKNOWN, dtype=np.uint8)
    node = np.full(len(pfns), NODE_UNKNOWN, dtype=np.uint16)
    for z in spans:
        start = int(z.start_pfn or 0)
        inside = (pfns >= start) & (pfns < start + z.spanned)
        hits += inside
        zone[inside] = z.idx
        node[inside] = z.node
    amb = hits != 1
    zone[amb] = ZONE_UNKNOWN
    node[amb] = NODE_UNKNOWN
    return zone, node


def _cma_of(pfns: np.ndarray, ranges: list[CmaRange] | None) -> np.ndarray:
    if ranges is None:
        return np.full(len(pfns), CMA_AREA_UNKNOWN, dtype=np.uint8)
    out = np.full(len(pfns), schema.CMA_AREA_NONE, dtype=np.uint8)
    for i, r in enumerate(ranges):
        out[(pfns >= r.base_pfn) & (pfns < r.base_pfn + r.count)] = i
    return out


def select_event(ev: pa.Table, name: str) -> pa.Table:
    return ev.filter(pc.equal(ev["event"], name))


def build_page_alloc(
    ev: pa.Table,
    fmt: formats.EventFormat,
    zones: list[procfs.Zone] | None,
    ranges: list[CmaRange] | None,
    bad: BadLines,
) -> tuple[pa.Table, pa.Table]:
    """The ``page_alloc`` cube and ``page_alloc_fail`` table of the mm_page_alloc events."""
    alloc = select_event(ev, "mm_page_alloc")
    f = alloc["fields"].combine_chunks()
    v = page_alloc_values(f, fmt)
    ok = v["ok"] & (v["order"] < 64) & (v["migratetype"] < 256)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        g = v["gfp_text"][i]
        why = (
            f"gfp_flags {g!r} not in {fmt.source}'s table"
            if g is not None
            else "mm_page_alloc without readable pfn/order/migratetype/gfp_flags"
        )
        bad.add(
            int((~ok).sum()), alloc["file"][i].as_py(), alloc["line"][i].as_py(), f[i].as_py(), why
        )
    pfn = v["pfn"]
    # a failed allocation: pfn -1 (raw) or 6.1+'s rendering pfn=0x0 with a NULL page
    failed = ((pfn == np.uint64(_U64)) | ((pfn == 0) & v["page_null"]))[ok]
    df = pd.DataFrame(
        {
            "gfp_flags": v["gfp"][ok],
            "order": v["order"][ok].astype(np.uint8),
            "migratetype_id": v["migratetype"][ok].astype(np.uint8),
            "pfn": pfn[ok],
        }
    )
    df["pages"] = np.left_shift(np.uint64(1), df["order"].to_numpy(np.uint64))
    df["allocs"] = np.uint64(1)
    good = df[~failed]
    pfns = good["pfn"].to_numpy(dtype=np.uint64)
    good = good.assign(cma_area_idx=_cma_of(pfns, ranges))
    if zones is not None:
        zone, node = _zone_of(pfns, zones)
        good = good.assign(zone_idx=zone, node=node)
    else:
        good = good.assign(zone_idx=np.uint8(ZONE_UNKNOWN), node=np.uint16(NODE_UNKNOWN))
    keys = [k for k, _ in schema.PAGE_ALLOC_KEYS]
    cube = good.groupby(keys, sort=True)[["allocs", "pages"]].sum().reset_index()
    fail_keys = ["gfp_flags", "order", "migratetype_id"]
    fail = df[failed].groupby(fail_keys, sort=True)[["allocs", "pages"]].sum().reset_index()
    return (
        pa.Table.from_pandas(cube, schema=schema.SCHEMAS["page_alloc"], preserve_index=False),
        pa.Table.from_pandas(fail, schema=schema.SCHEMAS["page_alloc_fail"], preserve_index=False),
    )


def _rare_events(ev: pa.Table, names: tuple[str, ...]) -> list[dict[str, Any]]:
    sel = ev.filter(pc.is_in(ev["event"], pa.array(names)))
    return sel.select(["file", "line", "comm", "pid", "ts", "event", "fields"]).to_pylist()


class _CmaMigrate:
    """The cma and migrate events of one capture, in order: calls paired per task
    (``open_`` by pid), releases per area, migrations per (reason, mode)."""

    def __init__(
        self,
        fmts: dict[tuple[str, str], formats.EventFormat],
        ranges: list[CmaRange] | None,
        t0: float,
        bad: BadLines,
    ) -> None:
        self.names = [r.name for r in ranges] if ranges else []
        mig_fmt = fmts.get(("migrate", "mm_migrate_pages"))
        self.reason_enc = ValueEncoder(mig_fmt, "reason", mig_fmt.source) if mig_fmt else None
        self.mode_enc = ValueEncoder(mig_fmt, "mode", mig_fmt.source) if mig_fmt else None
        self.t0 = t0
        self.bad = bad
        self.calls: list[dict[str, Any]] = []
        self.open_: dict[int, dict[str, Any]] = {}
        self.release: dict[int, list[int]] = {}
        self.migrate: dict[tuple[int, int], list[int]] = {}

    def area_idx(self, name: str) -> int:
        return self.names.index(name) if name in self.names else schema.CMA_AREA_NONE

    def ns(self, ts: float) -> int:
        return round((ts - self.t0) * 1e9)

    def event(self, r: dict[str, Any]) -> None:
        kv = key_values(r["fields"])
        e = r["event"]
        try:
            if e == "cma_alloc_start":
                self.start(r, kv)
            elif e == "cma_alloc_busy_retry":
                call = self.open_.get(r["pid"])
                if call is not None:
                    call["busy_retries"] += 1
                    if call["first_busy_pfn"] is None:
                        call["first_busy_pfn"] = int(kv["pfn"], 0) & _U64
            elif e == "cma_alloc_finish":
                self.finish(r, kv)
            elif e == "cma_release":
                acc = self.release.setdefault(self.area_idx(kv.get("name", "")), [0, 0])
                acc[0] += 1
                acc[1] += int(kv["count"], 0)
            elif e == "mm_migrate_pages":
                self.migrate_pages(r, kv)
        except (KeyError, ValueError) as exc:
            self.bad.add(1, r["file"], r["line"], r["fields"], f"{e}: bad or missing {exc}")

    def start(self, r: dict[str, Any], kv: dict[str, str]) -> None:
        if r["pid"] in self.open_:
            self.calls.append(self.open_.pop(r["pid"]))  # previous call ended without finish
        self.open_[r["pid"]] = {
            "start_ns": self.ns(r["ts"]),
            "latency_ns": 0,
            "area_idx": self.area_idx(kv.get("name", "")),
            "area": kv.get("name", ""),
            # `request_count` since ~6.18 (with available/total counts), `count` before
            "pages_requested": int(kv.get("request_count", kv.get("count", "")), 0),
            "align": int(kv.get("align", "0"), 0),
            "success": False,
            "outcome_source": abi.CMA_OUTCOME_NO_FINISH,
            "errno": None,
            "busy_retries": 0,
            "migrate_succeeded": 0,
            "migrate_failed": 0,
            "isolate_tests": 0,
            "isolate_failures": 0,
            "first_busy_pfn": None,
            "pfn": None,
            "pid": r["pid"],
            "tgid": r["pid"],
            "comm": r["comm"],
        }

    def finish(self, r: dict[str, Any], kv: dict[str, str]) -> None:
        call = self.open_.pop(r["pid"], None)
        if call is None:
            self.bad.finish_without_start += 1  # the capture began inside this call
            return
        page = kv.get("page")
        if "errorno" in kv:
            err = int(kv["errorno"], 0)
            call["success"], call["outcome_source"] = err == 0, abi.CMA_OUTCOME_ERRORNO
            call["errno"] = err or None
        elif page is not None:
            call["success"], call["outcome_source"] = (
                page not in NULL_POINTERS,
                abi.CMA_OUTCOME_PAGE,
            )
        else:
            raise KeyError("page")
        call["pfn"] = int(kv["pfn"], 0) & _U64
        call["latency_ns"] = self.ns(r["ts"]) - call["start_ns"]
        self.calls.append(call)

    def migrate_pages(self, r: dict[str, Any], kv: dict[str, str]) -> None:
        if self.reason_enc is None or self.mode_enc is None:
            raise KeyError("migrate/mm_migrate_pages format file")
        reason, mode = self.reason_enc(kv["reason"]), self.mode_enc(kv["mode"])
        if reason is None or mode is None:
            raise KeyError(f"mode/reason {kv['mode']}/{kv['reason']}")
        vals = [int(kv[k], 0) for k in ("nr_succeeded", "nr_failed")]
        thp = [
            int(kv.get(k, "0"), 0) for k in ("nr_thp_succeeded", "nr_thp_failed", "nr_thp_split")
        ]
        acc = self.migrate.setdefault((reason, mode), [0] * 8)
        for i, v in enumerate([1, *vals, *thp]):
            acc[i] += v
        call = self.open_.get(r["pid"])
        if call is not None:
            call["migrate_succeeded"] += vals[0]
            call["migrate_failed"] += vals[1]

    def tables(self) -> dict[str, pa.Table]:
        calls = self.calls + list(self.open_.values())  # started, never finished: failed
        calls.sort(key=lambda c: c["start_ns"])
        cma_t = schema.to_table(
            "cma_alloc", {k: [c[k] for c in calls] for k in schema.CMA_ALLOC.names}
        )
        release = self.release
        rel_t = schema.to_table(
            "cma_release",
            {
                "area_idx": list(release),
                "calls": [v[0] for v in release.values()],
                "pages": [v[1] for v in release.values()],
            },
        )
        migrate = self.migrate
        mig_cols: dict[str, list] = {
            "reason_id": [k[0] for k in migrate],
            "mode_id": [k[1] for k in migrate],
        }
        for i, c in enumerate(schema.MIGRATE_COUNTS):
            mig_cols[c] = [v[i] for v in migrate.values()]
        return {
            "cma_alloc": cma_t,
            "cma_release": rel_t,
            "migrate": schema.to_table("migrate", mig_cols),
        }


def build_cma_migrate(
    ev: pa.Table,
    fmts: dict[tuple[str, str], formats.EventFormat],
    ranges: list[CmaRange] | None,
    t0: float,
    bad: BadLines,
) -> dict[str, pa.Table]:
    """``cma_alloc`` (paired per task), ``cma_release`` and ``migrate`` tables."""
    names = ("cma_alloc_start", "cma_alloc_finish", "cma_alloc_busy_retry")
    acc = _CmaMigrate(fmts, ranges, t0, bad)
    for r in _rare_events(ev, (*names, "cma_release", "mm_migrate_pages")):
        acc.event(r)
    return acc.tables()
