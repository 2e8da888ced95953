"""What every recording says about the BPF module itself: drops and program stats."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmaprof.probes import abi

#: Indexes of the per-CPU ``drops`` array (probes/events.h DROP_*).
DROP_NAMES = abi.enum("DROP_")


def read_drops(bpf: Any) -> dict[str, int]:
    """Events not counted, by cause (a bounded map was full, a read failed, ...)."""
    t = bpf["drops"]
    return {name: sum(t[t.Key(i)]) for i, name in enumerate(DROP_NAMES) if i < t.max_entries}


def prog_stats(bpf: Any) -> dict[str, dict[str, int]]:
    """run_cnt, run_time_ns and recursion_misses of each loaded program (fdinfo).

    ``recursion_misses`` counts events the kernel skipped because a BPF program
    was already running on that CPU (interrupt in the middle of a probe): lost.
    """
    out: dict[str, dict[str, int]] = {}
    for name, fn in getattr(bpf, "funcs", {}).items():
        nm = name.decode() if isinstance(name, bytes) else str(name)
        try:
            text = Path(f"/proc/self/fdinfo/{fn.fd}").read_text()
        except OSError:
            continue
        stats = {}
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key in ("run_time_ns", "run_cnt", "recursion_misses"):
                stats[key] = int(val)
        out[nm] = stats
    return out


SYS_BPF = 321  # x86_64
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


def enable_stats() -> int | None:
    """Turn on BPF run-time statistics for as long as the returned fd stays open.

    ``BPF_ENABLE_STATS`` (v5.8) ties the setting to a file descriptor, so a killed
    recording cannot leave ``kernel.bpf_stats_enabled`` on. None where unsupported
    (then no ns-per-event figures, and the report says "not measured").
    """
    import ctypes
    import platform

    if platform.machine() != "x86_64":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 2)(_BPF_STATS_RUN_TIME, 0)
    fd = libc.syscall(SYS_BPF, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    return fd if fd >= 0 else None


#: ``CMAPROF_BPF_STATS``: ``W/P`` (bpf_stats on for W seconds out of every P, the first
#: window at the start of counting), ``always`` or ``off``.
STATS_ENV = "CMAPROF_BPF_STATS"
DEFAULT_SAMPLING = (1.0, 10.0)


@dataclass
class StatsSampler:
    """bpf_stats in short windows instead of for the whole recording.

    With ``kernel.bpf_stats_enabled`` on, the kernel reads the clock twice around every
    run of every BPF program on the machine (``__bpf_prog_run()`` with
    ``bpf_stats_enabled_key``), ours and everybody else's (``make bench`` measures that
    cost per event). So the run time per event is measured in windows of
    ``window_s`` every ``period_s`` (``BPF_ENABLE_STATS`` fds, opened and closed), and
    ``run_cnt``/``run_time_ns`` in the metadata cover those windows only; the cube's
    own counts cover the whole recording.

    :param window_s: seconds with bpf_stats on per period; ``period_s`` 0: always on;
        ``window_s`` 0: never.
    """

    window_s: float = DEFAULT_SAMPLING[0]
    period_s: float = DEFAULT_SAMPLING[1]
    fd: int | None = None
    windows: int = 0
    on_ns: int = 0
    _opened_ns: int = 0
    _next_ns: int = 0
    unsupported: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> StatsSampler:
        """The sampling ``CMAPROF_BPF_STATS`` asks for (default 1 s every 10 s)."""
        text = os.environ.get(STATS_ENV, "").strip()
        if not text:
            return cls()
        if text == "always":
            return cls(window_s=1.0, period_s=0.0)
        if text == "off":
            return cls(window_s=0.0)
        window, _, period = text.partition("/")
        return cls(window_s=float(window), period_s=float(period or 0))

    @property
    def mode(self) -> str:
        if not self.window_s:
            return "off"
        return "always" if not self.period_s else "sampled"

    def _open(self, now: int) -> None:
        if self.fd is None and not self.unsupported:
            self.fd = enable_stats()
            if self.fd is None:
                self.unsupported = True
                self.notes.append("BPF_ENABLE_STATS refused: run time not measured")
                return
            self._opened_ns = now
            self.windows += 1

    def _close(self, now: int) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            self.on_ns += now - self._opened_ns

    def start(self, now: int | None = None) -> None:
        """Counting starts: the first window opens (unless ``off``)."""
        now = time.monotonic_ns() if now is None else now
        if self.mode != "off":
            self._open(now)
            self._next_ns = now + int(self.period_s * 1e9)

    def tick(self, now: int | None = None) -> None:
        """Open or close a window when its time has come (called from the poll loop)."""
        if self.mode != "sampled":
            return
        now = time.monotonic_ns() if now is None else now
        if self.fd is not None and now - self._opened_ns >= self.window_s * 1e9:
            self._close(now)
        if self.fd is None and now >= self._next_ns:
            self._open(now)
            self._next_ns += int(self.period_s * 1e9)
            while self._next_ns <= now:  # a stalled loop skips windows, never bunches them
                self._next_ns += int(self.period_s * 1e9)

    def stop(self, now: int | None = None) -> None:
        self._close(time.monotonic_ns() if now is None else now)

    def as_metadata(self) -> dict[str, Any]:
        try:  # read after our windows closed: 1 means another holder kept it on
            sysctl = Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()
        except OSError:
            sysctl = None
        return {
            "mode": self.mode,
            "window_s": self.window_s,
            "period_s": self.period_s,
            "windows": self.windows,
            "stats_on_s": self.on_ns / 1e9,
            "sysctl_at_end": sysctl,
            "note": "bpf_stats run_cnt/run_time_ns cover the windows only",
            **({"notes": self.notes} if self.notes else {}),
        }
