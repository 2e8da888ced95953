"""``cmaprof record``'s options and its start-up: what to record (system metadata, the
probes this kernel can run, ``--events``, the ``-D`` defines), decided before any file
is created; then compile and load, the collectors around the BPF module (the
:class:`Session`), configure (calibrate) and attach. :mod:`.record` runs the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from cmaprof import __version__, probes
from cmaprof.collectors import bpfmodule, features, registry, tracefs
from cmaprof.collectors import procfs as live_procfs
from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.collectors.page_alloc import PageAllocCollector
from cmaprof.errors import BadInput, CmaprofError, EnvironmentProblem
from cmaprof.kernel import procfs
from cmaprof.recording.metadata import (
    CmaAreaInfo,
    Headers,
    Metadata,
    ProbeInfo,
    ZoneInfo,
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
    #: ``--by`` keys (collectors/page_alloc_by.py BY_KEYS).
    by: list[str] = field(default_factory=list)
    #: ``--by-entries``: keys of page_alloc_by and stacks of pa_stacks (None: defaults).
    by_entries: int | None = None


class StopFlag:
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


def now_iso() -> str:
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


def check_command(command: list[str]) -> None:
    if command and shutil.which(command[0]) is None:
        raise BadInput(f"command not found: {command[0]!r} (give a program on PATH or a path)")


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


class Session:
    """The collectors of one recording around one compiled BPF module."""

    def __init__(self, ctx: CollectorContext) -> None:
        self.bpf = ctx.bpf
        self.collectors: list[Collector] = registry.create(ctx)
        page = self.collectors[0]
        assert isinstance(page, PageAllocCollector), "page_alloc is always the first probe"
        self.page = page
        #: bpf_stats windows (started with counting, ticked by the poll loop).
        self.stats = bpfmodule.StatsSampler(window_s=0.0)

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
        self.stats.stop()
        try:
            for c in reversed(self.collectors):
                c.detach()
        finally:
            self.bpf.cleanup()


def prepare(
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
    from cmaprof.collectors.page_alloc_by import by_defines

    by = by_defines(opts.by, names, opts.by_entries)
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


def describe_run(
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
    meta.start_time = now_iso()


def describe_memory(meta: Metadata, zones: list, cma_areas: list) -> None:
    meta.zones = [ZoneInfo.from_json(z.as_dict()) for z in zones]
    meta.zone_names = dict(procfs.zone_names(zones))
    meta.cma_areas = [
        CmaAreaInfo.from_json(a.as_dict()) for a in cma_areas if a.end_pfn is not None
    ]
    meta.cma_areas_without_range = [a.name for a in cma_areas if a.end_pfn is None]


def start_session(
    tfs: Path,
    opts: RecordOptions,
    ctx: CollectorContext,
    meta: Metadata,
    err: IO[str],
    flag: StopFlag,
) -> tuple[Session | None, int | None]:
    """Compile, build the collectors, configure (calibrate) and attach; (None, None)
    when a stop signal came first. Counting is not yet on. On any failure every program
    is detached before the exception leaves.

    :raises EnvironmentProblem: compile, load or attach failure, calibration refused.
    """
    if flag.stop:
        return None, None
    from cmaprof.collectors.compilecheck import ProbeCompileError

    names = ctx.names
    t0 = time.monotonic()
    # the compile is the long pole in a TCG guest (minutes): say so, and how long it took
    print(f"cmaprof: compiling the probes ({', '.join(names)}) with BCC", file=err, flush=True)
    warm = _import_during_compile()
    try:
        ctx.bpf, ctx.names, ctx.defines = _load_probes(tfs, names, ctx.defines, opts, meta, err)
    except ProbeCompileError:
        raise
    except Exception as exc:  # BCC raises a bare Exception when compile/load fails
        raise _bcc_problem(exc, names) from exc
    finally:
        warm.join()  # before counting is on: the import's own allocations are not counted
    names = ctx.names
    if ctx.defines.get("HAVE_KPROBE_CMA_ALLOC"):
        ctx.call_symbol = features.cma_call_symbol(tfs)
    meta.cma_call_symbol = ctx.call_symbol
    session = Session(ctx)
    t1 = time.monotonic()
    print(f"cmaprof: probes compiled and loaded in {t1 - t0:.1f} s", file=err, flush=True)
    try:
        if flag.stop:
            return session, None
        session.each("configure")
        session.each("metadata", meta, False)
        t2 = time.monotonic()
        session.each("attach")
        # where start-up goes (seconds): from exec to the compile (imports, doctor's
        # checks, probe choice), BCC's compile and load, calibration, attach
        meta.startup_s = {
            "before_compile": round(process_age_s() - (time.monotonic() - t0), 3),
            "compile": round(t1 - t0, 3),
            "configure": round(t2 - t1, 3),
            "attach": round(time.monotonic() - t2, 3),
        }
        session.stats = bpfmodule.StatsSampler.from_env()
        return session, None
    except CmaprofError:
        session.close()
        raise
    except Exception as exc:  # BCC's bare Exception from load_func or attach_*
        session.close()
        raise _bcc_problem(exc, names) from exc
    except BaseException:
        session.close()
        raise


def _import_during_compile() -> threading.Thread:
    """Import pandas in a thread while BCC compiles: pyarrow imports it for the first
    table written (after counting is on), and BCC compiles in libbcc through ctypes,
    which releases the GIL, so on a second CPU the import costs start-up nothing (44 s
    cold in the 7.3.4 TCG guest). The blockers' derived tables need it at the end."""

    def imp() -> None:
        with contextlib.suppress(ImportError):  # without pandas, pyarrow does not need it
            import pandas  # noqa: F401

            import cmaprof.recording.derived  # noqa: F401

    t = threading.Thread(target=imp, name="cmaprof-import", daemon=True)
    t.start()
    return t


def process_age_s() -> float:
    """Seconds since this process was started (``/proc/self/stat`` starttime)."""
    try:
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0.0
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start / os.sysconf("SC_CLK_TCK")


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
