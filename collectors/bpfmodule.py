"""What every recording says about the BPF module itself: drops and program stats."""

from __future__ import annotations

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


_SYS_BPF = 321  # x86_64
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
    fd = libc.syscall(_SYS_BPF, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    return fd if fd >= 0 else None
