"""Type checks of ``metadata.json`` (format version 1) before it becomes the typed
:class:`~cmaprof.recording.metadata.Metadata`: every field the analysis reads must have
the type a collector writes, and each failure is one :class:`~cmaprof.errors.BadInput`
naming the file and the field. Absent fields (a recording killed early) are fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmaprof.errors import BadInput

#: Largest counter value accepted in metadata (an int64, as the tables store them).
_MAX_COUNT = 2**63 - 1


class FieldChecks:
    """Type checks of metadata.json fields; each failure names the file and the field."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.mpath = path / "metadata.json"
        self.meta = meta

    def bad(self, field: str, what: str) -> BadInput:
        value = self.meta.get(field.split(".")[0].split("[")[0])
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return BadInput(f"{self.mpath}: field {field!r} {what} (top-level value {shown})")

    @staticmethod
    def is_int(v: Any, lo: int = 0, hi: int = _MAX_COUNT) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

    def opt(self, key: str) -> tuple[bool, Any]:
        return key in self.meta, self.meta.get(key)

    def string(self, key: str, required: bool = False, nullable: bool = False) -> None:
        present, v = self.opt(key)
        if not present:
            if required:
                raise BadInput(f"{self.mpath}: field {key!r} missing")
            return
        if v is None and nullable:
            return
        if not isinstance(v, str):
            raise self.bad(key, "must be a string")

    def integer(self, key: str, lo: int = 0, hi: int = _MAX_COUNT) -> None:
        present, v = self.opt(key)
        if present and v is not None and not self.is_int(v, lo, hi):
            raise self.bad(key, f"must be an integer in [{lo}, {hi}] or absent")

    def boolean(self, key: str) -> None:
        present, v = self.opt(key)
        if present and not isinstance(v, bool):
            raise self.bad(key, "must be true or false")

    def dict_of(self, key: str, check: Any, what: str, value: Any = None) -> None:
        v = self.meta.get(key) if value is None else value
        if v is None:
            return
        if not isinstance(v, dict):
            raise self.bad(key, f"must be an object of {what}")
        for k, item in v.items():
            if not check(item):
                raise self.bad(f"{key}.{k}", f"has the wrong type (want {what})")


def _validate_window(v: FieldChecks, win: Any) -> None:
    """``counting_window`` (recordings since issue 13; absent in older ones)."""
    if win is None:
        return
    if not isinstance(win, dict) or win.get("clock") != "CLOCK_MONOTONIC":
        raise v.bad("counting_window", "must be an object with clock CLOCK_MONOTONIC")
    for key, val in win.items():
        if key.startswith("intervals"):
            if not (
                isinstance(val, list)
                and all(
                    isinstance(iv, list)
                    and len(iv) == 2
                    and all(FieldChecks.is_int(x, hi=2**63) for x in iv)
                    for iv in val
                )
            ):
                raise v.bad(f"counting_window.{key}", "must be a list of [start_ns, end_ns]")
        elif key.endswith("_ns") and not FieldChecks.is_int(val, hi=2**63):
            raise v.bad(f"counting_window.{key}", "must be nanoseconds (an integer)")


def validate_v1(path: Path, meta: dict[str, Any]) -> None:
    """Check the type of every metadata field the analysis reads (absent fields of a
    recording killed early are fine; present ones must have the written type)."""
    v = FieldChecks(path, meta)
    v.string("kernel_release", required=True)
    _validate_zone_names(v, meta)
    _validate_cma_areas(v, meta.get("cma_areas"))
    v.integer("page_size", lo=1, hi=2**40)
    v.integer("duration_ns")
    v.integer("cpus", lo=0, hi=2**31)
    cmd = meta.get("command")
    if cmd is not None and not (isinstance(cmd, list) and all(isinstance(c, str) for c in cmd)):
        raise v.bad("command", "must be a list of strings")
    v.boolean("complete")
    v.string("stop_reason")
    _validate_window(v, meta.get("counting_window"))
    v.string("label", nullable=True)
    _validate_counters(v, meta)
    _validate_page_alloc(v, meta.get("page_alloc"))
    _validate_imported(v, meta.get("imported"))
    _validate_stream(v, meta.get("stream"))
    _validate_headers(v, meta.get("headers"))


def _count(x: Any) -> bool:
    return FieldChecks.is_int(x)


