"""The tracers the benchmark compares, each started once per round and stopped after.

Every tracer is started, waited for until it counts (``ready_s``: command start to
the moment events are counted), the timed workload runs, then it is stopped with
SIGINT and its own numbers are read back: events seen, written and lost, BPF run
time per event (``bpf_stats``: on only where a mode says so, so that the overhead
ratios are untaxed by the stats clock reads), and the tracer's peak RSS.

- ``aggregate``: ``cmaprof record --probes page_alloc`` (the per-CPU cube), bpf_stats
  off (``CMAPROF_BPF_STATS=off``): what the program costs, untaxed.
- ``aggregate-stats``: the same with bpf_stats on for the whole recording
  (``CMAPROF_BPF_STATS=always``): the program's run time per event (target 2), and
  against ``aggregate`` of the same round, what bpf_stats itself costs.
- ``aggregate-by-comm``, ``aggregate-by-stack``: ``aggregate`` with ``record --by
  comm`` or ``--by stack`` (the cube also keyed by process name, or by kernel stack
  through bpf_get_stackid(): issue 17 item 4).
- ``stream``: the same as ``aggregate`` plus ``--events page_alloc`` (every
  allocation as a row).
- ``bpftrace``: a per-CPU count map on ``tracepoint:kmem:mm_page_alloc`` keyed by a
  zone from the pfn (the host's DMA/DMA32/Normal boundaries), order, gfp flags and
  migratetype: what our cube holds, minus node and CMA area.
- ``bpftrace-simple``: ``@[order, gfp, migratetype] = count()`` on the same classic
  tracepoint (the one-line script of issue 15).
- ``empty``: an empty tp_btf program on kmem:mm_page_alloc (loaded like cmaprof's,
  through BCC), with bpf_stats on while it is attached: the floor of the program
  cost (what the kernel's tracepoint dispatch and the stats clock reads cost).
- ``perf``: ``perf record -a -e kmem:mm_page_alloc`` (every event to perf.data),
  started with its events disabled and enabled through its control FIFO, so that
  "ready" is perf's own acknowledgement.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CMAPROF = REPO / ".venv" / "bin" / "cmaprof"

#: bpftrace's closest equivalent of the cube (bpftrace 0.17 has no page->flags walk:
#: the zone comes from the pfn and the x86-64 DMA/DMA32 limits, 16 MiB and 4 GiB).
BPFTRACE_PROG = (
    "tracepoint:kmem:mm_page_alloc { "
    "$z = args->pfn < 4096 ? 0 : (args->pfn < 1048576 ? 1 : 2); "
    "@[$z, args->order, args->gfp_flags, args->migratetype] = count(); }"
)
#: The one-line script of issue 15 (no zone).
BPFTRACE_SIMPLE_PROG = "tracepoint:kmem:mm_page_alloc { @[args->order, args->gfp_flags, args->migratetype] = count(); }"


@dataclass
class Result:
    """What one traced round measured, besides the workload's own timings."""

    ready_s: float | None = None
    #: launch to the first counted event (cmaprof: counting switched on, from its
    #: metadata); and the BCC compile inside it
    startup_s: float | None = None
    compile_s: float | None = None
    before_compile_s: float | None = None
    events_seen: int | None = None
    events_written: int | None = None
    events_lost: int | None = None
    events_dropped: int | None = None
    bpf_run_cnt: int | None = None
    bpf_run_time_ns: int | None = None
    peak_rss_kib: int | None = None
    cpu_s: float | None = None
    window_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bpf_ns_per_event(self) -> float | None:
        if self.bpf_run_cnt and self.bpf_run_time_ns:
            return self.bpf_run_time_ns / self.bpf_run_cnt
        return None


