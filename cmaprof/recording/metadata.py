"""The shape of ``metadata.json``: typed sections, one :data:`FORMAT_VERSION`.

Every key a collector or importer writes is a field of :class:`Metadata` or of one of
its sections; keys this version does not know (written by a newer cmaprof, or added by
hand) are kept in each section's ``extra`` and written back unchanged, so
``Metadata.from_json(d).to_json() == d`` for every metadata file the reader accepts.
A field is written only when it was present in the file read or was assigned (so a
recording killed early keeps its short metadata, and ``"label": null`` stays null).

Analysis reads attributes (``rec.meta.page_size``, ``rec.meta.blockers.counts``). The
mapping methods (``meta["zones"]``, ``"stream" in meta``) give the JSON form of a field
for scripts and tests written against the plain dict of earlier versions.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

#: The recording format this cmaprof writes; the reader loads every version in
#: :data:`READABLE_VERSIONS` (see :mod:`cmaprof.recording.reader`).
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
METADATA = "metadata.json"
TOOL = "cmaprof"

S = TypeVar("S", bound="Section")


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


@dataclass(eq=False)
class Section:
    """A JSON object with typed known keys and the unknown ones in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    _FIELDS: ClassVar[dict[str, dataclasses.Field]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._FIELDS = {}  # filled on first use (the dataclass decorator runs after this)

    @classmethod
    def _known(cls) -> dict[str, dataclasses.Field]:
        if not cls._FIELDS:
            cls._FIELDS = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        return cls._FIELDS

    def __post_init__(self) -> None:
        present = {n for n, f in self._known().items() if getattr(self, n) != _default(f)}
        object.__setattr__(self, "_present", present)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        present = self.__dict__.get("_present")
        if present is not None and name in self._known():
            present.add(name)

    def has(self, name: str) -> bool:
        """Whether ``name`` was in the file read or has been assigned."""
        return name in self.__dict__.get("_present", ()) or name in self.extra

    # -- JSON -------------------------------------------------------------------
    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Self:
        """The section of a JSON object; a value of the wrong shape for its field is
        kept as it is in ``extra`` (the reader's checks reject those that matter)."""
        out = cls()
        known = cls._known()
        for key, value in obj.items():
            f = known.get(key)
            ok, decoded = (False, None) if f is None else _decode(f, value)
            if ok:
                setattr(out, key, decoded)
            else:
                out.extra[key] = copy.deepcopy(value)
        return out

    def to_json(self) -> dict[str, Any]:
        out = {n: _encode(getattr(self, n)) for n in self._known() if self.has(n)}
        out.update(copy.deepcopy(self.extra))
        return out

    # -- the plain-dict view of earlier versions --------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key in self._known() and self.has(key):
            return _encode(getattr(self, key))
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.has(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __setitem__(self, key: str, value: Any) -> None:
        f = self._known().get(key)
        ok, decoded = (False, None) if f is None else _decode(f, value)
        if ok:
            setattr(self, key, decoded)
            self.extra.pop(key, None)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if not self.has(key):
            raise KeyError(key)
        self.extra.pop(key, None)
        f = self._known().get(key)
        if f is not None:
            object.__setattr__(self, key, _default(f))
            self.__dict__["_present"].discard(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key not in self and default:
            return default[0]
        value = self[key]
        del self[key]
        return value

    def update(self, other: dict[str, Any]) -> None:
        for k, v in other.items():
            self[k] = v

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Section):
            return self.to_json() == other.to_json()
        return self.to_json() == other if isinstance(other, dict) else NotImplemented


def _decode(f: dataclasses.Field, value: Any) -> tuple[bool, Any]:
    """(True, typed value) when ``value`` has the shape of field ``f``."""
    codec = f.metadata.get("codec")
    if codec is None:
        return True, copy.deepcopy(value)
    if codec == "int_keys":
        if not isinstance(value, dict) or not all(
            isinstance(k, int) or (isinstance(k, str) and k.isascii() and k.isdigit())
            for k in value
        ):
            return False, None
        return True, {int(k): v for k, v in value.items()}
    kind, cls = codec
    if value is None:
        return kind == "section", None
    if kind == "section":
        if isinstance(value, cls):
            return True, value
        return (True, cls.from_json(value)) if isinstance(value, dict) else (False, None)
    items = value.values() if kind == "dict" and isinstance(value, dict) else value
    if kind == "dict" and not isinstance(value, dict):
        return False, None
    if kind == "list" and not isinstance(value, list):
        return False, None
    if not all(isinstance(v, (dict, cls)) for v in items):
        return False, None

    def one(v: Any) -> Any:
        return v if isinstance(v, cls) else cls.from_json(v)

    if kind == "dict":
        return True, {k: one(v) for k, v in value.items()}
    return True, [one(v) for v in value]


def _encode(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_json()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int) else k: _encode(v) for k, v in value.items()}
    return copy.deepcopy(value)


# ---- sections ------------------------------------------------------------------------
@dataclass(eq=False)
class Headers(Section):
    """Which kernel headers BCC compiled against (``cmaprof doctor``'s judgement)."""

    build_dir: str | None = None
    kheaders: bool | None = None
    matches_running_kernel: bool | None = None
    doctor: str | None = None


@dataclass(eq=False)
class ZoneInfo(Section):
    """One zone of /proc/zoneinfo (:class:`cmaprof.kernel.procfs.Zone`); pages, pfns."""

    node: int | None = None
    idx: int | None = None
    name: str | None = None
    start_pfn: int | None = None
    spanned: int | None = None
    present: int | None = None
    managed: int | None = None
    cma: int | None = None


@dataclass(eq=False)
class CmaAreaInfo(Section):
    """A CMA area with a known range, ``[base_pfn, base_pfn + count)`` in pages; its
    position in ``cma_areas`` is its ``cma_area_idx``."""

    name: str | None = None
    base_pfn: int | None = None
    count: int | None = None
    source: str | None = None


@dataclass(eq=False)
class ProbeInfo(Section):
    """A probe compiled into the recording: its ``-D`` options and tracepoints."""

    options: dict[str, Any] = field(default_factory=dict)
    tracepoints: list[str] = field(default_factory=list)


@dataclass(eq=False)
class CountingWindow(Section):
    """When counting was on (CLOCK_MONOTONIC ns, and CLOCK_REALTIME for humans)."""

    clock: str | None = None
    on_before_ns: int | None = None
    on_ns: int | None = None
    on_realtime_ns: int | None = None
    intervals_ns: list[list[int]] = field(default_factory=list)
    intervals_realtime_ns: list[list[int]] = field(default_factory=list)
    off_ns: int | None = None
    off_after_ns: int | None = None
    off_realtime_ns: int | None = None

    def seconds(self) -> tuple[float, float] | None:
        """(on, off) in CLOCK_MONOTONIC seconds, as ``perf -k mono`` prints them; None
        when counting was never switched off."""
        if self.on_ns is None or self.off_ns is None:
            return None
        return self.on_ns / 1e9, self.off_ns / 1e9


@dataclass(eq=False)
class PageAllocByInfo(Section):
    """``record --by``: the page_alloc cube by process and/or kernel stack
    (``page_alloc_by``; collectors/page_alloc_by.py)."""

    #: the keys asked for (comm, tgid, stack)
    by_keys: list[str] = field(default_factory=list)
    #: size of the BPF hash (PA_BY_ENTRIES) and rows in page_alloc_by
    max_entries: int | None = None
    entries_used: int | None = None
    #: events (and their base pages) in page_alloc but not in page_alloc_by: hash full
    overflow_allocs: int | None = None
    overflow_pages: int | None = None
    #: tgid of the cmaprof record process, and of the command it ran (None: none)
    self_tgid: int | None = None
    workload_tgid: int | None = None
    #: --by stack: the stack map, its size, frames per stack, distinct stacks stored
    stack_map: str | None = None
    stack_entries: int | None = None
    stack_depth: int | None = None
    stacks_stored: int | None = None


@dataclass(eq=False)
class PageAllocInfo(Section):
    """Start-up calibration of the page_alloc probe, or the zone source of an import."""

    calibration_method: str | None = None
    calibration_pairs: int | None = None
    calibration_agreeing_pairs: int | None = None
    calibration_rounds: int | None = None
    calibration_skipped_touches: int | None = None
    page_struct_size: int | None = None
    header_layout: dict[str, int] = field(default_factory=dict)
    zone_source: str | None = None
    zone_checks: int | None = None
    zone_mismatches: int | None = None
    zone_source_reason: str | None = None
    page_struct_size_check: str | None = None
    by: PageAllocByInfo | None = field(
        default=None, metadata={"codec": ("section", PageAllocByInfo)}
    )


@dataclass(eq=False)
class BlockersInfo(Section):
    """The blockers probe's own counters, memory cost and header layout."""

    stats: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    origin_entries: int | None = None
    origin_entry_bytes: int | None = None
    origin_bytes: int | None = None
    origin_areas: list[str] = field(default_factory=list)
    migrate_stage: bool | None = None
    test_isolated_stage: bool | None = None
    layout: dict[str, int] | None = None
    layout_verified: bool | None = None
    max_list: int | None = None
    #: record --by: what the origin entries are keyed by besides gfp/order/comm
    by: list[str] = field(default_factory=list)
    stack_map: str | None = None
    stack_entries: int | None = None
    stack_depth: int | None = None
    stack_map_value_bytes: int | None = None
    stacks_stored: int | None = None


@dataclass(eq=False)
class CmaPhasesInfo(Section):
    """The cma probe's phase functions (analysis.phases): per phase the symbols attached,
    and why each other phase is not seen."""

    attached: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class StreamInfo(Section):
    """Accounting of ``record --events``: BPF counters and rows written, per CPU."""

    events: str | None = None
    spec: str | None = None
    filter: dict[str, int] = field(default_factory=dict)
    per_cpu: list[dict[str, int]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    rows_in_parquet: int | None = None
    batch_seq_gaps: int | None = None
    balanced: bool | None = None


@dataclass(eq=False)
class ImportedInfo(Section):
    """Where an imported recording came from (``cmaprof import``)."""

    source: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    formats: str | None = None
    lines: int | None = None
    events: dict[str, int] = field(default_factory=dict)
    events_not_used: dict[str, int] = field(default_factory=dict)
    cma_finish_without_start: int | None = None
    malformed_lines: int | None = None
    first_malformed: Any = None
    lost_events: int | None = None
    lost_notes: Any = None
    first_ts_s: float | None = None
    last_ts_s: float | None = None
    time_span_ns: int | None = None
    vmstat_window: bool | None = None
    window_s: list[float] | None = None
    zone_source: str | None = None
    cma_placement: str | None = None
    seconds: float | None = None


@dataclass(eq=False)
class Metadata(Section):
    """The whole of ``metadata.json``.

    Written at start with ``complete`` false, replaced when the recording is finished.
    Counts are events or pages as named; times ``*_ns`` are nanoseconds.
    """

    tool: str | None = None
    format_version: int | None = None
    cmaprof_version: str | None = None
    label: str | None = None
    complete: bool | None = None
    # the system
    kernel_release: str | None = None
    kernel_version: str | None = None
    machine: str | None = None
    hostname: str | None = None
    cmdline: str | None = None
    page_size: int | None = None
    cpus: int | None = None
    nodes: list[int] = field(default_factory=list)
    headers: Headers | None = field(default=None, metadata={"codec": ("section", Headers)})
    environment_warnings: dict[str, str] = field(default_factory=dict)
    zones: list[ZoneInfo] = field(default_factory=list, metadata={"codec": ("list", ZoneInfo)})
    zone_names: dict[int, str] = field(default_factory=dict, metadata={"codec": "int_keys"})
    cma_areas: list[CmaAreaInfo] = field(
        default_factory=list, metadata={"codec": ("list", CmaAreaInfo)}
    )
    cma_areas_without_range: list[str] = field(default_factory=list)
    # what ran
    argv: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    command_exit_status: int | None = None
    mounted_by_cmaprof: Any = None
    tracefs: str | None = None
    probes: dict[str, ProbeInfo] = field(
        default_factory=dict, metadata={"codec": ("dict", ProbeInfo)}
    )
    probes_requested: list[str] = field(default_factory=list)
    skip_unavailable: bool | None = None
    probes_unavailable: dict[str, str] = field(default_factory=dict)
    defines: dict[str, Any] = field(default_factory=dict)
    cma_call_symbol: str | None = None
    # when
    start_time: str | None = None
    end_time: str | None = None
    counting_started: bool | None = None
    counting_window: CountingWindow | None = field(
        default=None, metadata={"codec": ("section", CountingWindow)}
    )
    duration_ns: int | None = None
    stop_reason: str | None = None
    # per probe
    page_alloc: PageAllocInfo | None = field(
        default=None, metadata={"codec": ("section", PageAllocInfo)}
    )
    bulk: dict[str, Any] | None = None
    blockers: BlockersInfo | None = field(
        default=None, metadata={"codec": ("section", BlockersInfo)}
    )
    stream: StreamInfo | None = field(default=None, metadata={"codec": ("section", StreamInfo)})
    cma_phases: CmaPhasesInfo | None = field(
        default=None, metadata={"codec": ("section", CmaPhasesInfo)}
    )
    imported: ImportedInfo | None = field(
        default=None, metadata={"codec": ("section", ImportedInfo)}
    )
    # losses and cost
    dropped: dict[str, Any] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    bpf_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    #: when bpf_stats was on: ``mode`` (sampled/always/off), ``window_s``, ``windows``...
    bpf_stats_sampling: dict[str, Any] = field(default_factory=dict)
    #: seconds of start-up by step (imports, checks, compile and load, attach...)
    startup_s: dict[str, float] = field(default_factory=dict)

    @property
    def dropped_counts(self) -> dict[str, int]:
        """Events not counted, by cause (``dropped``; recordings made before 0.1.0 kept
        them under ``dropped.page_alloc``)."""
        d = self.dropped or {}
        if isinstance(d.get("page_alloc"), dict):
            d = d["page_alloc"]
        return {k: int(v) for k, v in d.items()}

    @property
    def cma_area_names(self) -> list[str]:
        return [str(a.name) for a in self.cma_areas]

    @property
    def cma_placement_unknown(self) -> bool:
        """True for an imported trace without CMA ranges (cma_area_idx 254 rows)."""
        return self.imported is not None and self.imported.cma_placement == "unknown"

    def for_writing(self) -> dict[str, Any]:
        """The JSON object to write: this metadata, stamped with tool and version."""
        self.tool = TOOL
        self.format_version = FORMAT_VERSION
        return self.to_json()

    @classmethod
    def coerce(cls, meta: Metadata | dict[str, Any]) -> Metadata:
        return meta if isinstance(meta, Metadata) else cls.from_json(meta)
