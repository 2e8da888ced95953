"""Doctor checks of tracing: tracefs, the tracepoint groups the probes use, CMA areas
in debugfs, kprobes, raw tracepoints, and other tracers attached to the same events."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cmaprof.collectors import procfs
from cmaprof.collectors.doctor import files
from cmaprof.collectors.doctor.check import FAIL, OK, WARN, Check

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


MOUNT_TRACEFS = "mount -t tracefs nodev /sys/kernel/tracing"


MOUNT_DEBUGFS = "mount -t debugfs nodev /sys/kernel/debug"


def find_tracefs(root: Path) -> tuple[str | None, str]:
    """(tracefs path inside root, or None; why it was not found)."""
    unreadable = []
    for d in TRACEFS_DIRS:
        host = root / d.lstrip("/")
        if files.is_dir(host / "events"):
            return d, ""
        if files.exists(host) and not files.readable(host):
            unreadable.append(d)
    if unreadable:
        return None, f"{unreadable[0]} is not readable (not root)"
    return None, "tracefs is not mounted"


def check_tracefs(root: Path) -> Check:
    """tracefs is mounted (a directory holding ``events/``)."""
    tfs, why = find_tracefs(root)
    if tfs is None and "not readable" in why:
        return Check("tracefs", FAIL, f"cannot tell: {why}", "run as root", True)
    if tfs is None:
        return Check(
            "tracefs",
            FAIL,
            "tracefs is not mounted: no events/ in "
            "/sys/kernel/tracing or /sys/kernel/debug/tracing",
            f"{MOUNT_TRACEFS} (or sudo make setup)",
            True,
        )
    return Check("tracefs", OK, f"mounted at {tfs}", "", True)


@dataclass(frozen=True)
class _Group:
    required: bool
    key_events: tuple[str, ...]
    shown: tuple[str, ...]
    lost: str
    fix: str


EVENT_GROUPS = {
    "kmem": _Group(
        True,
        ("mm_page_alloc",),
        ("mm_page_alloc", "mm_page_free", "mm_page_alloc_extfrag"),
        "no kmem:mm_page_alloc: nothing to record (CONFIG_TRACEPOINTS?)",
        "boot a kernel with CONFIG_TRACEPOINTS (any distribution kernel)",
    ),
    "cma": _Group(
        False,
        ("cma_alloc_start", "cma_alloc_finish", "cma_alloc"),
        (
            "cma_alloc_start",
            "cma_alloc_finish",
            "cma_alloc_busy_retry",
            "cma_release",
            "cma_alloc",
            "cma_alloc_info",
        ),
        "kernel has no CONFIG_CMA: no cma_alloc tracing",
        "boot a kernel with CONFIG_CMA and cma=SIZE (e.g. the VM guest)",
    ),
    "migrate": _Group(
        False,
        ("mm_migrate_pages",),
        ("mm_migrate_pages",),
        "no migration counts behind cma_alloc and compaction (CONFIG_MIGRATION)",
        "",
    ),
    "page_isolation": _Group(
        False,
        ("test_pages_isolated",),
        ("test_pages_isolated",),
        "no first non-isolated pfn when cma_alloc fails (CONFIG_MEMORY_ISOLATION)",
        "",
    ),
    "compaction": _Group(
        False,
        ("mm_compaction_begin", "mm_compaction_end"),
        ("mm_compaction_begin", "mm_compaction_end"),
        "no compaction side effects (CONFIG_COMPACTION)",
        "",
    ),
}


def check_event_group(
    root: Path, group: str, tfs: str | None, why: str = "tracefs is not mounted"
) -> Check:
    """Tracepoints of one event group, and what is lost without them.

    :param tfs: the tracefs directory inside ``root``; None when not found, ``why``.
    """
    g = EVENT_GROUPS[group]
    name = f"events/{group}"
    if tfs is None:
        return Check(name, WARN, f"cannot tell: {why}", "see the tracefs row", g.required)
    gdir = root / tfs.lstrip("/") / "events" / group
    events = files.listdir(gdir)
    if events is None:
        return Check(name, FAIL if g.required else WARN, f"absent: {g.lost}", g.fix, g.required)
    have = [e for e in events if files.is_file(gdir / e / "format")]
    if not any(e in have for e in g.key_events):
        return Check(
            name,
            FAIL if g.required else WARN,
            f"events/{group} lacks {' and '.join(g.key_events)}: {g.lost}",
            g.fix,
            g.required,
        )
    shown = [e for e in g.shown if e in have]
    others = len(have) - len(shown)
    detail = ", ".join(shown) + (f" (+{others} more)" if others else "")
    if group == "cma":
        if "cma_alloc_start" in have:
            fmt = files.read(root, f"{tfs}/events/cma/cma_alloc_finish/format") or ""
            detail += (
                "; cma_alloc_finish has errorno"
                if re.search(r"\berrorno\b", fmt)
                else "; cma_alloc_finish has no errorno (failures from the pfn)"
            )
        else:
            detail += "; old events without cma_alloc_start: latency needs kprobes"
    return Check(name, OK, detail, "", g.required)


def _size(pages: int, page_size: int) -> str:
    nbytes = pages * page_size
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift} {unit}"
    return f"{nbytes} B"


def check_cma_areas(root: Path, page_size: int, cma_events: bool) -> Check:
    """CMA areas: names and sizes (debugfs ``cma/<area>/{base_pfn,count}``, sysfs
    ``/sys/kernel/mm/cma/<area>``)."""
    name = "cma_areas"
    try:
        areas = procfs.read_cma_areas(root)
    except OSError as exc:
        return Check(
            name,
            WARN,
            f"cannot read the CMA areas: {exc.strerror}: {exc.filename} (not root?)",
            "run as root",
        )
    if not areas:
        dbg = files.listdir(root / "sys/kernel/debug")
        if cma_events and not dbg:
            return Check(
                name,
                WARN,
                "the kernel has cma events but no CMA area is visible: "
                "debugfs is not mounted (or not readable)",
                f"{MOUNT_DEBUGFS} (or sudo make setup)",
            )
        return Check(
            name,
            WARN,
            "no CMA areas (no CONFIG_CMA, or cma=0): CMA placement and "
            "cma_alloc columns will be empty",
            "boot a kernel with CONFIG_CMA and cma=SIZE (e.g. the VM guest)",
        )
    parts = []
    for a in areas:
        if a.count is not None and a.base_pfn is not None:
            parts.append(f"{a.name} {_size(a.count, page_size)} at pfn {a.base_pfn:#x}")
        else:
            parts.append(f"{a.name} (no range)")
    detail = f"{len(areas)} area{'s' if len(areas) > 1 else ''}: " + "; ".join(parts)
    if any(a.end_pfn is None for a in areas):
        return Check(
            name,
            WARN,
            detail + "; pfn ranges need debugfs: without them pages cannot be placed in CMA areas",
            f"{MOUNT_DEBUGFS} (or sudo make setup)",
        )
    return Check(name, OK, detail)


def check_kprobes(root: Path, tfs: str | None, why: str = "tracefs is not mounted") -> Check:
    """kprobe support (``/sys/kernel/debug/kprobes`` or ``kprobe_events`` in tracefs)."""
    places = ["/sys/kernel/debug/kprobes"] + [f"{t}/kprobe_events" for t in TRACEFS_DIRS]
    for p in places:
        if files.exists(root / p.lstrip("/")):
            return Check("kprobes", OK, f"{p} present")
    if tfs is None and not files.listdir(root / "sys/kernel/debug"):
        return Check(
            "kprobes",
            WARN,
            f"cannot tell: {why}, and debugfs is not mounted or not readable",
            f"{MOUNT_TRACEFS}; {MOUNT_DEBUGFS}",
        )
    return Check(
        "kprobes",
        WARN,
        "no kprobes (CONFIG_KPROBES): no cma_alloc latency where "
        "only the old cma_alloc event exists, no kprobe-based probes",
        "boot a kernel with CONFIG_KPROBES",
    )


_RAW_TP_SYMS = re.compile(r"\s(?:bpf_find_raw_tracepoint|bpf_get_raw_tracepoint)$", re.MULTILINE)


def check_raw_tracepoint(root: Path) -> Check:
    """Raw tracepoint BPF programs (Linux 4.17+), found as BCC does: the symbol
    ``bpf_find_raw_tracepoint`` or ``bpf_get_raw_tracepoint`` in ``/proc/kallsyms``."""
    name = "raw_tracepoint"
    text = files.read(root, "/proc/kallsyms")
    if not text:
        return Check(name, WARN, "cannot tell: /proc/kallsyms is not readable", "", True)
    if _RAW_TP_SYMS.search(text):
        return Check(
            name,
            OK,
            "supported (the page_alloc probe uses kmem:mm_page_alloc as a raw tracepoint)",
            "",
            True,
        )
    return Check(
        name,
        FAIL,
        "no raw tracepoint support in kallsyms (needs Linux 4.17+): the "
        "page_alloc probe cannot attach",
        "use a kernel from 4.17 on",
        True,
    )


#: Tracepoints cmaprof's probes use (as bpftool names them: the event name only).
CMAPROF_TRACEPOINTS = frozenset(
    {
        "mm_page_alloc",
        "mm_migrate_pages",
        "mm_migrate_pages_start",
        "cma_alloc_start",
        "cma_alloc_finish",
        "cma_alloc_busy_retry",
        "cma_alloc",
        "cma_release",
        "test_pages_isolated",
    }
)


def bpftool_attachments() -> list[dict] | None:
    """``bpftool perf list``: every BPF program attached through a perf event or a raw
    tracepoint (pid, fd, prog_id, fd_type, tracepoint); None without bpftool."""
    if shutil.which("bpftool") is None:
        return None
    proc = subprocess.run(
        ["bpftool", "--json", "perf", "list"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return None
    out = json.loads(proc.stdout or "[]")
    return out if isinstance(out, list) else None


def _enabled_events(root: Path, tfs: str) -> dict[str, list[str]]:
    """Events enabled in tracefs (``set_event``), at the top level and in each instance."""
    base = root / tfs.lstrip("/")
    places = {"top level": base}
    for name in sorted(files.listdir(base / "instances") or []):
        places[f"instance {name}"] = base / "instances" / name
    out = {}
    for where, d in places.items():
        try:
            events = (d / "set_event").read_text().split()
        except OSError:
            continue
        if events:
            out[where] = events
    return out


def check_other_tracers(
    root: Path, tfs: str | None, attachments: list[dict] | None, comm: Callable[[int], str]
) -> Check:
    """Informational, never a failure: who else traces what cmaprof traces.

    :param attachments: :func:`bpftool_attachments` (None: bpftool missing).
    :param comm: the command name of a pid (``/proc/PID/comm``).
    """
    parts = []
    if tfs is not None:
        enabled = _enabled_events(root, tfs)
        parts += [f"tracefs {where}: {', '.join(ev)}" for where, ev in enabled.items()]
        if not enabled:
            parts.append("no tracefs event enabled (top level or instances)")
    if attachments is None:
        parts.append("bpftool missing: BPF programs on cmaprof's tracepoints not listed")
    else:
        on_ours: dict[tuple[str, str], list[str]] = {}
        for a in attachments:
            tp = a.get("tracepoint")
            if tp in CMAPROF_TRACEPOINTS:
                key = (str(tp), str(a.get("fd_type", "")))
                pid = int(a.get("pid", 0))
                on_ours.setdefault(key, []).append(f"{comm(pid)}[{pid}]")
        for (tp, kind), who in sorted(on_ours.items()):
            parts.append(f"BPF on {tp} ({kind}): {len(who)} by {', '.join(sorted(set(who)))}")
        if not on_ours:
            parts.append("no BPF program on cmaprof's tracepoints")
    return Check("other_tracers", OK, "; ".join(parts))


def task_comm(root: Path, pid: int) -> str:
    return (files.read(root, f"/proc/{pid}/comm") or "?").strip()
