"""``cmaprof doctor``: what this machine can record, and how to fix what it cannot.

Every check reads files below ``root`` (``root/proc/...``, ``root/sys/...``,
``root/lib/modules/...``), following symbolic links inside ``root`` as a chroot would,
so tests can build a fake machine in a directory. The three facts that only the live
system can give (effective uid, whether ``bcc`` imports, the kernel release) come from
small functions that callers may replace.

A :class:`Check` is ``ok``, ``warn`` (recording works, something is lost or unknown)
or ``fail``; ``required`` marks checks without which recording is impossible, so
:func:`recording_possible` is "no required check failed". Features are detected by
presence (tracepoint directories, files), never by kernel version.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType

from cmaprof.collectors import procfs

OK, WARN, FAIL = "ok", "warn", "fail"

#: Names of the checks, in the order :func:`run_checks` returns them.
CHECK_NAMES = (
    "root",
    "bcc",
    "headers",
    "tracefs",
    "events/kmem",
    "events/cma",
    "events/migrate",
    "events/page_isolation",
    "events/compaction",
    "cma_areas",
    "btf",
    "bpf_stats",
    "lockdown",
    "kptr_restrict",
    "kprobes",
    "raw_tracepoint",
    "other_tracers",
)

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
_CAP_NAMES = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
MOUNT_TRACEFS = "mount -t tracefs nodev /sys/kernel/tracing"
MOUNT_DEBUGFS = "mount -t debugfs nodev /sys/kernel/debug"
MOUNT_SECURITYFS = "mount -t securityfs securityfs /sys/kernel/security"


@dataclass
class Check:
    """One line of the doctor's report.

    :param name: one of :data:`CHECK_NAMES`.
    :param status: ``"ok"``, ``"warn"`` or ``"fail"``.
    :param detail: what was found (and, when something is missing, what is lost).
    :param fix: a command or action that fixes a warn/fail; empty when there is none.
    :param required: recording is impossible while this check fails.
    """

    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False


# --- reading files below root ------------------------------------------------------


def _resolve(root: Path, path: str) -> tuple[Path, str]:
    """``path`` (absolute, as seen inside ``root``) with symlinks resolved inside ``root``.

    :returns: the host path to open and the path as seen inside ``root``. Absolute link
        targets restart at ``root``, as under chroot; a loop stops after 40 links.
    """
    todo = [p for p in PurePosixPath(path).parts if p != "/"]
    cur: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if cur:
                cur.pop()
            continue
        host = root.joinpath(*cur, part)
        try:
            is_link = host.is_symlink()
        except OSError:
            is_link = False
        if is_link and hops < 40:
            hops += 1
            target = os.readlink(host)
            tparts = list(PurePosixPath(target).parts)
            if target.startswith("/"):
                cur = []
                tparts = tparts[1:]
            todo = tparts + todo
            continue
        cur.append(part)
    return root.joinpath(*cur), "/" + "/".join(cur)


def _read(root: Path, path: str) -> str | None:
    try:
        return _resolve(root, path)[0].read_text(errors="replace")
    except OSError:
        return None


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:
        return False


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:
        return False


def _listdir(p: Path) -> list[str] | None:
    """Entry names of directory ``p``; None when it cannot be read (absent, not root)."""
    try:
        return sorted(e.name for e in p.iterdir())
    except OSError:
        return None


def _readable(p: Path) -> bool:
    return os.access(p, os.R_OK | os.X_OK)


# --- the checks --------------------------------------------------------------------


def check_root(root: Path, euid: int) -> Check:
    """Effective uid 0 and the capabilities BPF tracing needs (``CapEff`` of
    ``/proc/self/status``); CAP_BPF and CAP_PERFMON are required where the kernel has them
    (``/proc/sys/kernel/cap_last_cap`` >= 39, Linux 5.8 and later)."""
    name = "root"
    if euid != 0:
        return Check(
            name,
            FAIL,
            f"effective uid {euid}: loading BPF programs and writing tracefs need root",
            "run as root, e.g. sudo cmaprof ...",
            True,
        )
    status = _read(root, "/proc/self/status") or ""
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.MULTILINE)
    if not m:
        return Check(name, WARN, "euid 0, but CapEff in /proc/self/status is unreadable", "", True)
    capeff = int(m.group(1), 16)
    last = _read(root, "/proc/sys/kernel/cap_last_cap")
    last_cap = int(last) if last and last.strip().isdigit() else CAP_BPF
    wanted = [c for c in (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN) if c <= last_cap]
    missing = [_CAP_NAMES[c] for c in wanted if not capeff >> c & 1]
    if missing:
        return Check(
            name,
            FAIL,
            f"euid 0 but CapEff {capeff:#x} lacks {', '.join(missing)} "
            f"(a container or a capability-dropping wrapper?)",
            "run on the host, or in a container with --privileged (or "
            "--cap-add SYS_ADMIN,BPF,PERFMON)",
            True,
        )
    return Check(
        name, OK, f"euid 0, CapEff has {', '.join(_CAP_NAMES[c] for c in wanted)}", "", True
    )


def check_bcc(import_bcc: Callable[[], ModuleType]) -> Check:
    """BCC's Python bindings import, and are BCC (not the PyPI package called bcc)."""
    from cmaprof.collectors import bccload
    from cmaprof.errors import EnvironmentProblem

    try:
        bcc = import_bcc()
    except bccload.BccProblem as exc:
        return Check("bcc", FAIL, exc.problem, exc.fix, True)
    except EnvironmentProblem as exc:
        return Check("bcc", FAIL, str(exc), "", True)
    return Check("bcc", OK, bccload.describe(bcc), "", True)


