"""``cmaprof record``: run the probes over a time window or a command, write a recording.

Order of events (the counting window brackets the two /proc snapshots, so kernel
counters and traced counts cover the same allocations up to a few microseconds):
compile -> calibrate -> attach -> enable counting -> snapshot proc/start -> run ->
snapshot proc/end -> disable counting -> read maps -> write tables -> detach.

SIGINT, SIGTERM and SIGHUP only set a flag: the recording is finished and marked
with the reason, and a running command gets the signal forwarded (Ctrl-C in a
terminal reaches it directly). Interval data is written as it comes, so a SIGKILL
leaves every finished interval readable in ``series/``.

A start-up that fails (compile, load, attach, calibration) detaches every program and
removes the directory before the error is shown: no half recording is left, and the
next ``record -o`` of the same path needs no ``--force``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from cmaprof.collectors import bpfmodule, tracefs
from cmaprof.collectors import procfs as live_procfs
from cmaprof.collectors.base import CollectorContext
from cmaprof.collectors.cma import cma_counter_files, cma_used_rows, read_cma_used
from cmaprof.collectors.page_alloc import PageAllocCollector, cube_to_table
from cmaprof.collectors.record_setup import (
    RecordOptions,
    Session,
    StopFlag,
    check_command,
    describe_memory,
    describe_run,
    now_iso,
    prepare,
    start_session,
)
from cmaprof.errors import EnvironmentProblem
from cmaprof.kernel import procfs
from cmaprof.recording import schema
from cmaprof.recording.metadata import (
    CountingWindow,
    Metadata,
)
from cmaprof.recording.writer import RecordingWriter

DEFAULT_SERIES_INTERVAL_S = 5.0


def _vmstat_rows(t_ns: int, vmstat: dict[str, int]) -> dict[str, list]:
    return {"t_ns": [t_ns] * len(vmstat), "counter": list(vmstat), "value": list(vmstat.values())}


def _live_line(
    t_s: float, dt_s: float, delta: dict, zone_names: dict[int, str], vm_delta: dict[str, int]
) -> str:
    per_zone: dict[str, int] = {}
    for key, (_, pages) in delta.items():
        name = zone_names.get(key[2], str(key[2]))
        per_zone[name] = per_zone.get(name, 0) + pages
    cells = []
    for name in sorted(
        set(per_zone) | {z for z in zone_names.values() if vm_delta.get(f"pgalloc_{z.lower()}")}
    ):
        traced = per_zone.get(name, 0)
        kernel = vm_delta.get(f"pgalloc_{name.lower()}", 0)
        cells.append(f"{name} {traced / dt_s:>9.0f}/s (vmstat {kernel / dt_s:.0f}/s)")
    return f"[{t_s:7.1f}s] pages " + ("; ".join(cells) or "none")


class _CountingWindow:
    """When counting was switched on and off, in the clock of ``bpf_ktime_get_ns()``
    (CLOCK_MONOTONIC, which ``perf record -k mono``, ``trace-cmd record -C mono`` and
    tracefs ``trace_clock`` mono print), and in CLOCK_REALTIME for humans.

    Counting surely covered ``[on_ns, off_ns]``; it began no earlier than
    ``on_before_ns`` and ended no later than ``off_after_ns`` (each switch is one BPF
    map update between two clock reads).
    """

    def __init__(self, page: PageAllocCollector) -> None:
        self.page = page
        self.on_before_ns = self.on_ns = self.off_ns = self.off_after_ns = 0
        self.realtime_offset_ns = 0
        self.intervals: list[list[int]] = []

    def _switch(self, on: bool) -> tuple[int, int]:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self.page.set_enabled(on)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        real = time.clock_gettime_ns(time.CLOCK_REALTIME)
        self.realtime_offset_ns = real - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        return before, after

    def switch_on(self) -> None:
        self.on_before_ns, self.on_ns = self._switch(True)

    def switch_off(self) -> None:
        self.off_ns, self.off_after_ns = self._switch(False)

    def interval(self, start_ns: int, end_ns: int) -> None:
        """One series interval, CLOCK_MONOTONIC ns."""
        self.intervals.append([start_ns, end_ns])

    def as_section(self) -> CountingWindow:
        return CountingWindow.from_json(self.as_metadata())

    def as_metadata(self) -> dict[str, Any]:
        real = self.realtime_offset_ns
        out: dict[str, Any] = {
            "clock": "CLOCK_MONOTONIC",
            "on_before_ns": self.on_before_ns,
            "on_ns": self.on_ns,
            "on_realtime_ns": self.on_ns + real,
            "intervals_ns": self.intervals,
            "intervals_realtime_ns": [[a + real, b + real] for a, b in self.intervals],
        }
        if self.off_ns:
            out.update(
                off_ns=self.off_ns,
                off_after_ns=self.off_after_ns,
                off_realtime_ns=self.off_ns + real,
            )
        return out


def record(opts: RecordOptions, err: IO[str] = sys.stderr) -> int:
    """Record; return the command's exit status (0 without a command).

    Stop signals are routed to a flag before anything is created, so a signal at any
    moment ends in a finished recording (or none at all), never a killed process.

    :raises EnvironmentProblem: not root, no tracefs, no kmem:mm_page_alloc, BCC problems.
    :raises BadInput: output exists without --force, command not found.
    """
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "cmaprof record needs root (BPF programs and tracefs): run it with sudo"
        )
    with StopFlag() as flag:
        return _record(opts, err, flag)


def _record(opts: RecordOptions, err: IO[str], flag: StopFlag) -> int:
    """Prepare (no file yet), create the recording, then start -> loop -> finish."""
    check_command(opts.command)
    tfs, mounted = tracefs.ensure_mounted()
    meta, names, stream_req, defines = prepare(opts, tfs)
    writer = RecordingWriter(opts.output, force=opts.force)
    for name, reason in meta.probes_unavailable.items():
        print(f"cmaprof: probe {name} off: {reason}", file=err)
    describe_run(meta, opts, names, defines, mounted, tfs)
    zones = procfs.parse_zoneinfo(
        live_procfs.read_text(Path("/"), "proc/zoneinfo") or "", "/proc/zoneinfo"
    )
    cma_areas = live_procfs.read_cma_areas()
    describe_memory(meta, zones, cma_areas)
    for ev, path in tracefs.format_files(tfs).items():
        writer.copy_file(path, f"formats/{ev}/format")
    writer.write_metadata(meta)
    if flag.stop:
        return _stopped_in_startup(writer, meta, None, flag)

    session: Session | None = None
    stats_fd: int | None = None
    run = _Run(opts, writer, meta, err, flag)
    try:
        try:
            ctx = CollectorContext(
                None, names, zones, cma_areas, defines, writer=writer, err=err,
                options={"stream": stream_req},
            )  # fmt: skip
            session, stats_fd = start_session(tfs, opts, ctx, meta, err, flag)
        except BaseException:
            # Nothing was counted and start detached everything: remove what start-up
            # wrote, so the next ``record -o`` of the same path works without --force.
            writer.discard()
            raise
        if flag.stop or session is None:
            return _stopped_in_startup(writer, meta, session, flag)
        run.begin(session, procfs.zone_names(zones))
        run.loop()
        run.end()
    finally:
        run.reap()
        if session is not None:
            session.close()
        if stats_fd is not None:
            os.close(stats_fd)
    if flag.stop and not opts.command:
        return 0
    return run.exit_status


def _stopped_in_startup(
    writer: RecordingWriter, meta: Metadata, session: Session | None, flag: StopFlag
) -> int:
    meta.stop_reason = f"signal {flag.name} during start-up"
    meta.counting_started = False
    _finish(writer, meta, session)
    return 128 + int(flag.signum or 0)


class _Run:
    """Counting on -> intervals until a stop -> counting off -> the recording finished."""

    def __init__(
        self,
        opts: RecordOptions,
        writer: RecordingWriter,
        meta: Metadata,
        err: IO[str],
        flag: StopFlag,
    ) -> None:
        self.opts, self.writer, self.meta, self.err, self.flag = opts, writer, meta, err, flag
        self.child: subprocess.Popen | None = None
        self.exit_status = 0
        self.stop_reason = ""

    def begin(self, session: Session, zone_names: dict[int, str]) -> None:
        """Switch counting on, snapshot proc/start, open the collectors, start the command."""
        self.session, self.zone_names = session, zone_names
        self.window = _CountingWindow(session.page)
        self.window.switch_on()
        self.t0 = self.window.on_ns
        session.stats.start()
        self.prev_vm = _snapshot(self.writer, "start")
        session.each("start", self.t0)
        _write_system_series(self.writer, 0, self.prev_vm)
        meta = self.meta
        meta.counting_started = True
        meta.start_time = now_iso()
        meta.counting_window = self.window.as_section()
        self.writer.write_metadata(meta)
        opts = self.opts
        if opts.command:
            self.child = subprocess.Popen(opts.command)
            self.flag.child = self.child
            self.session.page.workload_tgid = self.child.pid
            print(
                f"cmaprof: recording system-wide while {' '.join(opts.command)} runs "
                f"(pid {self.child.pid})",
                file=self.err,
            )
        else:
            print(
                "cmaprof: recording system-wide"
                + (f" for {opts.duration_s:g} s" if opts.duration_s else "; Ctrl-C stops"),
                file=self.err,
            )

    def _should_stop(self, now: int, end_at: int | None) -> bool:
        if self.flag.stop:
            self.stop_reason = f"signal {self.flag.name}"
        elif self.child is not None and self.child.poll() is not None:
            self.stop_reason = "command exited"
        elif end_at is not None and now >= end_at:
            self.stop_reason = "duration reached"
        return bool(self.stop_reason)

    def loop(self) -> None:
        """Poll the collectors; write one interval every ``interval_s``; stop on a
        signal, the command's exit or the duration."""
        opts = self.opts
        interval = int((opts.interval_s or DEFAULT_SERIES_INTERVAL_S) * 1e9)
        self.prev_t = self.t0
        next_tick = self.t0 + interval
        end_at = self.t0 + int(opts.duration_s * 1e9) if opts.duration_s else None
        while True:
            self.session.each("poll")
            self.session.stats.tick()
            if self._should_stop(time.monotonic_ns(), end_at):
                break
            now = time.monotonic_ns()
            if now >= next_tick:
                self._interval(now)
                next_tick += interval
            wake = min(x for x in (next_tick, end_at or next_tick) if x is not None)
            time.sleep(max(0.0, min(0.05, (wake - time.monotonic_ns()) / 1e9)))

    def _interval(self, now: int) -> None:
        t_range = (self.prev_t - self.t0, now - self.t0)
        tables = self.session.interval_tables(t_range)  # the cube first, then vmstat
        vm = procfs.parse_vmstat(live_procfs.read_text(Path("/"), "proc/vmstat") or "")
        _write_interval(self.writer, tables, t_range[1], vm)
        self.window.interval(self.prev_t, now)
        if self.opts.interval_s is not None:
            vm_delta = {k: v - self.prev_vm.get(k, 0) for k, v in vm.items()}
            line = _live_line(
                t_range[1] / 1e9,
                (now - self.prev_t) / 1e9,
                self.session.page.last_delta,
                self.zone_names,
                vm_delta,
            )
            print(line, file=self.err)
        self.prev_vm, self.prev_t = vm, now

    def end(self) -> None:
        """Switch counting off with the proc/end snapshot, drain, write the last interval,
        stop the command, finish the recording."""
        session, meta = self.session, self.meta
        vm_end = _snapshot(self.writer, "end", self.window.switch_off)
        t_end = self.window.off_ns
        self.window.interval(self.prev_t, t_end)
        meta.counting_window = self.window.as_section()
        session.each("drain")
        tables = session.interval_tables((self.prev_t - self.t0, t_end - self.t0))
        _write_interval(self.writer, tables, t_end - self.t0, vm_end)
        self._stop_command()
        meta.stop_reason = self.stop_reason
        meta.duration_ns = t_end - self.t0
        _finish(self.writer, meta, session)

    def _stop_command(self) -> None:
        child = self.child
        if child is None:
            return
        if child.poll() is None:
            print(f"cmaprof: stopping {self.opts.command[0]} (pid {child.pid})", file=self.err)
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        rc = child.wait()
        self.exit_status = rc if rc >= 0 else 128 - rc
        self.meta.command_exit_status = self.exit_status

    def reap(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()


def _write_system_series(writer: RecordingWriter, t_ns: int, vm: dict[str, int]) -> None:
    """The recorder's own series: /proc/vmstat and the CMA areas' use (debugfs)."""
    writer.append_series("vmstat", schema.to_table("vmstat", _vmstat_rows(t_ns, vm), series=True))
    used = read_cma_used()
    if used:
        writer.append_series(
            "cma_used", schema.to_table("cma_used", cma_used_rows(t_ns, used), series=True)
        )


def _write_interval(
    writer: RecordingWriter, tables: dict[str, Any], t_end_ns: int, vm: dict[str, int]
) -> None:
    """Append one interval ending at ``t_end_ns``: the collectors' series parts,
    vmstat and CMA use."""
    tables = dict(tables)
    writer.append_series("page_alloc", tables.pop("page_alloc"))
    _write_system_series(writer, t_end_ns, vm)
    for name, table in tables.items():
        writer.append_series(name, table)


def _snapshot(
    writer: RecordingWriter, which: str, after_vmstat: Callable[[], None] | None = None
) -> dict[str, int]:
    """Read /proc/vmstat, run ``after_vmstat`` (so the counting window closes right
    there), then save it with the other /proc files and the CMA counters."""
    vm_text = live_procfs.read_text(Path("/"), "proc/vmstat") or ""
    if after_vmstat is not None:
        after_vmstat()
    writer.write_text(f"proc/{which}/vmstat", vm_text)
    for rel, path in cma_counter_files().items():
        writer.copy_file(path, f"sys/{which}/{rel}")
    for name in live_procfs.SNAPSHOT_FILES[1:]:
        text = live_procfs.read_text(Path("/"), f"proc/{name}")
        if text is not None:
            writer.write_text(f"proc/{which}/{name}", text)
    return procfs.parse_vmstat(vm_text, f"/proc/vmstat ({which})")


def merge_tables(parts: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    """The collectors' final tables by name; a name two collectors write (``stacks``:
    the page_alloc and blockers stack maps, told apart by its ``map`` column) is one
    table of both's rows."""
    out: dict[str, pa.Table] = {}
    for part in parts:
        for name, table in part.items():
            out[name] = pa.concat_tables([out[name], table]) if name in out else table
    return out


def _finish(writer: RecordingWriter, meta: Metadata, session: Session | None) -> None:
    """Write the final tables and complete metadata."""
    if session is None:
        writer.write_table("page_alloc", cube_to_table({}))
        writer.write_table("page_alloc_fail", schema.to_table("page_alloc_fail", {}))
    else:
        parts = []
        for c in session.collectors:
            parts.append(c.final_tables())
            c.metadata(meta, True)
        for name, table in merge_tables(parts).items():
            writer.write_table(name, table)
        bpf = session.bpf
        session.stats.stop()
        meta.bpf_stats_sampling = session.stats.as_metadata()
        meta.dropped = bpfmodule.read_drops(bpf)
        meta.bpf_stats = bpfmodule.prog_stats(bpf)
        meta.lost = {name: st.get("recursion_misses", 0) for name, st in meta.bpf_stats.items()}
    meta.end_time = now_iso()
    meta.complete = True
    writer.write_metadata(meta)
