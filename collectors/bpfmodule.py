"""What every recording says about the BPF module itself: drops and program stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Indexes of the per-CPU ``drops`` array (probes/events.h DROP_*).
DROP_NAMES = (
    "page_alloc_cube_full",
    "page_alloc_fail_table_full",
    "page_read_failed",
    "pfn_outside_spans",
    "bulk_table_full",
    "cma_ringbuf_full",
    "cma_inflight_full",
    "migrate_table_full",
)


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
