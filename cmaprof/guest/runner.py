"""``cmaprof vm run``: boot a kernel under test in QEMU and run one command inside it.

The guest is booted with virtme-ng (``vng``) on Debian's ``qemu-system-x86_64``: the host's
root file system is exported read-only over 9p with a tmpfs overlay on top of ``/etc``,
``/lib``, ``/home``, ``/opt``, ``/srv``, ``/usr``, ``/var``, ``/tmp`` and ``/root`` (writes
there vanish with the guest), so the host's Python, BCC and this project's ``.venv`` run
unchanged inside. ``--output DIR`` is shared read-write at the same path. The root is
mounted with ``cache=loose`` (:data:`cmaprof.guest.launch.ROOT_9P_FLAGS`) and BCC in the
guest reads the kernel's own headers unpacked on the host (:mod:`cmaprof.guest.kheaders`):
both for the time of an iteration under TCG.

How one launch works (the control directory, the streamed output, the kept console
log, why a missing ``status`` file is a :class:`GuestFailure`): :mod:`cmaprof.guest.launch`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from cmaprof.errors import BadInput, EnvironmentProblem
from cmaprof.guest import diagnose, kheaders, kvm
from cmaprof.guest.launch import (
    HEARTBEAT_S,
    SAFE_PATH,
    LaunchResult,
    guest_script,
    launch,
    one_line,
    signals_unwind,
    vng_argv,
)
from cmaprof.guest.layout import kernel_cmdline
from cmaprof.guest.options import GuestFailure, VmOptions


def _find_vng() -> Path:
    here = Path(sys.executable).parent / "vng"
    if here.exists():
        return here
    found = shutil.which("vng")
    if found:
        return Path(found)
    raise EnvironmentProblem(
        "virtme-ng (vng) is not installed: pip install 'cmaprof[vm]' "
        "(virtme-ng from PyPI) in this environment"
    )


def _check_host(opts: VmOptions) -> Path:
    if not opts.command:
        raise BadInput("no command to run in the guest: cmaprof vm run [OPTIONS] -- COMMAND ...")
    if not opts.kernel.is_file():
        raise BadInput(
            f"kernel {opts.kernel} does not exist: give --kernel BZIMAGE "
            "(scripts/build-test-kernel.sh builds a CMA test kernel)"
        )
    opts.kernel = _shareable(opts.kernel, "--kernel")
    if shutil.which("qemu-system-x86_64") is None:
        raise EnvironmentProblem(
            "qemu-system-x86_64 is not installed: apt-get install qemu-system-x86"
        )
    if opts.kvm not in ("auto", "on", "off"):
        raise BadInput(f"--kvm {opts.kvm}: use auto, on or off")
    if opts.cpus < 1:
        raise BadInput(f"--cpus {opts.cpus}: give 1 or more")
    if opts.timeout_s <= 0:
        raise BadInput(f"--timeout {opts.timeout_s}: give a positive number of seconds")
    return _find_vng()


def _shareable(path: Path, what: str) -> Path:
    """An absolute path vng can pass on: it builds a shell string from --rwdir unquoted."""
    path = path.expanduser().resolve()
    if not SAFE_PATH.match(str(path)) or str(path) == "/":
        raise BadInput(
            f"{what} {str(path)!r} cannot be shared with the guest (virtme-ng passes "
            "it through a shell and reads '=' as guest=host): use a directory whose "
            "path has only letters, digits and ._+-@%,:/"
        )
    return path


def _log_path(opts: VmOptions) -> Path:
    log_dir = opts.log_dir if opts.log_dir is not None else kvm.cache_dir() / "vm-logs"
    log_dir = log_dir.expanduser().resolve()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot create the log directory {log_dir}: {exc.strerror}; give --log-dir DIR"
        ) from None
    if opts.log_dir is None:  # our own cache: keep the 50 newest
        old = sorted(log_dir.glob("console-*.log"), key=lambda p: p.stat().st_mtime)
        for p in old[:-49]:
            p.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return log_dir / f"console-{stamp}-{os.getpid()}.log"


def _tmp_root() -> str:
    """Where the control directory goes: ``$TMPDIR`` when vng can share it, else /tmp."""
    tmp_root = os.environ.get("TMPDIR", "/tmp")
    if not SAFE_PATH.match(tmp_root) or not os.path.isdir(tmp_root):
        tmp_root = "/tmp"
    return tmp_root


class _Run:
    """One ``cmaprof vm run``: the checked options, and where messages and output go."""

    def __init__(self, opts: VmOptions, stdout: BinaryIO, stderr: BinaryIO) -> None:
        self.opts, self.stdout, self.stderr = opts, stdout, stderr
        self.vng = _check_host(opts)
        self.cmdline = kernel_cmdline(opts)
        if opts.out is not None:
            opts.out = _shareable(opts.out, "--output")
            opts.out.mkdir(parents=True, exist_ok=True)
        self.use_kvm, self.sha = kvm.choose_kvm(opts.kvm, opts.kernel, self.say)
        self.log = _log_path(opts)
        self.env = self.headers_env()

    def headers_env(self) -> dict[str, str]:
        """``BCC_KERNEL_SOURCE`` for the guest: the kernel's own headers unpacked on the
        host (:mod:`cmaprof.guest.kheaders`), or nothing (``CMAPROF_VM_KHEADERS=0``, or
        a kernel without them: BCC then unpacks /sys/kernel/kheaders.tar.xz itself)."""
        if os.environ.get("CMAPROF_VM_KHEADERS") == "0":
            return {}
        t0 = time.monotonic()
        sha = self.sha or kvm.kernel_sha256(self.opts.kernel)
        tree = kheaders.host_kheaders(self.opts.kernel, sha)
        if tree is None:
            return {}
        self.say(
            f"cmaprof: vm: kernel headers for BCC from the bzImage: {tree} "
            f"({time.monotonic() - t0:.1f} s; no unpacking of kheaders.tar.xz in the guest)"
        )
        return {"BCC_KERNEL_SOURCE": str(tree)}

    def say(self, text: str) -> None:
        self.stderr.write((text + "\n").encode())
        self.stderr.flush()

    def boot_once(self, use_kvm: bool) -> LaunchResult:
        """One launch in a fresh control directory, removed afterwards."""
        opts = self.opts
        accel = "KVM" if use_kvm else "TCG"
        ctl = Path(tempfile.mkdtemp(prefix="cmaprof-vm-", dir=_tmp_root()))
        try:
            (ctl / "run.sh").write_text(guest_script(ctl, opts.command, self.env, tcg=not use_kvm))
            self.say(
                f"cmaprof: vm: booting {opts.kernel.name} under {accel} ({opts.memory}, "
                f"{opts.cpus} CPUs), then running {one_line(opts.command)[:60]}; a heartbeat "
                f"every {HEARTBEAT_S:g} s while the guest is silent"
            )

            def on_boot(boot: dict[str, object]) -> None:
                line, warnings = diagnose.boot_summary(boot, accel, opts, self.cmdline, self.log)
                for text in (line, *warnings):
                    self.say(text)

            argv = vng_argv(self.vng, opts, self.cmdline, ctl, use_kvm)
            with signals_unwind():
                return launch(argv, ctl, self.log, opts, use_kvm, self.stdout, self.stderr, on_boot)
        finally:
            shutil.rmtree(ctl, ignore_errors=True)

    def kvm_failed(self, result: LaunchResult) -> bool:
        """Whether QEMU failed under KVM before the guest started; then it is noted (so
        the kernel goes to TCG from now on) and the console log marks the retry."""
        if result.boot is not None or result.timed_out or diagnose.panicked(self.log):
            return False
        reason = (
            f"no guest after {kvm.KVM_BOOT_LIMIT_S:g} s"
            if result.kvm_slow
            else diagnose.kvm_reason(self.log)
        )
        if self.opts.kvm == "on":
            raise GuestFailure(
                f"KVM could not boot this kernel ({reason}): use --kvm auto "
                f"or off; full console log kept at {self.log}"
            )
        self.say(
            f"cmaprof: vm: KVM could not boot this kernel ({reason}); falling back to TCG (slower)"
        )
        kvm.remember_failure(self.sha, self.opts.kernel.resolve(), reason)
        with open(self.log, "ab") as logf:
            logf.write(b"\n### cmaprof vm run: retrying under TCG\n")
        return True


def run(opts: VmOptions, stdout: BinaryIO | None = None, stderr: BinaryIO | None = None) -> int:
    """Boot ``opts.kernel`` and run ``opts.command`` inside; its exit status.

    The command's stdout and stderr are copied to ``stdout``/``stderr`` (default: ours) while
    it runs; a boot summary and warnings go to ``stderr``.

    :raises GuestFailure: the guest panicked, oopsed, hung past ``timeout_s`` or QEMU failed.
    :raises BadInput: a bad option.
    :raises EnvironmentProblem: QEMU, virtme-ng or /dev/kvm (``kvm="on"``) missing.
    """
    r = _Run(
        opts,
        stdout if stdout is not None else sys.stdout.buffer,
        stderr if stderr is not None else sys.stderr.buffer,
    )
    use_kvm = r.use_kvm
    while True:
        result = r.boot_once(use_kvm)
        if result.status is not None:
            for note in diagnose.notes_after_run(result, r.log):
                r.say(note)
            return result.status
        if use_kvm and r.kvm_failed(result):
            use_kvm = False
            continue
        raise diagnose.failure(result, r.log, opts)
