"""What the console says when a guest did not finish: panic, Oops, hang, QEMU failure;
and the boot summary with the presets the kernel did not honour."""

from __future__ import annotations

import re
from pathlib import Path

from cmaprof.guest.launch import LaunchResult
from cmaprof.guest.layout import MIB, PAGE_SIZE, PAGES_PER_MIB, guest_memory_mib, size_in_mib
from cmaprof.guest.options import GuestFailure, VmOptions

_CONSOLE_INTEREST = re.compile(
    r"Kernel panic - not syncing|end Kernel panic|BUG: |Oops|kernel BUG at|"
    r"general protection fault|RIP: |Comm: |sysrq: |watchdog: |blocked for more than|"
    r"Out of memory|qemu-system|virtme-ng-init: .*(?:error|failed|exited)",
)
_PANIC = re.compile(r"Kernel panic - not syncing|end Kernel panic")
_OOPS = re.compile(r"\bOops\b|BUG: |kernel BUG at|general protection fault")


def console_lines(log: Path) -> list[str]:
    """The console log's lines; none when it cannot be read."""
    try:
        return log.read_text(errors="replace").splitlines()
    except OSError:
        return []


def quote(lines: list[str], limit: int = 10) -> str:
    """Up to ``limit`` telling lines (panic, Oops, QEMU errors; else the last), indented."""
    picked = [line.strip() for line in lines if _CONSOLE_INTEREST.search(line)]
    if not picked:
        picked = [line.strip() for line in lines[-limit:] if line.strip()]
    picked = picked[:limit]
    return "\n".join(f"    {line[:200]}" for line in picked)


#: An int3 the kernel did not place: a static key or static call patched by
#: text_poke_bp() while another vCPU ran the old code (seen under TCG only, at random
#: sites: __schedule, sched_clock_cpu, bpf_trace_run4, a driver probe).
TCG_INT3 = "Oops: int3"


def _tcg_int3_hint(lines: list[str]) -> str:
    if not any(TCG_INT3 in line for line in lines):
        return ""
    return (
        "\n  an int3 Oops: under TCG, QEMU's emulation of the kernel's live text patching"
        " (static keys) can run a stale breakpoint; not a cmaprof or mm fault: run again"
    )


def failure(result: LaunchResult, log: Path, opts: VmOptions) -> GuestFailure:
    """Why the guest did not write the command's exit status, quoting the console."""
    lines = [line for line in console_lines(log) if not line.startswith("### cmaprof")]
    keep = f"full console log kept at {log}"
    first = next(
        (i for i, line in enumerate(lines) if _OOPS.search(line) or _PANIC.search(line)), None
    )
    if first is not None and any(_PANIC.search(line) for line in lines):
        return GuestFailure(
            "the guest kernel panicked before the command finished "
            f"(no exit status came back):\n{quote(lines[max(0, first - 3) :])}"
            f"\n  {keep}{_tcg_int3_hint(lines)}"
        )
    if result.timed_out:
        what = "an Oops, then " if first is not None else ""
        tail = lines[first:] if first is not None else lines[-10:]
        return GuestFailure(
            f"the guest did not finish within --timeout {opts.timeout_s:g} s ({what}a hang?); "
            f"QEMU was stopped. Console:\n{quote(tail)}\n  {keep}; raise --timeout if the "
            "command needs longer"
        )
    if first is not None:
        return GuestFailure(
            "the guest kernel oopsed and the command did not finish "
            f"(no exit status came back):\n{quote(lines[max(0, first - 3) :])}"
            f"\n  {keep}"
        )
    if result.boot is None:
        return GuestFailure(
            f"QEMU/virtme-ng stopped (exit status {result.returncode}) before the guest ran "
            f"the command:\n{quote(lines[-15:])}\n  {keep}"
        )
    return GuestFailure(
        "the guest stopped before the command's exit status was written (did the command "
        f"power the guest off, or did the OOM killer end it?):\n{quote(lines[-15:])}\n  {keep}"
    )


def kvm_reason(log: Path) -> str:
    """The console line saying why QEMU could not run under KVM."""
    lines = [
        line.strip()
        for line in console_lines(log)
        if "qemu-system" in line or "kvm" in line.lower()
    ]
    lines = [line for line in lines if not line.startswith("### cmaprof")]
    return lines[0] if lines else "QEMU stopped before the guest started"