_UTS = re.compile(r'^#define\s+UTS_RELEASE\s+"([^"]+)"', re.MULTILINE)
_VER = re.compile(r"^#define\s+LINUX_VERSION_(MAJOR|PATCHLEVEL|CODE)\s+(\d+)", re.MULTILINE)


def _major_minor(release: str) -> str:
    m = re.match(r"(\d+)\.(\d+)", release)
    return f"{m.group(1)}.{m.group(2)}" if m else release


def _headers_version(root: Path, tree: str) -> tuple[str | None, str | None]:
    """(UTS release, "major.minor") of the configured headers tree at ``tree``."""
    uts_text = _read(root, f"{tree}/include/generated/utsrelease.h") or ""
    m = _UTS.search(uts_text)
    uts = m.group(1) if m else None
    ver_text = _read(root, f"{tree}/include/generated/uapi/linux/version.h") or ""
    fields = {k: int(v) for k, v in _VER.findall(ver_text)}
    if "MAJOR" in fields and "PATCHLEVEL" in fields:
        mm: str | None = f"{fields['MAJOR']}.{fields['PATCHLEVEL']}"
    elif "CODE" in fields:
        mm = f"{fields['CODE'] >> 16}.{(fields['CODE'] >> 8) & 0xFF}"
    else:
        mm = _major_minor(uts) if uts else None
    return uts, mm


