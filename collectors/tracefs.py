"""Finding tracefs, mounting it (and debugfs) when a root user has not, and saving
the ``format`` files of the event groups cmaprof reads.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from cmaprof.errors import EnvironmentProblem

TRACEFS_CANDIDATES = ("sys/kernel/tracing", "sys/kernel/debug/tracing")
#: Event groups whose format files every recording keeps (those the kernel has).
GROUPS = ("kmem", "cma", "migrate", "page_isolation", "compaction")


def find(root: Path = Path("/")) -> Path | None:
    """The mounted tracefs directory (one holding ``events/``), or None."""
    for rel in TRACEFS_CANDIDATES:
        d = root / rel
        if (d / "events").is_dir():
            return d
    return None


def _mount(fstype: str, target: str) -> bool:
    try:
        subprocess.run(
            ["mount", "-t", fstype, "nodev", target],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def ensure_mounted() -> tuple[Path, list[str]]:
    """tracefs, mounting tracefs and debugfs first where they are missing.

    :returns: the tracefs directory and a list of what was mounted (for the metadata).
    """
    mounted: list[str] = []
    debugfs = Path("/sys/kernel/debug")
    if debugfs.is_dir() and not any(debugfs.iterdir()) and _mount("debugfs", str(debugfs)):
        mounted.append("debugfs on /sys/kernel/debug")
    tfs = find()
    if tfs is None and _mount("tracefs", "/sys/kernel/tracing"):
        mounted.append("tracefs on /sys/kernel/tracing")
        tfs = find()
    if tfs is None:
        raise EnvironmentProblem(
            "tracefs is not mounted and could not be mounted: run "
            "`mount -t tracefs nodev /sys/kernel/tracing` (kernel needs CONFIG_FTRACE or "
            "CONFIG_TRACING)"
        )
    return tfs, mounted


def has_event(tfs: Path, event: str) -> bool:
    """Whether ``system/event`` exists in tracefs (presence detection, never versions)."""
    return (tfs / "events" / event / "format").is_file()


def require_events(tfs: Path, events: tuple[str, ...], probe: str) -> None:
    missing = [e for e in events if not has_event(tfs, e)]
    if missing:
        groups = sorted({e.split("/")[0] for e in missing})
        have = sorted(g for g in GROUPS if (tfs / "events" / g).is_dir())
        raise EnvironmentProblem(
            f"probe {probe} needs tracepoint(s) {', '.join(missing)}, which this kernel lacks "
            f"(no events/{'/'.join(groups)} in {tfs}); it has: {', '.join(have) or 'none'}; "
            f"run `cmaprof doctor`"
        )


def format_files(tfs: Path) -> dict[str, Path]:
    """``system/event`` -> path of its format file, for every event of :data:`GROUPS`."""
    out: dict[str, Path] = {}
    for group in GROUPS:
        gdir = tfs / "events" / group
        if not gdir.is_dir():
            continue
        for ev in sorted(gdir.iterdir()):
            if (ev / "format").is_file():
                out[f"{group}/{ev.name}"] = ev / "format"
    return out
