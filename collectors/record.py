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

import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from cmaprof import __version__, probes
from cmaprof.collectors import bpfmodule, features, registry, tracefs
from cmaprof.collectors import procfs as live_procfs
from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.collectors.cma import cma_counter_files, cma_used_rows, read_cma_used
from cmaprof.collectors.page_alloc import PageAllocCollector, cube_to_table
from cmaprof.errors import BadInput, CmaprofError, EnvironmentProblem
from cmaprof.kernel import procfs
from cmaprof.recording import schema
from cmaprof.recording.metadata import (
    CmaAreaInfo,
    CountingWindow,
    Headers,
    Metadata,
    ProbeInfo,
    ZoneInfo,
)
from cmaprof.recording.writer import RecordingWriter

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_SERIES_INTERVAL_S = 5.0


@dataclass
class RecordOptions:
    """What ``cmaprof record`` was asked to do.

    :param duration_s: stop after this many seconds (None: until the command ends or a signal).
    :param interval_s: series interval; when given, a live table is printed on stderr too.
    :param command: argument list run while recording (never through a shell).
    :param probes: probes to run (page_alloc is always one); None: all this kernel supports.
    :param skip_unavailable: a probe named in ``probes`` that this kernel cannot run is
        left out (its reason kept in the metadata and shown by ``report``) instead of
        being an error.
    """

    output: Path
    force: bool = False
    duration_s: float | None = None
    interval_s: float | None = None
    command: list[str] = field(default_factory=list)
    probes: list[str] | None = None
    probe_options: dict[str, int] = field(default_factory=dict)
    skip_unavailable: bool = False
    #: ``--events`` specs (collectors/stream.py syntax): per-event streams to record.
    events: list[str] = field(default_factory=list)
    #: ``--by`` keys (collectors/blockers.py BY_KEYS); only ``stack`` works today.
    by: list[str] = field(default_factory=list)