def _validate_zone_names(v: FieldChecks, meta: dict[str, Any]) -> None:
    if "zone_names" not in meta:
        raise BadInput(f"{v.mpath}: field 'zone_names' missing")
    zn = meta["zone_names"]
    if not isinstance(zn, dict):
        raise v.bad("zone_names", "must be an object of zone index to zone name")
    for k, name in zn.items():
        if not (isinstance(k, str) and k.isascii() and k.isdigit() and int(k) < 256):
            raise v.bad(f"zone_names.{k}", "key must be a zone index (0-255)")
        if not isinstance(name, str):
            raise v.bad(f"zone_names.{k}", "must be a zone name (string)")
    if len(set(zn.values())) != len(zn):
        raise v.bad("zone_names", "names a zone twice")


def _validate_cma_areas(v: FieldChecks, areas: Any) -> None:
    if areas is None:
        return
    if not isinstance(areas, list):
        raise v.bad("cma_areas", "must be a list of CMA areas")
    for i, a in enumerate(areas):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise v.bad(f"cma_areas[{i}]", "must be an object with a string 'name'")
    if len({a["name"] for a in areas}) != len(areas):
        raise v.bad("cma_areas", "names a CMA area twice")


def _validate_counters(v: FieldChecks, meta: dict[str, Any]) -> None:
    """``dropped``, ``lost``, ``bpf_stats`` and ``probes_unavailable``."""
    dropped = meta.get("dropped")
    if isinstance(dropped, dict) and isinstance(dropped.get("page_alloc"), dict):
        v.dict_of("dropped", _count, "counter name to count", dropped["page_alloc"])
    else:
        v.dict_of("dropped", _count, "counter name to count")
    v.dict_of("lost", _count, "program name to count")
    v.dict_of(
        "bpf_stats",
        lambda st: isinstance(st, dict) and all(_count(x) for x in st.values()),
        "program name to an object of counts",
    )
    if "probes_unavailable" in meta and not isinstance(meta["probes_unavailable"], dict):
        raise v.bad("probes_unavailable", "must be an object of probe name to reason")
    v.dict_of("probes_unavailable", lambda x: isinstance(x, str), "probe name to reason")


def _validate_page_alloc(v: FieldChecks, pa_meta: Any) -> None:
    if pa_meta is None:
        return
    if not isinstance(pa_meta, dict):
        raise v.bad("page_alloc", "must be an object")
    for k in ("zone_source", "zone_source_reason"):
        if pa_meta.get(k) is not None and not isinstance(pa_meta[k], str):
            raise v.bad(f"page_alloc.{k}", "must be a string")


def _validate_imported(v: FieldChecks, imp: Any) -> None:
    if imp is None:
        return
    if not isinstance(imp, dict):
        raise v.bad("imported", "must be an object")
    for k in ("source", "cma_placement", "zone_source"):
        if k in imp and not isinstance(imp[k], str):
            raise v.bad(f"imported.{k}", "must be a string")
    if "vmstat_window" in imp and not isinstance(imp["vmstat_window"], bool):
        raise v.bad("imported.vmstat_window", "must be true or false")
    if "events" in imp:
        v.dict_of("imported.events", _count, "event name to count", imp["events"] or {})


def _validate_stream(v: FieldChecks, st: Any) -> None:
    if st is None:
        return
    if not isinstance(st, dict):
        raise v.bad("stream", "must be an object")
    per_cpu = st.get("per_cpu", [])
    if not isinstance(per_cpu, list) or not all(
        isinstance(r, dict) and all(_count(x) for x in r.values()) for r in per_cpu
    ):
        raise v.bad("stream.per_cpu", "must be a list of objects of counts")
    v.dict_of("stream", _count, "counter name to count", st.get("totals") or {})
    if "balanced" in st and not isinstance(st["balanced"], bool):
        raise v.bad("stream.balanced", "must be true or false")


def _validate_headers(v: FieldChecks, hdr: Any) -> None:
    if hdr is None:
        return
    if not isinstance(hdr, dict):
        raise v.bad("headers", "must be an object")
    if "matches_running_kernel" in hdr and not isinstance(hdr["matches_running_kernel"], bool):
        raise v.bad("headers.matches_running_kernel", "must be true or false")
    if hdr.get("build_dir") is not None and not isinstance(hdr["build_dir"], str):
        raise v.bad("headers.build_dir", "must be a string")