def bpf_progs() -> dict[int, dict[str, Any]]:
    """Loaded BPF programs by id (``bpftool prog show -j``)."""
    out = subprocess.run(
        ["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True
    ).stdout
    return {p["id"]: p for p in json.loads(out or "[]")}


def map_count_sum(map_id: int) -> tuple[int, int]:
    """(keys, sum of all 8-byte values over all CPUs) of a BPF hash map (bpftool)."""
    out = subprocess.run(
        ["bpftool", "map", "dump", "id", str(map_id), "-j"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return 0, 0
    keys = total = 0
    for entry in json.loads(out.stdout or "[]"):
        vals = entry.get("values") or [{"value": entry.get("value")}]
        for v in vals:
            raw = v.get("value")
            if isinstance(raw, list) and len(raw) == 8:
                total += int.from_bytes(bytes(int(x, 16) for x in raw), "little")
        keys += 1
    return keys, total


class _LineWatch:
    """Reads a pipe in a thread, keeps the text, notes when a pattern first appears."""

    def __init__(self, pipe: Any, pattern: str | None) -> None:
        self.text: list[str] = []
        self.pattern = re.compile(pattern) if pattern else None
        self.seen_at: float | None = None
        self.event = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe: Any) -> None:
        for line in iter(pipe.readline, ""):
            self.text.append(line)
            if self.pattern and self.seen_at is None and self.pattern.search(line):
                self.seen_at = time.monotonic()
                self.event.set()
        self.event.set()


class _RssWatch:
    """Peak resident set (VmHWM of /proc/PID/status) of a process, sampled every 50 ms.

    Not ``wait4``'s ru_maxrss: Linux carries the forking process's peak over an exec
    (the bench itself, with pandas loaded), so every child would look at least as big.
    """

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib, self.stop = pid, 0, False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        path = Path(f"/proc/{self.pid}/status")
        while not self.stop:
            try:
                for line in path.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except (OSError, ValueError, IndexError):
                return
            time.sleep(0.05)


class Tracer:
    """Base: start, wait until counting, stop, read back numbers."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.t_start = 0.0
        self.result = Result()

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 300.0) -> None:
        raise NotImplementedError

    def stop(self) -> Result:
        raise NotImplementedError

    def _wait_exit(self, timeout_s: float = 300.0, kill_after: bool = False) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.rss.stop = True
                self.result.peak_rss_kib = self.rss.peak_kib or None
                self.result.cpu_s = ru.ru_utime + ru.ru_stime
                return
            if time.monotonic() >= deadline:
                if not kill_after:
                    self.proc.kill()
                    raise RuntimeError(f"{self.name} did not exit within {timeout_s:.0f} s")
                self.result.notes.append(f"did not exit {timeout_s:.0f} s after SIGINT: killed")
                self.proc.kill()
                kill_after = False
                deadline = time.monotonic() + 30
            time.sleep(0.05)


class Cmaprof(Tracer):
    """cmaprof record, aggregate (``stream=False``) or streaming mode.

    :param stats: ``CMAPROF_BPF_STATS`` for the recording (``off``, ``always``, or
        None: cmaprof's default sampling).
    """

    def __init__(
        self,
        workdir: Path,
        stream: bool,
        stats: str | None = "off",
        name: str = "",
        by: str = "",
    ) -> None:
        super().__init__(workdir)
        self.stream = stream
        self.stats = stats
        self.by = by
        self.name = name or ("stream" if stream else "aggregate")
        self.out = workdir / f"rec-{self.name}"

    def argv(self) -> list[str]:
        a = [str(CMAPROF), "record", "-o", str(self.out), "--probes", "page_alloc"]
        a += ["--by", self.by] if self.by else []
        return a + (["--events", "page_alloc"] if self.stream else [])

    def start(self, timeout_s: float = 300.0) -> None:
        env = dict(os.environ)
        env.pop("CMAPROF_BPF_STATS", None)
        if self.stats is not None:
            env["CMAPROF_BPF_STATS"] = self.stats
        self.t_start = time.monotonic()
        self.t_start_real_ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self.rss = _RssWatch(self.proc.pid)
        self.err = _LineWatch(self.proc.stderr, r"cmaprof: recording system-wide")
        if not self.err.event.wait(timeout_s) or self.err.seen_at is None:
            self.proc.kill()
            raise RuntimeError(f"cmaprof did not start: {''.join(self.err.text)[-2000:]}")
        self.result.ready_s = self.err.seen_at - self.t_start
        self.t_ready = self.err.seen_at

    def stop(self) -> Result:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self._wait_exit()
        if self.proc.returncode != 0:
            raise RuntimeError(f"cmaprof exited {self.proc.returncode}: {''.join(self.err.text)}")
        meta = json.loads((self.out / "metadata.json").read_text())
        r = self.result
        r.window_s = (meta.get("duration_ns") or 0) / 1e9
        on_real = (meta.get("counting_window") or {}).get("on_realtime_ns")
        if on_real:
            r.startup_s = (on_real - self.t_start_real_ns) / 1e9
        r.compile_s = (meta.get("startup_s") or {}).get("compile")
        r.before_compile_s = (meta.get("startup_s") or {}).get("before_compile")
        st = meta.get("bpf_stats") or {}
        main = (meta.get("page_alloc") or {}).get("program") or "page_alloc_raw"
        progs = [main] + [p for p in ("stream_btf", "stream_raw") if self.stream and p in st]
        r.bpf_run_cnt = st.get(main, {}).get("run_cnt")
        r.bpf_run_time_ns = sum(st.get(p, {}).get("run_time_ns", 0) for p in progs)
        r.notes.append(f"program {main}")
        r.events_lost = sum((meta.get("lost") or {}).values())
        r.events_dropped = sum((meta.get("dropped") or {}).values())
        import pyarrow.parquet as pq

        cube = pq.read_table(self.out / "tables" / "page_alloc.parquet", columns=["allocs"])
        r.events_seen = int(sum(cube.column("allocs").to_pylist()))
        if self.stream:
            tot = (meta.get("stream") or {}).get("totals") or {}
            r.events_seen = tot.get("selected")
            r.events_written = tot.get("written")
            r.events_dropped = (r.events_dropped or 0) + (tot.get("dropped") or 0)
            if not (meta.get("stream") or {}).get("balanced"):
                r.notes.append("stream accounting NOT balanced")
        else:
            r.events_written = r.events_seen
        return r


class Bpftrace(Tracer):
    name = "bpftrace"
    prog = BPFTRACE_PROG

    def argv(self) -> list[str]:
        return ["bpftrace", "-e", self.prog]

    def start(self, timeout_s: float = 120.0) -> None:
        before = set(bpf_progs())
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.rss = _RssWatch(self.proc.pid)
        self.out = _LineWatch(self.proc.stdout, None)
        deadline = self.t_start + timeout_s
        while time.monotonic() < deadline:
            new = {i: p for i, p in bpf_progs().items() if i not in before}
            # counting: its count map has a key (run_cnt needs bpf_stats, off here)
            maps = {m for p in new.values() for m in p.get("map_ids", [])}
            if any(map_count_sum(m)[0] for m in maps):
                self.result.ready_s = time.monotonic() - self.t_start
                self.prog_ids = list(new)
                self.t_ready = time.monotonic()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"bpftrace did not attach: {''.join(self.out.text)[-2000:]}")

    def stop(self) -> Result:
        assert self.proc is not None
        progs = bpf_progs()
        r = self.result
        r.window_s = time.monotonic() - self.t_ready
        r.bpf_run_cnt = sum(progs[i].get("run_cnt", 0) for i in self.prog_ids if i in progs)
        r.bpf_run_time_ns = sum(progs[i].get("run_time_ns", 0) for i in self.prog_ids if i in progs)
        # the count map, read while attached (bpftrace 0.17 sometimes misses a SIGINT
        # that lands on another of its threads: then it is killed, its map already read)
        keys, total = 0, 0
        for mid in {m for i in self.prog_ids if i in progs for m in progs[i].get("map_ids", [])}:
            k, n = map_count_sum(mid)
            keys, total = keys + k, total + n
        r.events_seen = r.events_written = total
        r.notes.append(f"{keys} map keys; bpftrace reports no lost count for maps")
        self.proc.send_signal(signal.SIGINT)
        self._wait_exit(10.0, kill_after=True)
        return r


class BpftraceSimple(Bpftrace):
    name = "bpftrace-simple"
    prog = BPFTRACE_SIMPLE_PROG


EMPTY_PROG = "int empty_btf(unsigned long long *ctx) { return 0; }"


class EmptyProgram(Tracer):
    """An empty tp_btf program on mm_page_alloc in the bench process, bpf_stats on."""

    name = "empty"

    def start(self, timeout_s: float = 120.0) -> None:
        from cmaprof.collectors import bccload, bpfmodule

        bcc = bccload.import_bcc()
        self.t_start = time.monotonic()
        self.bpf = bcc.BPF(text=EMPTY_PROG.encode())
        self.stats_fd = bpfmodule.enable_stats()
        self.link = bccload.attach_tp_btf(self.bpf, "empty_btf", "mm_page_alloc")
        self.t_ready = time.monotonic()
        self.result.ready_s = self.t_ready - self.t_start

    def stop(self) -> Result:
        from cmaprof.collectors import bpfmodule

        r = self.result
        r.window_s = time.monotonic() - self.t_ready
        st = bpfmodule.prog_stats(self.bpf).get("empty_btf", {})
        os.close(self.link)
        if self.stats_fd is not None:
            os.close(self.stats_fd)
        self.bpf.cleanup()
        r.bpf_run_cnt, r.bpf_run_time_ns = st.get("run_cnt"), st.get("run_time_ns")
        r.events_seen = r.events_written = r.bpf_run_cnt
        return r


class Perf(Tracer):
    name = "perf"

    def argv(self) -> list[str]:
        d = self.workdir
        return [
            "perf",
            "record",
            "-a",
            "-e",
            "kmem:mm_page_alloc",
            "-o",
            str(d / "perf.data"),
            "-D",
            "-1",
            "--control",
            f"fifo:{d / 'perf.ctl'},{d / 'perf.ack'}",
        ]

    def start(self, timeout_s: float = 120.0) -> None:
        for f in ("perf.ctl", "perf.ack"):
            p = self.workdir / f
            if p.exists():
                p.unlink()
            os.mkfifo(p)
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.rss = _RssWatch(self.proc.pid)
        self.err = _LineWatch(self.proc.stderr, None)
        ctl = os.open(self.workdir / "perf.ctl", os.O_RDWR)
        ack = os.open(self.workdir / "perf.ack", os.O_RDWR)
        try:
            os.write(ctl, b"enable\n")
            deadline = time.monotonic() + timeout_s
            got = b""
            os.set_blocking(ack, False)
            while b"ack" not in got and time.monotonic() < deadline:
                try:
                    got += os.read(ack, 64)
                except BlockingIOError:
                    time.sleep(0.005)
            if b"ack" not in got:
                self.proc.kill()
                raise RuntimeError(f"perf did not acknowledge enable: {''.join(self.err.text)}")
        finally:
            os.close(ctl)
            os.close(ack)
        self.t_ready = time.monotonic()
        self.result.ready_s = self.t_ready - self.t_start

    def stop(self) -> Result:
        assert self.proc is not None
        r = self.result
        r.window_s = time.monotonic() - self.t_ready
        self.proc.send_signal(signal.SIGINT)
        self._wait_exit()
        self.err.thread.join(10)
        text = "".join(self.err.text)
        m = re.search(r"\((\d+) samples\)", text)
        r.events_written = int(m.group(1)) if m else None
        lost = re.findall(r"lost (\d+) chunks", text)
        r.events_lost = sum(int(x) for x in lost) if lost else 0
        r.events_seen = r.events_written
        r.notes.append("perf: lost = chunks reported lost by perf record (0 if none)")
        size = (self.workdir / "perf.data").stat().st_size
        r.notes.append(f"perf.data {size} bytes")
        (self.workdir / "perf.data").unlink()
        return r


def make(mode: str, workdir: Path) -> Tracer | None:
    """The tracer of ``mode`` (None for ``untraced``)."""
    if mode == "untraced":
        return None
    if mode in ("aggregate", "stream"):
        return Cmaprof(workdir, stream=mode == "stream")
    if mode == "aggregate-stats":
        return Cmaprof(workdir, stream=False, stats="always", name=mode)
    if mode.startswith("aggregate-by-"):
        return Cmaprof(workdir, stream=False, name=mode, by=mode.removeprefix("aggregate-by-"))
    classes: dict[str, type[Tracer]] = {
        "bpftrace": Bpftrace,
        "bpftrace-simple": BpftraceSimple,
        "empty": EmptyProgram,
        "perf": Perf,
    }
    return classes[mode](workdir)
