"""Doctor checks of the process and the kernel's BPF policy: root and capabilities,
BCC's bindings, BTF, ``kernel.bpf_stats_enabled``, lockdown and ``kptr_restrict``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from cmaprof.collectors.doctor import files
from cmaprof.collectors.doctor.check import FAIL, OK, WARN, Check

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


_CAP_NAMES = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}


MOUNT_SECURITYFS = "mount -t securityfs securityfs /sys/kernel/security"


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
    status = files.read(root, "/proc/self/status") or ""
    m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.MULTILINE)
    if not m:
        return Check(name, WARN, "euid 0, but CapEff in /proc/self/status is unreadable", "", True)
    capeff = int(m.group(1), 16)
    last = files.read(root, "/proc/sys/kernel/cap_last_cap")
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


def check_btf(root: Path) -> Check:
    """Kernel BTF (``/sys/kernel/btf/vmlinux``)."""
    p = root / "sys/kernel/btf/vmlinux"
    if files.exists(p):
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
    text = files.read(root, "/proc/sys/kernel/bpf_stats_enabled")
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
    text = files.read(root, "/sys/kernel/security/lockdown")
    if text is None:
        sec = files.listdir(root / "sys/kernel/security")
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
    text = files.read(root, "/proc/sys/kernel/kptr_restrict")
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
