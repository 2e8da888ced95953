"""The interface every probe's collector implements, and what it is given.

``cmaprof record`` drives a list of collectors (one per probe, built by
:mod:`cmaprof.collectors.registry`) through the same steps:

1. :meth:`Collector.configure` -- after the BPF module is loaded: calibrate, write
   configuration maps (nothing is counted yet);
2. :meth:`Collector.attach` -- attach the programs BCC does not attach itself;
3. :meth:`Collector.start` -- counting is on: open ring buffers (``t0_ns``, the start
   of counting in CLOCK_MONOTONIC, makes times relative);
4. :meth:`Collector.poll` -- often (every 50 ms at most): drain ring buffers;
5. :meth:`Collector.interval_tables` -- each series interval: rows for ``series/``;
6. :meth:`Collector.drain` -- once counting is off: the last events;
7. :meth:`Collector.final_tables` and :meth:`Collector.metadata` -- the tables and the
   metadata section written when the recording is finished;
8. :meth:`Collector.detach` -- always, also after a failed start-up.

Every step has a default that does nothing, so a collector says only what it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

import pyarrow as pa

from cmaprof.kernel.procfs import CmaArea, Zone
from cmaprof.recording.metadata import Metadata


@dataclass
class CollectorContext:
    """What a collector may need at construction.

    :param bpf: the loaded ``bcc.BPF`` module holding every chosen probe.
    :param names: the probes compiled into it.
    :param zones: the running kernel's /proc/zoneinfo.
    :param cma_areas: CMA areas; those with a range, in order, are ``cma_area_idx`` 0..n-1.
    :param defines: the ``-D`` values the module was compiled with.
    :param writer: the recording's writer (for collectors that write files as they go).
    :param options: per-probe requests (``stream``: the parsed and resolved ``--events``).
    """

    bpf: Any
    names: list[str]
    zones: list[Zone]
    cma_areas: list[CmaArea]
    defines: dict[str, Any] = field(default_factory=dict)
    call_symbol: str | None = None
    writer: Any = None
    err: IO[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)


class Collector:
    """One probe's user-space half. See the module docstring for the order of calls."""

    name = ""

    @classmethod
    def create(cls, ctx: CollectorContext) -> Collector | None:
        """The collector for this recording, or None when it has nothing to do here."""
        raise NotImplementedError(cls.__name__)

    def configure(self) -> None:
        """Write configuration maps (before attach; counting is off)."""

    def attach(self) -> None:
        """Attach programs that BCC does not attach at load."""

    def start(self, t0_ns: int) -> None:
        """Counting is on since ``t0_ns`` (CLOCK_MONOTONIC): open ring buffers."""

    def poll(self) -> None:
        """Drain ring buffers (called often)."""

    def interval_tables(self, t_range: tuple[int, int]) -> dict[str, pa.Table]:
        """Rows for ``series/<name>`` of the interval ``t_range`` (ns since ``t0_ns``)."""
        return {}

    def drain(self) -> None:
        """Counting is off: take the last events."""
        self.poll()

    def final_tables(self) -> dict[str, pa.Table]:
        """The ``tables/<name>`` this probe writes when the recording is finished."""
        return {}

    def metadata(self, meta: Metadata, final: bool) -> None:
        """Fill this probe's part of the metadata (``final``: the recording is done)."""

    def detach(self) -> None:
        """Detach what :meth:`attach` attached; safe to call more than once."""