def check_headers(root: Path, release: str, environ: Mapping[str, str]) -> Check:
    """The kernel headers BCC will compile against, chosen as BCC's loader does.

    BCC uses ``$BCC_KERNEL_SOURCE``, else ``/lib/modules/<release>/source`` when both
    ``build`` and ``source`` are directories, else ``build``; when that tree has no
    ``include/linux/kconfig.h`` it extracts ``/sys/kernel/kheaders.tar.xz``
    (CONFIG_IKHEADERS, loading module ``kheaders`` when needed).
    """
    name = "headers"
    kdir = f"/lib/modules/{release}"
    build_host, build_in = _resolve(root, f"{kdir}/build")
    source_host, source_in = _resolve(root, f"{kdir}/source")
    env_src = environ.get("BCC_KERNEL_SOURCE")
    if env_src:
        kpath_host = _resolve(root, env_src)[0]
        via = f"BCC_KERNEL_SOURCE={env_src}"
    elif _is_dir(build_host) and _is_dir(source_host):
        kpath_host = source_host
        via = f"{kdir}/build -> {build_in}, source -> {source_in}"
    else:
        kpath_host = build_host
        via = f"{kdir}/build -> {build_in}"
    kheaders = _exists(root / "sys/kernel/kheaders.tar.xz")
    kheaders_mod = any(
        _exists(root / f"lib/modules/{release}/kernel/kernel/kheaders.ko{s}")
        for s in ("", ".xz", ".zst", ".gz")
    )
    own_headers = f"linux-headers-{release}"
    ikheaders_fix = (
        f"install the running kernel's headers ({own_headers}) or boot a kernel "
        f"built with CONFIG_IKHEADERS"
    )

    if _is_file(kpath_host / "include/linux/kconfig.h"):
        tree = env_src or f"{kdir}/build"
        # BCC's compile needs more than kconfig.h; a tree without these makes the
        # compile fail, and BCC 0.26 then crashes (SIGSEGV in BPF()) instead of raising.
        gen_host = kpath_host if env_src else build_host
        missing = [
            rel
            for base, rel in (
                (kpath_host, "include/linux/types.h"),
                (gen_host, "include/generated/autoconf.h"),
            )
            if not _is_file(base / rel)
        ]
        if missing:
            return Check(
                name,
                FAIL,
                f"incomplete kernel headers at {via}: no {' and no '.join(missing)}; "
                f"BCC cannot compile against them",
                f"reinstall them ({own_headers}, or sudo make setup), or unset "
                f"BCC_KERNEL_SOURCE if it points there"
                if env_src
                else f"reinstall them ({own_headers}, or sudo make setup)",
                True,
            )
        uts, mm = _headers_version(root, tree)
        if uts == release:
            return Check(name, OK, f"headers of the running kernel {release} ({via})", "", True)
        distro = (
            "Debian "
            if build_in.startswith("/usr/src/linux-headers-")
            and _exists(root / "etc/debian_version")
            else ""
        )
        if uts is None:
            return Check(
                name,
                WARN,
                f"headers at {via} of unknown version (no "
                f"include/generated/utsrelease.h): struct layouts and page-flag "
                f"shifts may differ from the running kernel {release}",
                ikheaders_fix,
                True,
            )
        detail = (
            f"LINKED FALLBACK: {distro}{mm} headers for a {_major_minor(release)} "
            f"kernel ({uts} for {release}, build -> {build_in}): struct layouts and "
            f"page-flag shifts may differ; cmaprof validates what it reads from "
            f"struct page at start-up"
        )
        fix = ikheaders_fix
        if kheaders and not env_src:
            detail += (
                "; /sys/kernel/kheaders.tar.xz matches the kernel but BCC prefers "
                "the build/ headers"
            )
            fix = (
                f"remove the links {kdir}/build and {kdir}/source so BCC uses "
                f"/sys/kernel/kheaders.tar.xz"
            )
        return Check(name, WARN, detail, fix, True)

    build_link = root / kdir.lstrip("/") / "build"
    if env_src or _exists(build_host):
        lost = f"{via} has no include/linux/kconfig.h"
    elif build_link.is_symlink():
        lost = f"{kdir}/build -> {build_in}, which does not exist"
    else:
        lost = f"no {kdir}/build"
    if kheaders:
        return Check(
            name,
            OK,
            f"kheaders: /sys/kernel/kheaders.tar.xz of the running kernel "
            f"(CONFIG_IKHEADERS), which BCC extracts to /tmp ({lost})",
            "",
            True,
        )
    if kheaders_mod:
        return Check(
            name,
            OK,
            f"kheaders module of the running kernel (BCC loads it with modprobe kheaders; {lost})",
            "",
            True,
        )
    return Check(
        name,
        FAIL,
        f"no kernel headers for {release}: {lost} and no /sys/kernel/kheaders.tar.xz",
        f"sudo make setup (installs {own_headers} or links Debian's newest "
        f"headers), or boot a kernel with CONFIG_IKHEADERS",
        True,
    )


def _find_tracefs(root: Path) -> tuple[str | None, str]:
    """(tracefs path inside root, or None; why it was not found)."""
    unreadable = []
    for d in TRACEFS_DIRS:
        host = root / d.lstrip("/")
        if _is_dir(host / "events"):
            return d, ""
        if _exists(host) and not _readable(host):
            unreadable.append(d)
    if unreadable:
        return None, f"{unreadable[0]} is not readable (not root)"
    return None, "tracefs is not mounted"


def check_tracefs(root: Path) -> Check:
    """tracefs is mounted (a directory holding ``events/``)."""
    tfs, why = _find_tracefs(root)
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


