"""``cmaprof record``: run the probes over a time window or a command, write a recording.

Order of events (the counting window brackets the two /proc snapshots, so kernel
counters and traced counts cover the same allocations up to a few microseconds):
compile -> calibrate -> attach -> enable counting -> snapshot proc/start -> run ->
snapshot proc/end -> disable counting -> read maps -> write tables -> detach.

SIGINT, SIGTERM and SIGHUP only set a flag: the recording is finished and marked
with the reason, and a running command gets the signal forwarded (Ctrl-C in a
terminal reaches it directly). Interval data is written as it comes, so a SIGKILL
leaves every finished interval readable in ``series/``.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from cmaprof import __version__, probes
from cmaprof.analysis import schema
from cmaprof.collectors import procfs, tracefs
from cmaprof.collectors.page_alloc import PageAllocCollector, cube_delta, cube_to_table
from cmaprof.collectors.recording import RecordingWriter
from cmaprof.errors import BadInput, EnvironmentProblem

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_SERIES_INTERVAL_S = 5.0
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


@dataclass
class RecordOptions:
    """What ``cmaprof record`` was asked to do.

    :param duration_s: stop after this many seconds (None: until the command ends or a signal).
    :param interval_s: series interval; when given, a live table is printed on stderr too.
    :param command: argument list run while recording (never through a shell).
    """

    output: Path
    force: bool = False
    duration_s: float | None = None
    interval_s: float | None = None
    command: list[str] = field(default_factory=list)
    probe_options: dict[str, int] = field(default_factory=dict)


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
    """Which kernel headers BCC compiles against, and whether they match the kernel."""
    build = Path(f"/lib/modules/{release}/build")
    info: dict[str, Any] = {"kheaders": Path("/sys/kernel/kheaders.tar.xz").exists()}
    if build.exists():
        target = build.resolve()
        info["build_dir"] = str(target)
        info["matches_running_kernel"] = release in target.name or release in str(target)
    else:
        info["build_dir"] = None
        info["matches_running_kernel"] = info["kheaders"]
    return info


def system_metadata() -> dict[str, Any]:
    uname = os.uname()
    nodes = sorted(int(p.name[4:]) for p in Path("/sys/devices/system/node").glob("node[0-9]*"))
    return {
        "kernel_release": uname.release,
        "kernel_version": uname.version,
        "machine": uname.machine,
        "hostname": platform.node(),
        "cmdline": (procfs.read_text(Path("/"), "proc/cmdline") or "").strip(),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "cpus": os.cpu_count(),
        "nodes": nodes,
        "headers": headers_info(uname.release),
    }


def _check_command(command: list[str]) -> None:
    if command and shutil.which(command[0]) is None:
        raise BadInput(f"command not found: {command[0]!r} (give a program on PATH or a path)")


def _bpf_stats_on() -> str | None:
    try:
        old = BPF_STATS.read_text().strip()
        if old != "1":
            BPF_STATS.write_text("1\n")
        return old
    except OSError:
        return None


def _bpf_stats_restore(old: str | None) -> None:
    if old is not None and old != "1":
        try:
            BPF_STATS.write_text(old + "\n")
        except OSError:
            pass


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


def record(opts: RecordOptions, err: IO[str] = sys.stderr) -> int:
    """Record; return the command's exit status (0 without a command).

    :raises EnvironmentProblem: not root, no tracefs, no kmem:mm_page_alloc, BCC problems.
    :raises BadInput: output exists without --force, command not found.
    """
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "cmaprof record needs root (BPF programs and tracefs): run it with sudo"
        )
    _check_command(opts.command)
    tfs, mounted = tracefs.ensure_mounted()
    probe = probes.get("page_alloc")
    tracefs.require_events(tfs, probe.tracepoints, probe.name)
    from cmaprof.collectors.bccload import import_bcc

    import_bcc()  # a clear error before any file is created

    writer = RecordingWriter(opts.output, force=opts.force)
    meta: dict[str, Any] = system_metadata()
    meta.update(
        {
            "cmaprof_version": __version__,
            "complete": False,
            "argv": sys.argv,
            "command": opts.command,
            "mounted_by_cmaprof": mounted,
            "tracefs": str(tfs),
            "probes": {
                probe.name: {
                    "options": dict(probe.options, **opts.probe_options),
                    "tracepoints": list(probe.tracepoints),
                }
            },
            "start_time": _now_iso(),
        }
    )
    zones_text = procfs.read_text(Path("/"), "proc/zoneinfo") or ""
    zones = procfs.parse_zoneinfo(zones_text, "/proc/zoneinfo")
    cma_areas = procfs.read_cma_areas()
    meta["zones"] = [z.as_dict() for z in zones]
    meta["zone_names"] = {str(k): v for k, v in procfs.zone_names(zones).items()}
    meta["cma_areas"] = [a.as_dict() for a in cma_areas if a.end_pfn is not None]
    meta["cma_areas_without_range"] = [a.name for a in cma_areas if a.end_pfn is None]
    writer.write_metadata(meta)
    for ev, path in tracefs.format_files(tfs).items():
        writer.copy_file(path, f"formats/{ev}/format")

    collector = PageAllocCollector(zones, cma_areas, opts.probe_options)
    stats_old: str | None = None
    child: subprocess.Popen | None = None
    exit_status = 0
    with _StopFlag() as flag:
        try:
            collector.load()
            if not flag.stop:
                cal = collector.calibrate()
                meta["page_alloc"] = cal.as_metadata()
                if cal.zone_source != "page_flags":
                    print(f"cmaprof: warning: {cal.zone_reason}", file=err)
                collector.configure()
                collector.attach()
                stats_old = _bpf_stats_on()
            if flag.stop:
                meta["stop_reason"] = f"signal {flag.name} during start-up"
                meta["counting_started"] = False
                _finish(writer, meta, collector, {}, {}, {}, 0)
                return 128 + int(flag.signum or 0)

            collector.set_enabled(True)
            t0 = time.monotonic_ns()
            vm_start = _snapshot(writer, "start")
            writer.append_series(
                "vmstat", schema.to_table("vmstat", _vmstat_rows(0, vm_start), series=True)
            )
            meta["counting_started"] = True
            meta["start_time"] = _now_iso()
            writer.write_metadata(meta)

            if opts.command:
                child = subprocess.Popen(opts.command)
                flag.child = child
                print(
                    f"cmaprof: recording system-wide while {' '.join(opts.command)} runs "
                    f"(pid {child.pid})",
                    file=err,
                )
            else:
                print(
                    "cmaprof: recording system-wide"
                    + (f" for {opts.duration_s:g} s" if opts.duration_s else "; Ctrl-C stops"),
                    file=err,
                )

            interval = opts.interval_s or DEFAULT_SERIES_INTERVAL_S
            live = opts.interval_s is not None
            zone_names = procfs.zone_names(zones)
            prev_cube: dict = {}
            prev_vm = vm_start
            prev_t = t0
            next_tick = t0 + int(interval * 1e9)
            end_at = t0 + int(opts.duration_s * 1e9) if opts.duration_s else None
            stop_reason = ""
            while True:
                if flag.stop:
                    stop_reason = f"signal {flag.name}"
                    break
                if child is not None and child.poll() is not None:
                    stop_reason = "command exited"
                    break
                now = time.monotonic_ns()
                if end_at is not None and now >= end_at:
                    stop_reason = "duration reached"
                    break
                if now >= next_tick:
                    cube = collector.read_cube()
                    vm = procfs.parse_vmstat(procfs.read_text(Path("/"), "proc/vmstat") or "")
                    delta = cube_delta(cube, prev_cube)
                    writer.append_series(
                        "page_alloc", cube_to_table(delta, (prev_t - t0, now - t0))
                    )
                    writer.append_series(
                        "vmstat", schema.to_table("vmstat", _vmstat_rows(now - t0, vm), series=True)
                    )
                    if live:
                        vm_delta = {k: v - prev_vm.get(k, 0) for k, v in vm.items()}
                        print(
                            _live_line(
                                (now - t0) / 1e9, (now - prev_t) / 1e9, delta, zone_names, vm_delta
                            ),
                            file=err,
                        )
                    prev_cube, prev_vm, prev_t = cube, vm, now
                    next_tick += int(interval * 1e9)
                wake = min(x for x in (next_tick, end_at or next_tick) if x is not None)
                time.sleep(max(0.0, min(0.1, (wake - time.monotonic_ns()) / 1e9)))

            vm_end = _snapshot(writer, "end")
            collector.set_enabled(False)
            t_end = time.monotonic_ns()
            cube = collector.read_cube()
            writer.append_series(
                "page_alloc", cube_to_table(cube_delta(cube, prev_cube), (prev_t - t0, t_end - t0))
            )
            writer.append_series(
                "vmstat", schema.to_table("vmstat", _vmstat_rows(t_end - t0, vm_end), series=True)
            )

            if child is not None:
                if child.poll() is None:
                    print(f"cmaprof: stopping {opts.command[0]} (pid {child.pid})", file=err)
                    child.terminate()
                    try:
                        child.wait(10)
                    except subprocess.TimeoutExpired:
                        child.kill()
                rc = child.wait()
                exit_status = rc if rc >= 0 else 128 - rc
                meta["command_exit_status"] = exit_status
            meta["stop_reason"] = stop_reason
            meta["duration_ns"] = t_end - t0
            _finish(writer, meta, collector, cube, vm_start, vm_end, t_end - t0)
        finally:
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
            collector.close()
            _bpf_stats_restore(stats_old)
    if flag.stop and not opts.command:
        return 0
    return exit_status


def _snapshot(writer: RecordingWriter, which: str) -> dict[str, int]:
    """Copy the /proc snapshot files (vmstat first) and return the parsed vmstat."""
    vm_text = procfs.read_text(Path("/"), "proc/vmstat") or ""
    writer.write_text(f"proc/{which}/vmstat", vm_text)
    for name in procfs.SNAPSHOT_FILES[1:]:
        text = procfs.read_text(Path("/"), f"proc/{name}")
        if text is not None:
            writer.write_text(f"proc/{which}/{name}", text)
    return procfs.parse_vmstat(vm_text, f"/proc/vmstat ({which})")


def _finish(
    writer: RecordingWriter,
    meta: dict[str, Any],
    collector: PageAllocCollector,
    cube: dict,
    vm_start: dict[str, int],
    vm_end: dict[str, int],
    dur_ns: int,
) -> None:
    """Write the final tables and complete metadata."""
    writer.write_table("page_alloc", cube_to_table(cube))
    if collector.bpf is not None:
        writer.write_table("page_alloc_fail", collector.read_fail())
        meta["dropped"] = {"page_alloc": collector.read_drops()}
        meta["bpf_stats"] = collector.prog_stats()
        meta["lost"] = {
            name: st.get("recursion_misses", 0) for name, st in meta["bpf_stats"].items()
        }
    else:
        writer.write_table("page_alloc_fail", schema.to_table("page_alloc_fail", {}))
    meta["end_time"] = _now_iso()
    meta["complete"] = True
    writer.write_metadata(meta)