def panicked(log: Path) -> bool:
    """Whether the console shows a kernel panic."""
    return any(_PANIC.search(line) for line in console_lines(log))


def notes_after_run(result: LaunchResult, log: Path) -> list[str]:
    """Warnings and hints once the command finished: an Oops while it ran, writes that
    hit the read-only host file system."""
    notes = []
    oops = [line for line in console_lines(log) if _OOPS.search(line)]
    if oops:
        notes.append(
            "cmaprof: vm: warning: the guest kernel reported an Oops/BUG while the "
            f"command ran:\n{quote(oops, 3)}\n  full console log kept at {log}"
        )
    if result.status and result.read_only_hit:
        notes.append(
            "cmaprof: vm: hint: the host's files are read-only in the guest (only /tmp, "
            "/etc, /usr, /var, /home, /root, /opt and /srv take writes, which vanish "
            "with it): write results under --output DIR"
        )
    return notes


def boot_summary(
    boot: dict[str, object], accel: str, opts: VmOptions, cmdline: list[str], log: Path
) -> tuple[str, list[str]]:
    """The one-line boot summary and warnings about presets the kernel did not honour.

    :param boot: the boot facts the guest's script wrote (release, CMA areas, zones).
    :param accel: ``KVM`` or ``TCG``.
    """
    areas: dict[str, int | None] = boot.get("cma", {})  # type: ignore[assignment]
    zones: dict[str, int] = boot.get("zones", {})  # type: ignore[assignment]
    desc = []
    for name, count in areas.items():
        desc.append(f"{name} {count * PAGE_SIZE // MIB} MiB" if count else name)
    where = [
        f"{z.split(':', 1)[1]}{'' if opts.numa == 1 else '@' + z.split(':', 1)[0]}"
        for z, n in zones.items()
        if n
    ]
    cma = f"CMA: {', '.join(desc)} in {'/'.join(where) or '?'}" if desc else "CMA: none"
    line = (
        f"cmaprof: vm: Linux {boot.get('release', '?')} ready in "
        f"{boot.get('host_seconds', 0.0):.1f} s ({accel}, {opts.cpus} CPUs, "
        f"{guest_memory_mib(opts)} MiB, {opts.numa} node{'s' if opts.numa > 1 else ''}; {cma}); "
        f"console log: {log}"
    )
    warnings = _preset_warnings(areas, zones, opts, cmdline, log)
    return line, [f"cmaprof: vm: warning: {w}" for w in warnings]


def _preset_warnings(
    areas: dict[str, int | None],
    zones: dict[str, int],
    opts: VmOptions,
    cmdline: list[str],
    log: Path,
) -> list[str]:
    warnings = []
    want_default = any(w.startswith("cma=") for w in cmdline)
    if want_default and "reserved" not in areas:
        warnings.append(
            f"the kernel created no 'reserved' CMA area for cma= (see the 'cma:' lines in {log})"
        )
    if opts.cma_in_movable and "reserved" in areas:
        size_pages = size_in_mib(opts.cma_in_movable, "--cma-in-movable", None) * PAGES_PER_MIB
        in_movable = sum(n for z, n in zones.items() if z.endswith(":Movable"))
        if in_movable < size_pages:
            warnings.append(
                f"only {in_movable} of {size_pages} CMA pages are in ZONE_MOVABLE "
                "(/proc/zoneinfo): the layout model does not match this machine"
            )
    if opts.cma_pernuma and not any(a.startswith("pernuma") for a in areas):
        warnings.append(
            "the kernel ignored cma_pernuma= (no pernuma* CMA areas): in v6.1 "
            "only arm64 calls dma_pernuma_cma_reserve(), x86 does since "
            '"dma-contiguous: support numa CMA for specified node" (2023). '
            "For per-node areas on this kernel use --hugetlb-cma SIZE "
            "(1 GiB per node)"
        )
    if opts.hugetlb_cma and not any(a.startswith("hugetlb") for a in areas):
        warnings.append(
            "the kernel created no hugetlb* CMA areas for hugetlb_cma= (each node "
            "needs at least 1 GiB, and the CPU needs 1 GiB pages)"
        )
    return warnings