_GROUPS = {
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
    g = _GROUPS[group]
    name = f"events/{group}"
    if tfs is None:
        return Check(name, WARN, f"cannot tell: {why}", "see the tracefs row", g.required)
    gdir = root / tfs.lstrip("/") / "events" / group
    events = _listdir(gdir)
    if events is None:
        return Check(name, FAIL if g.required else WARN, f"absent: {g.lost}", g.fix, g.required)
    have = [e for e in events if _is_file(gdir / e / "format")]
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
            fmt = _read(root, f"{tfs}/events/cma/cma_alloc_finish/format") or ""
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
        dbg = _listdir(root / "sys/kernel/debug")
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


def check_btf(root: Path) -> Check:
    """Kernel BTF (``/sys/kernel/btf/vmlinux``)."""
    p = root / "sys/kernel/btf/vmlinux"
    if _exists(p):
        try:
            size = f" ({p.stat().st_size >> 10} KiB)"
        except OSError:
            size = ""
        return Check("btf", OK, f"/sys/kernel/btf/vmlinux{size}")
    return Check(
        "btf",
        WARN,
        "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF): BCC works "
        "from headers alone; BTF-typed programs are unavailable",
        "boot a kernel with CONFIG_DEBUG_INFO_BTF",
    )


def check_bpf_stats(root: Path) -> Check:
    """``kernel.bpf_stats_enabled``: run time of each BPF program (probe overhead)."""
    text = _read(root, "/proc/sys/kernel/bpf_stats_enabled")
    if text is None:
        return Check(
            "bpf_stats",
            WARN,
            "no /proc/sys/kernel/bpf_stats_enabled: the run time "
            "of the probes (their overhead) cannot be measured",
        )
    if text.strip() == "0":
        return Check(
            "bpf_stats",
            WARN,
            "off (0): cmaprof enables it while recording, to "
            "measure probe run time, and restores it afterwards",
        )
    return Check("bpf_stats", OK, f"on ({text.strip()}): probe run time is measured")


def check_lockdown(root: Path, cmdline: str) -> Check:
    """Kernel lockdown (``/sys/kernel/security/lockdown``).

    ``confidentiality`` denies ``bpf_probe_read_kernel()`` (LOCKDOWN_BPF_READ_KERNEL),
    tracefs and kprobes: recording is impossible. ``integrity`` denies less: of what
    cmaprof uses only debugfs writes (LOCKDOWN_DEBUGFS), such as CMA's ``alloc`` file.
    """
    name = "lockdown"
    text = _read(root, "/sys/kernel/security/lockdown")
    if text is None:
        sec = _listdir(root / "sys/kernel/security")
        if sec:
            return Check(name, OK, "no lockdown LSM in this kernel", "", True)
        m = re.search(r"(?:^|\s)lockdown=(\S+)", cmdline)
        if m:
            mode = m.group(1)
        else:
            return Check(
                name,
                WARN,
                "unknown: securityfs is not mounted, so the lockdown "
                "mode cannot be read (confidentiality would stop recording)",
                f"{MOUNT_SECURITYFS} (or sudo make setup)",
                True,
            )
    else:
        m = re.search(r"\[(\w+)\]", text)
        mode = m.group(1) if m else text.strip()
    if mode == "confidentiality":
        return Check(
            name,
            FAIL,
            "confidentiality: blocks bpf_probe_read_kernel(), tracefs and kprobes",
            "boot with lockdown=none (and Secure Boot off, or mokutil --disable-validation)",
            True,
        )
    if mode == "integrity":
        return Check(
            name,
            WARN,
            "integrity: BPF reads of kernel memory work; debugfs "
            "writes (CMA's alloc/free stress files) are denied",
            "boot with lockdown=none to use debugfs CMA stress",
            True,
        )
    return Check(name, OK, mode, "", True)


def check_kptr_restrict(root: Path) -> Check:
    """``kernel.kptr_restrict``: whether ``/proc/kallsyms`` shows addresses.

    cmaprof reads only symbol *names* from kallsyms (kprobe targets, the bulk allocator's
    name, raw-tracepoint support), never addresses, and prints no kernel address, so
    every value works (measured on the host with 2: ``record`` runs unchanged). What a
    restricted value hides is only what other tools need (BCC's ``ksym()``
    symbolisation, ``BPF.support_raw_tracepoint()``, which look addresses up).
    """
    name = "kptr_restrict"
    text = _read(root, "/proc/sys/kernel/kptr_restrict")
    if text is None:
        return Check(name, OK, "absent (no kernel.kptr_restrict): addresses are not hidden")
    value = text.strip()
    meaning = {
        "0": "kallsyms shows addresses",
        "1": "kallsyms addresses hidden from users without CAP_SYSLOG (root sees them)",
        "2": "kallsyms addresses hidden from everyone, root included",
    }.get(value, "unknown value")
    return Check(
        name,
        OK,
        f"{value}: {meaning}; cmaprof needs only symbol names and prints no kernel "
        f"address, so recording works at any value",
    )


def check_kprobes(root: Path, tfs: str | None, why: str = "tracefs is not mounted") -> Check:
    """kprobe support (``/sys/kernel/debug/kprobes`` or ``kprobe_events`` in tracefs)."""
    places = ["/sys/kernel/debug/kprobes"] + [f"{t}/kprobe_events" for t in TRACEFS_DIRS]
    for p in places:
        if _exists(root / p.lstrip("/")):
            return Check("kprobes", OK, f"{p} present")
    if tfs is None and not _listdir(root / "sys/kernel/debug"):
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
    text = _read(root, "/proc/kallsyms")
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
    for name in sorted(_listdir(base / "instances") or []):
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


def _comm(root: Path, pid: int) -> str:
    return (_read(root, f"/proc/{pid}/comm") or "?").strip()


# --- running and rendering ---------------------------------------------------------


def _guard(name: str, required: bool, fn: Callable[[], Check]) -> Check:
    """Run one check; an unexpected error becomes a row instead of a crash."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - doctor must always print its table
        return Check(
            name,
            FAIL if required else WARN,
            f"doctor could not check this: {type(exc).__name__}: {exc}",
            "report this with the output of cmaprof doctor --format json",
            required,
        )


def _release() -> str:
    return os.uname().release


def run_checks(
    root: Path = Path("/"),
    *,
    euid: Callable[[], int] = os.geteuid,
    import_bcc: Callable[[], ModuleType] | None = None,
    release: Callable[[], str] = _release,
    page_size: int | None = None,
    environ: Mapping[str, str] | None = None,
    attachments: Callable[[], list[dict] | None] = bpftool_attachments,
) -> list[Check]:
    """Run every check, in the order of :data:`CHECK_NAMES`.

    :param root: directory standing for ``/``: all files are read below it.
    :param euid: returns the effective uid (``os.geteuid``).
    :param import_bcc: returns the ``bcc`` module or raises
        :class:`~cmaprof.collectors.bccload.BccProblem` (default:
        :func:`cmaprof.collectors.bccload.import_bcc`).
    :param release: returns the running kernel release (``uname -r``).
    :param page_size: bytes per page, for CMA area sizes (default: this machine's).
    :param environ: environment for ``BCC_KERNEL_SOURCE`` (default: ``os.environ``).
    :param attachments: BPF programs attached to tracepoints (``bpftool perf list``).
    """
    if import_bcc is None:
        from cmaprof.collectors.bccload import import_bcc as default_import

        import_bcc = default_import
    bcc_import = import_bcc
    env = os.environ if environ is None else environ
    psize = page_size or os.sysconf("SC_PAGE_SIZE")
    rel = release()
    tfs, tfs_why = _find_tracefs(root)
    cma_events = tfs is not None and _is_dir(root / tfs.lstrip("/") / "events/cma")
    cmdline = _read(root, "/proc/cmdline") or ""

    todo: list[tuple[str, bool, Callable[[], Check]]] = [
        ("root", True, lambda: check_root(root, euid())),
        ("bcc", True, lambda: check_bcc(bcc_import)),
        ("headers", True, lambda: check_headers(root, rel, env)),
        ("tracefs", True, lambda: check_tracefs(root)),
    ]
    for group, spec in _GROUPS.items():
        todo.append(
            (
                f"events/{group}",
                spec.required,
                functools.partial(check_event_group, root, group, tfs, tfs_why),
            )
        )
    todo += [
        ("cma_areas", False, lambda: check_cma_areas(root, psize, cma_events)),
        ("btf", False, lambda: check_btf(root)),
        ("bpf_stats", False, lambda: check_bpf_stats(root)),
        ("lockdown", True, lambda: check_lockdown(root, cmdline)),
        ("kptr_restrict", False, lambda: check_kptr_restrict(root)),
        ("kprobes", False, lambda: check_kprobes(root, tfs, tfs_why)),
        ("raw_tracepoint", True, lambda: check_raw_tracepoint(root)),
        (
            "other_tracers",
            False,
            lambda: check_other_tracers(root, tfs, attachments(), functools.partial(_comm, root)),
        ),
    ]
    return [_guard(name, req, fn) for name, req, fn in todo]


def check_probes_compile() -> Check:
    """Whether the probes ``record`` would run by default compile and load on this
    kernel (a real compile, cached per kernel and probe set: collectors/compilecheck.py).
    Run on the live machine only, after the other checks passed."""
    from cmaprof.collectors import compilecheck, features, tracefs

    tfs, _ = tracefs.ensure_mounted()
    names = features.available_probes(tfs)
    failure = compilecheck.check(names, features.defines(tfs, names))
    if failure is None:
        return Check("probes", OK, f"{', '.join(names)} compile and load here", "", True)
    left = compilecheck.dependents(failure.probe, names)
    lost = (
        f"; record --skip-unavailable would leave out {', '.join(left)}"
        if left and failure.probe != "page_alloc"
        else ""
    )
    who = f"probe {failure.probe}" if failure.probe else "the probes"
    return Check(
        "probes",
        FAIL,
        f"{who} does not compile or load on this kernel: {failure.error}{lost}",
        f"record with --skip-unavailable (or --probes without {failure.probe}); "
        f"cmaprof probes dump {' '.join(names)} prints the exact source"
        if left and failure.probe != "page_alloc"
        else f"cmaprof probes dump {' '.join(names)} prints the exact source; report it",
        True,
    )


def recording_possible(checks: list[Check]) -> bool:
    """True when no required check failed (warnings do not stop recording)."""
    return not any(c.required and c.status == FAIL for c in checks)


def checks_as_json(checks: list[Check]) -> list[dict]:
    """The checks as JSON-ready dicts (``name``, ``status``, ``detail``, ``fix``,
    ``required``)."""
    return [asdict(c) for c in checks]


_NAME_W = 22
_STATUS_W = 4


def table_checks(checks: list[Check], width: int = 80) -> str:
    """Fixed-width text table of the checks, no line wider than ``width`` columns.

    One row per check (``*`` after the name marks a required check; WARN and FAIL in
    capitals), the detail wrapped under its column, the fix on a continuation line for
    rows that are not ok, then a one-line verdict.
    """
    indent = _NAME_W + 1 + _STATUS_W + 2
    text_w = width - indent
    pad = " " * indent
    lines = [
        f"{'check':<{_NAME_W}} {'stat':<{_STATUS_W}}  detail",
        f"{'-' * _NAME_W} {'-' * _STATUS_W}  {'-' * text_w}",
    ]
    for c in checks:
        label = c.name + ("*" if c.required else "")
        status = c.status if c.status == OK else c.status.upper()
        wrapped = textwrap.wrap(c.detail, text_w, break_on_hyphens=False) or [""]
        lines.append(f"{label:<{_NAME_W}} {status:<{_STATUS_W}}  {wrapped[0]}".rstrip())
        lines += [pad + w for w in wrapped[1:]]
        if c.fix and c.status != OK:
            lines += [
                pad + w
                for w in textwrap.wrap(
                    f"fix: {c.fix}", text_w, subsequent_indent="     ", break_on_hyphens=False
                )
            ]
    failed = [c.name for c in checks if c.required and c.status == FAIL]
    warned = sum(c.status == WARN for c in checks)
    lines.append("")
    lines.append("* required for recording")
    if failed:
        verdict = f"recording: NOT possible: {', '.join(failed)} failed"
    else:
        verdict = f"recording: possible ({warned} warning{'s' if warned != 1 else ''})"
    lines += textwrap.wrap(verdict, width, subsequent_indent="  ")
    return "\n".join(lines)


# --- record's preflight ------------------------------------------------------------


def problem_message(check: Check) -> str:
    """One line naming a failed check, what was found and the fix (``record``'s error)."""
    text = f"{check.name}: {check.detail}"
    return f"{text}; fix: {check.fix}" if check.fix else text


def preflight(checks: list[Check] | None = None) -> list[Check]:
    """What ``cmaprof record`` runs before it creates any file.

    :param checks: the doctor's checks (default: :func:`run_checks` on this machine).
    :returns: the checks that warn (recording works, something is lost), for the
        recording's metadata.
    :raises EnvironmentProblem: a required check failed; the message is that check's
        doctor row (problem and fix), so ``record`` and ``doctor`` say the same thing.
    """
    from cmaprof.errors import EnvironmentProblem

    if checks is None:
        checks = run_checks()
    failed = [c for c in checks if c.required and c.status == FAIL]
    if failed:
        more = f" (and {len(failed) - 1} more: run cmaprof doctor)" if len(failed) > 1 else ""
        raise EnvironmentProblem(problem_message(failed[0]) + more)
    return [c for c in checks if c.status == WARN]