class _StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.child: subprocess.Popen | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for s in STOP_SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        child = self.child
        if child is not None and child.poll() is None and signum != signal.SIGINT:
            try:
                child.send_signal(signum)
            except OSError:
                pass

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    @property
    def stop(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def headers_info(release: str) -> dict[str, Any]:
    """Which kernel headers BCC compiles against, judged as ``cmaprof doctor`` does."""
    from cmaprof.collectors.doctor import check_headers

    chk = check_headers(Path("/"), release, os.environ)
    build = Path(f"/lib/modules/{release}/build")
    return {
        "build_dir": str(build.resolve()) if build.exists() else None,
        "kheaders": Path("/sys/kernel/kheaders.tar.xz").exists(),
        "matches_running_kernel": chk.status == "ok",
        "doctor": f"{chk.status}: {chk.detail}",
    }


def system_metadata() -> Metadata:
    uname = os.uname()
    nodes = sorted(int(p.name[4:]) for p in Path("/sys/devices/system/node").glob("node[0-9]*"))
    return Metadata(
        kernel_release=uname.release,
        kernel_version=uname.version,
        machine=uname.machine,
        hostname=platform.node(),
        cmdline=(live_procfs.read_text(Path("/"), "proc/cmdline") or "").strip(),
        page_size=os.sysconf("SC_PAGE_SIZE"),
        cpus=os.cpu_count(),
        nodes=nodes,
        headers=Headers.from_json(headers_info(uname.release)),
    )


def _check_command(command: list[str]) -> None:
    if command and shutil.which(command[0]) is None:
        raise BadInput(f"command not found: {command[0]!r} (give a program on PATH or a path)")


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


def _choose_probes(
    tfs: Path, meta: Metadata, wanted: list[str] | None, skip_unavailable: bool = False
) -> list[str]:
    """page_alloc always; the other probes asked for, or all that the kernel supports.

    :raises EnvironmentProblem: a probe asked for by name cannot run on this kernel
        (unless ``skip_unavailable``: then it is left out, its reason kept).
    """
    page = probes.get("page_alloc")
    tracefs.require_events(tfs, page.tracepoints, page.name)
    available = features.available_probes(tfs)
    skipped = {}
    for p in probes.PROBES.values():
        if p.name not in available and not p.opt_in:
            reason = (
                f"kernel lacks {' and '.join(p.tracepoints)}"
                if p.tracepoints
                else "kernel support missing"
            )
            if p.name == "bulk":
                reason = features.bulk_unavailable_reason(tfs) or reason
            if p.name == "blockers":
                reason = features.blockers_unavailable_reason(tfs) or reason
            skipped[p.name] = reason
    if wanted is not None:
        for name in wanted:
            probes.get(name)
            if name in skipped and not skip_unavailable:
                raise EnvironmentProblem(
                    f"probe {name} cannot run here: {skipped[name]}; leave it out of "
                    f"--probes, or add --skip-unavailable to record without it"
                )
        chosen = [
            n
            for n in available
            if n in wanted or n == "page_alloc" or (n == "cma" and "blockers" in wanted)
        ]
        skipped.update({n: "not asked for (--probes)" for n in available if n not in chosen})
    else:
        chosen = available
    meta.probes_unavailable = skipped
    return chosen


def _load_probes(
    tfs: Path,
    names: list[str],
    defines: dict[str, Any],
    opts: RecordOptions,
    meta: Metadata,
    err: IO[str],
) -> tuple[Any, list[str], dict[str, Any]]:
    """Compile and load ``names``; with ``--skip-unavailable``, a probe that does not
    compile here is left out (with the probes that need it) and the rest compiled again.

    :raises ProbeCompileError: (an EnvironmentProblem) the message names the probe, the
        compiler's first error and what ``--skip-unavailable`` would leave out.
    """
    from cmaprof.collectors import compilecheck

    while True:
        try:
            return compilecheck.load(names, defines), names, defines
        except compilecheck.ProbeCompileError as exc:
            probe = exc.failure.probe
            if not opts.skip_unavailable or probe is None or probe == "page_alloc":
                raise
            dropped = compilecheck.dependents(probe, names)
            why = f"does not compile here: {exc.failure.error}"
            for n in dropped:
                meta.probes_unavailable[n] = why if n == probe else f"needs {probe} ({why})"
                print(f"cmaprof: probe {n} off: {meta.probes_unavailable[n]}", file=err)
            names = [n for n in names if n not in dropped]
            defines = dict(features.defines(tfs, names))
            defines.update(opts.probe_options)
            meta.defines = defines
            meta.probes = {n: v for n, v in meta.probes.items() if n in names}


def _stream_request(events: list[str], tfs: Path) -> tuple[Any, Any]:
    """Parse and resolve ``--events`` against this kernel's zones and GFP names, before
    any file is created; (None, None) without ``--events``.

    :raises BadInput: bad syntax, unknown zone or flag, more than one stream.
    """
    if not events:
        return None, None
    from cmaprof.collectors import stream
    from cmaprof.kernel import formats

    if len(events) > 1:
        raise BadInput(f"--events given {len(events)} times; one stream per recording (page_alloc)")
    spec = stream.parse_events(events[0])
    zones = procfs.parse_zoneinfo(
        live_procfs.read_text(Path("/"), "proc/zoneinfo") or "", "/proc/zoneinfo"
    )
    fmt = features.event_format(tfs, "kmem/mm_page_alloc")
    entries = formats.gfp_table(fmt).entries if fmt is not None else ()
    return spec, stream.resolve_filter(spec, procfs.zone_names(zones), entries)


class _Session:
    """The collectors of one recording around one compiled BPF module."""

    def __init__(self, ctx: CollectorContext) -> None:
        self.bpf = ctx.bpf
        self.collectors: list[Collector] = registry.create(ctx)
        page = self.collectors[0]
        assert isinstance(page, PageAllocCollector), "page_alloc is always the first probe"
        self.page = page

    def each(self, step: str, *args: Any) -> None:
        """Run one step of :class:`~cmaprof.collectors.base.Collector` on every collector."""
        for c in self.collectors:
            getattr(c, step)(*args)

    def interval_tables(self, t_range: tuple[int, int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in self.collectors:
            out.update(c.interval_tables(t_range))
        return out

    def close(self) -> None:
        try:
            for c in reversed(self.collectors):
                c.detach()
        finally:
            self.bpf.cleanup()


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
    with _StopFlag() as flag:
        return _record(opts, err, flag)


def _record(opts: RecordOptions, err: IO[str], flag: _StopFlag) -> int:
    """Prepare (no file yet), create the recording, then start -> loop -> finish."""
    _check_command(opts.command)
    tfs, mounted = tracefs.ensure_mounted()
    meta, names, stream_req, defines = _prepare(opts, tfs)
    writer = RecordingWriter(opts.output, force=opts.force)
    for name, reason in meta.probes_unavailable.items():
        print(f"cmaprof: probe {name} off: {reason}", file=err)
    _describe_run(meta, opts, names, defines, mounted, tfs)
    zones = procfs.parse_zoneinfo(
        live_procfs.read_text(Path("/"), "proc/zoneinfo") or "", "/proc/zoneinfo"
    )
    cma_areas = live_procfs.read_cma_areas()
    _describe_memory(meta, zones, cma_areas)
    for ev, path in tracefs.format_files(tfs).items():
        writer.copy_file(path, f"formats/{ev}/format")
    writer.write_metadata(meta)
    if flag.stop:
        return _stopped_in_startup(writer, meta, None, flag)

    session: _Session | None = None
    stats_fd: int | None = None
    run = _Run(opts, writer, meta, err, flag)
    try:
        try:
            ctx = CollectorContext(
                None, names, zones, cma_areas, defines, writer=writer, err=err,
                options={"stream": stream_req},
            )  # fmt: skip
            session, stats_fd = _start(tfs, opts, ctx, meta, err, flag)
        except BaseException:
            # Nothing was counted and _start detached everything: remove what start-up
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


def _prepare(
    opts: RecordOptions, tfs: Path
) -> tuple[Metadata, list[str], tuple[Any, Any], dict[str, Any]]:
    """Everything decided before any file is created: the system metadata, the
    probes, the ``--events`` request and the ``-D`` defines; BCC is importable and
    no compile failure is known for them.

    :raises EnvironmentProblem: a probe asked for cannot run, BCC missing, known
        compile failure.
    :raises BadInput: bad ``--events``.
    """
    from cmaprof.collectors import doctor

    warnings = doctor.preflight()  # the doctor's fail rows, before any file is created
    meta = system_metadata()
    meta.environment_warnings = {c.name: c.detail for c in warnings}
    names = _choose_probes(tfs, meta, opts.probes, opts.skip_unavailable)
    if opts.probes is not None:
        meta.probes_requested = list(opts.probes)
        meta.skip_unavailable = opts.skip_unavailable
    from cmaprof.collectors.blockers import by_defines

    by = by_defines(opts.by, names, meta.probes_unavailable)
    opts.probe_options = {**opts.probe_options, **by}
    stream_req = _stream_request(opts.events, tfs)
    if stream_req[0] is not None:
        names = [n for n in probes.PROBES if n in names or n == "stream"]
    from cmaprof.collectors.bccload import import_bcc

    import_bcc()  # a clear error before any file is created
    defines: dict[str, Any] = dict(features.defines(tfs, names))
    defines.update(opts.probe_options)

    if not opts.skip_unavailable:
        from cmaprof.collectors import compilecheck

        compilecheck.raise_if_known(names, defines)  # doctor saw it fail: before any file
    return meta, names, stream_req, defines


def _describe_run(
    meta: Metadata,
    opts: RecordOptions,
    names: list[str],
    defines: dict[str, Any],
    mounted: Any,
    tfs: Path,
) -> None:
    meta.cmaprof_version = __version__
    meta.complete = False
    meta.argv = sys.argv
    meta.command = opts.command
    meta.mounted_by_cmaprof = mounted
    meta.tracefs = str(tfs)
    meta.probes = {
        n: ProbeInfo(
            options=dict(probes.get(n).options), tracepoints=list(probes.get(n).tracepoints)
        )
        for n in names
    }
    meta.defines = defines
    meta.start_time = _now_iso()


def _describe_memory(meta: Metadata, zones: list, cma_areas: list) -> None:
    meta.zones = [ZoneInfo.from_json(z.as_dict()) for z in zones]
    meta.zone_names = dict(procfs.zone_names(zones))
    meta.cma_areas = [
        CmaAreaInfo.from_json(a.as_dict()) for a in cma_areas if a.end_pfn is not None
    ]
    meta.cma_areas_without_range = [a.name for a in cma_areas if a.end_pfn is None]


def _stopped_in_startup(
    writer: RecordingWriter, meta: Metadata, session: _Session | None, flag: _StopFlag
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
        flag: _StopFlag,
    ) -> None:
        self.opts, self.writer, self.meta, self.err, self.flag = opts, writer, meta, err, flag
        self.child: subprocess.Popen | None = None
        self.exit_status = 0
        self.stop_reason = ""

    def begin(self, session: _Session, zone_names: dict[int, str]) -> None:
        """Switch counting on, snapshot proc/start, open the collectors, start the command."""
        self.session, self.zone_names = session, zone_names
        self.window = _CountingWindow(session.page)
        self.window.switch_on()
        self.t0 = self.window.on_ns
        self.prev_vm = _snapshot(self.writer, "start")
        session.each("start", self.t0)
        _write_system_series(self.writer, 0, self.prev_vm)
        meta = self.meta
        meta.counting_started = True
        meta.start_time = _now_iso()
        meta.counting_window = self.window.as_section()
        self.writer.write_metadata(meta)
        opts = self.opts
        if opts.command:
            self.child = subprocess.Popen(opts.command)
            self.flag.child = self.child
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


def _start(
    tfs: Path,
    opts: RecordOptions,
    ctx: CollectorContext,
    meta: Metadata,
    err: IO[str],
    flag: _StopFlag,
) -> tuple[_Session | None, int | None]:
    """Compile, build the collectors, configure (calibrate) and attach; (None, None)
    when a stop signal came first. Counting is not yet on. On any failure every program
    is detached before the exception leaves.

    :raises EnvironmentProblem: compile, load or attach failure, calibration refused.
    """
    if flag.stop:
        return None, None
    from cmaprof.collectors.compilecheck import ProbeCompileError

    names = ctx.names
    try:
        ctx.bpf, ctx.names, ctx.defines = _load_probes(tfs, names, ctx.defines, opts, meta, err)
    except ProbeCompileError:
        raise
    except Exception as exc:  # BCC raises a bare Exception when compile/load fails
        raise _bcc_problem(exc, names) from exc
    names = ctx.names
    if ctx.defines.get("HAVE_KPROBE_CMA_ALLOC"):
        ctx.call_symbol = features.cma_call_symbol(tfs)
    meta.cma_call_symbol = ctx.call_symbol
    session = _Session(ctx)
    try:
        if flag.stop:
            return session, None
        session.each("configure")
        session.each("metadata", meta, False)
        session.each("attach")
        return session, bpfmodule.enable_stats()
    except CmaprofError:
        session.close()
        raise
    except Exception as exc:  # BCC's bare Exception from load_func or attach_*
        session.close()
        raise _bcc_problem(exc, names) from exc
    except BaseException:
        session.close()
        raise


def _bcc_problem(exc: Exception, names: list[str]) -> EnvironmentProblem:
    """One clear error for BCC's bare Exception (compile, load or attach)."""
    if "Failed to attach" in str(exc) or "Failed to load BPF program" in str(exc):
        return EnvironmentProblem(
            f"BCC could not load or attach a probe program ({exc}; the kernel's reason "
            f"is above: 'Argument list too long' means the tracepoint already has 64 "
            f"BPF programs (BPF_TRACE_MAX_PROGS, kernel/trace/bpf_trace.c; cmaprof "
            f"doctor lists the programs attached to cmaprof's tracepoints), 'Too many "
            f"open files' that ulimit -n is too low)"
        )
    return EnvironmentProblem(
        f"BCC could not compile or load the probes ({exc}; the compiler's "
        f"messages are above): check the headers row of cmaprof doctor; "
        f"cmaprof probes dump {' '.join(names)} prints the exact source"
    )


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


def _finish(writer: RecordingWriter, meta: Metadata, session: _Session | None) -> None:
    """Write the final tables and complete metadata."""
    if session is None:
        writer.write_table("page_alloc", cube_to_table({}))
        writer.write_table("page_alloc_fail", schema.to_table("page_alloc_fail", {}))
    else:
        for c in session.collectors:
            for name, table in c.final_tables().items():
                writer.write_table(name, table)
            c.metadata(meta, True)
        bpf = session.bpf
        meta.dropped = bpfmodule.read_drops(bpf)
        meta.bpf_stats = bpfmodule.prog_stats(bpf)
        meta.lost = {name: st.get("recursion_misses", 0) for name, st in meta.bpf_stats.items()}
    meta.end_time = _now_iso()
    meta.complete = True
    writer.write_metadata(meta)
