"""``cmaprof doctor``: what this machine can record, and how to fix what it cannot.

Every check reads files below ``root`` (``root/proc/...``, ``root/sys/...``,
``root/lib/modules/...``), following symbolic links inside ``root`` as a chroot would,
so tests can build a fake machine in a directory. The three facts that only the live
system can give (effective uid, whether ``bcc`` imports, the kernel release) come from
small functions that callers may replace.

The checks live by topic: :mod:`.system` (root and capabilities, BCC, BTF, lockdown,
kptr_restrict, BPF stats), :mod:`.headers` (the kernel headers BCC compiles against),
:mod:`.tracing` (tracefs, event groups, CMA areas, kprobes, raw tracepoints, other
tracers); :mod:`.check` holds the :class:`Check` row and :mod:`.files` reads files below
``root``. This package runs them (:func:`run_checks`), prints them and is ``record``'s
preflight.

A :class:`Check` is ``ok``, ``warn`` (recording works, something is lost or unknown)
or ``fail``; ``required`` marks checks without which recording is impossible, so
:func:`recording_possible` is "no required check failed". Features are detected by
presence (tracepoint directories, files), never by kernel version.
"""

from __future__ import annotations

import functools
import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

from cmaprof.collectors.doctor import files
from cmaprof.collectors.doctor.check import CHECK_NAMES, FAIL, OK, WARN, Check
from cmaprof.collectors.doctor.headers import check_headers
from cmaprof.collectors.doctor.system import (
    check_bcc,
    check_bpf_stats,
    check_btf,
    check_kptr_restrict,
    check_lockdown,
    check_root,
)
from cmaprof.collectors.doctor.tracing import (
    EVENT_GROUPS,
    bpftool_attachments,
    check_cma_areas,
    check_event_group,
    check_kprobes,
    check_other_tracers,
    check_raw_tracepoint,
    check_tracefs,
    find_tracefs,
    task_comm,
)

__all__ = [
    "CHECK_NAMES",
    "FAIL",
    "OK",
    "WARN",
    "Check",
    "bpftool_attachments",
    "check_bcc",
    "check_bpf_stats",
    "check_btf",
    "check_cma_areas",
    "check_event_group",
    "check_headers",
    "check_kprobes",
    "check_kptr_restrict",
    "check_lockdown",
    "check_other_tracers",
    "check_probes_compile",
    "check_raw_tracepoint",
    "check_root",
    "check_tracefs",
    "checks_as_json",
    "preflight",
    "problem_message",
    "recording_possible",
    "run_checks",
    "table_checks",
]


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
    tfs, tfs_why = find_tracefs(root)
    cma_events = tfs is not None and files.is_dir(root / tfs.lstrip("/") / "events/cma")
    cmdline = files.read(root, "/proc/cmdline") or ""

    todo: list[tuple[str, bool, Callable[[], Check]]] = [
        ("root", True, lambda: check_root(root, euid())),
        ("bcc", True, lambda: check_bcc(bcc_import)),
        ("headers", True, lambda: check_headers(root, rel, env)),
        ("tracefs", True, lambda: check_tracefs(root)),
    ]
    todo += [
        (f"events/{g}", spec.required, functools.partial(check_event_group, root, g, tfs, tfs_why))
        for g, spec in EVENT_GROUPS.items()
    ]
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
            lambda: check_other_tracers(
                root, tfs, attachments(), functools.partial(task_comm, root)
            ),
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
