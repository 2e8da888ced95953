"""One QEMU launch through virtme-ng: the guest's script, the process group, the console
log, the command's output streamed as it grows, and a heartbeat while the guest is silent.

How a run works, and why it does not trust virtme-ng's own plumbing:

* ``vng`` returns 255 instead of the script's status, and its script output ports need udev
  symlinks (``/dev/virtio-ports/virtme.*``) that a host without udevd does not provide. So
  the command runs from a shell script we write into a private control directory shared
  read-write with the guest. The script records boot facts (``boot``), runs the command with
  stdout/stderr redirected to files there (``stdout``, ``stderr``), and writes the exit
  status (``status``) last, after ``sync``.
* The host streams ``stdout``/``stderr`` to its own while the guest runs, keeps the whole
  serial console (``vng --verbose``: kernel log at loglevel 7 and QEMU's own errors) in a
  log file, and returns the command's status. No ``status`` file means the guest did not
  finish the command: a kernel panic, an Oops, a hang (``--timeout``), or QEMU failing. Each
  raises :class:`GuestFailure` quoting the console lines that say so and the kept log's path.
  There is no silent pass.
* virtme-ng adds ``panic=-1`` and QEMU's ``-no-reboot`` in script mode, so a panicking guest
  ends QEMU at once instead of hanging until the timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cmaprof.guest.kvm import KVM_BOOT_LIMIT_S
from cmaprof.guest.layout import guest_memory_mib
from cmaprof.guest.options import VmOptions

#: Seconds of silence from the guest before a heartbeat line (stderr) says it still runs.
HEARTBEAT_S = 30.0
#: The root file system's 9p mount options: virtme-ng's own (``--force-9p``, virtme/
#: commands/run.py) plus ``cache=loose``. Without a cache mode 9p caches no file data and
#: every lookup is a round trip to QEMU: Python's imports, the ~230 MB of LLVM and clang
#: libraries BCC loads and the headers clang opens are read again and again (in the 7.3.4
#: guest under TCG, ``python -c 'import bcc'`` took 24.9 s without, 10.0 s with). The
#: host's root is shared read-only and nothing in a guest expects to see the host change
#: it while the guest runs. Appended after vng's words: the kernel keeps the last
#: ``rootflags=`` (init/do_mounts.c, root_data_setup), and a user's ``--append`` after ours.
ROOT_9P_FLAGS = "rootflags=version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose"
#: A path virtme-ng can pass on: it builds shell strings from --rwdir unquoted.
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@%,:/-]*$")


# --------------------------------------------------------------------------- guest script

_GUEST_SCRIPT = """\
#!/bin/sh
# Written by cmaprof vm run; runs one command in the guest. The host reads $ctl.
ctl={ctl}
export PATH={path}
export PYTHONDONTWRITEBYTECODE=1
{env}
grep -qs ' /sys/kernel/debug ' /proc/mounts ||
    mount -t debugfs debugfs /sys/kernel/debug 2>>"$ctl/wrapper.err"
grep -qs ' /sys/kernel/tracing ' /proc/mounts ||
    mount -t tracefs tracefs /sys/kernel/tracing 2>>"$ctl/wrapper.err"
{pre}
{{
    echo "release $(uname -r)"
    echo "uptime $(cut -d' ' -f1 /proc/uptime)"
    for a in /sys/kernel/mm/cma/*; do
        [ -d "$a" ] || continue
        n=${{a##*/}}
        echo "cma $n $(cat "/sys/kernel/debug/cma/$n/count" 2>/dev/null || echo '?')"
    done
    awk '/^Node/ {{ z = $2 " " $4 }} /^ +cma / {{ print "zone " z " " $2 }}' /proc/zoneinfo
}} >"$ctl/boot.tmp" 2>>"$ctl/wrapper.err"
mv "$ctl/boot.tmp" "$ctl/boot"
cd {cwd} 2>/dev/null || cd /
{command} >"$ctl/stdout" 2>"$ctl/stderr" </dev/null
echo $? >"$ctl/status.tmp"
sync
mv "$ctl/status.tmp" "$ctl/status"
sync
"""


#: Under TCG: kernel.bpf_stats_enabled on from boot, while the guest is idle. Each
#: BPF_ENABLE_STATS fd of record's sampling windows then only takes a reference on
#: bpf_stats_enabled_key and never patches kernel text; flipping that static key while
#: the other vCPU ran bpf_trace_run4() left it a stale int3 under TCG ("Oops: int3 ...
#: RIP: bpf_trace_run4+0x80", kernel panic, 6.12.118 guest of test_blockers, 2026-12-07).
TCG_STATS_ON = (
    "[ -w /proc/sys/kernel/bpf_stats_enabled ] &&\n"
    '    echo 1 >/proc/sys/kernel/bpf_stats_enabled 2>>"$ctl/wrapper.err"'
)


def guest_script(
    ctl: Path, command: list[str], env: dict[str, str] | None = None, tcg: bool = False
) -> str:
    """The shell script the guest runs from ``ctl``: boot facts, ``command``, its status.
    The host's ``CMAPROF_*`` variables are passed on, then ``env``; ``tcg``: the guest
    runs under TCG (:data:`TCG_STATS_ON`)."""
    path = [str(Path(sys.executable).parent)]
    path += os.environ.get("PATH", "").split(os.pathsep)
    path += ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    path = [p for p in dict.fromkeys(path) if p]
    passed = {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith("CMAPROF_") and re.fullmatch(r"[A-Z0-9_]+", k)
    }
    passed.update(env or {})
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in passed.items())
    return _GUEST_SCRIPT.format(
        ctl=shlex.quote(str(ctl)),
        path=shlex.quote(":".join(path)),
        env=exports,
        pre=TCG_STATS_ON if tcg else "",
        cwd=shlex.quote(os.getcwd()),
        command=shlex.join(command),
    )


# --------------------------------------------------------------------------- running


@dataclass
class LaunchResult:
    """What one QEMU launch did."""

    returncode: int | None = None
    status: int | None = None
    boot: dict[str, object] | None = None
    timed_out: bool = False
    kvm_slow: bool = False
    read_only_hit: bool = False
    seconds: float = 0.0


class _Tail:
    """Copy a file that the guest appends to, as it grows."""

    def __init__(self, path: Path, sink: BinaryIO) -> None:
        self.path, self.sink, self.pos = path, sink, 0
        self.read_only_hit = False  # "Read-only file system" seen in the output

    def pump(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            self.pos += len(data)
            self.read_only_hit |= b"Read-only file system" in data
            self.sink.write(data)
            self.sink.flush()


def _parse_boot(text: str) -> dict[str, object]:
    info: dict[str, object] = {"cma": {}, "zones": {}}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        if key == "release":
            info["release"] = rest
        elif key == "uptime":
            info["uptime"] = rest
        elif key == "cma":
            name, _, count = rest.partition(" ")
            info["cma"][name] = int(count) if count.isdigit() else None  # type: ignore[index]
        elif key == "zone":
            m = re.match(r"(\d+), (\S+) (\d+)$", rest)
            if m:
                info["zones"][f"{m.group(1)}:{m.group(2)}"] = int(m.group(3))  # type: ignore[index]
    return info


def fmt_elapsed(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour), for progress lines."""
    s = int(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def progress_line(phase: str, elapsed_s: float, timeout_s: float | None = None) -> str:
    """One heartbeat: what the guest is doing and for how long, e.g. ``cmaprof: vm:
    running cmaprof record ... (4:05 elapsed, killed at 15:00)``."""
    limit = f", killed at {fmt_elapsed(timeout_s)}" if timeout_s else ""
    return f"cmaprof: vm: {phase} ({fmt_elapsed(elapsed_s)} elapsed{limit})"


def one_line(command: list[str]) -> str:
    """``command`` as a shell would take it, on one line (a script argument's newlines and
    indentation become single spaces) for progress lines."""
    return " ".join(shlex.join(command).split())


def phase(opts: VmOptions, booted: bool) -> str:
    """What the guest is doing, for a heartbeat: booting, or running (a short) command."""
    if not booted:
        return "booting the guest"
    cmd = one_line(opts.command)
    cmd = cmd if len(cmd) <= 40 else cmd[:37] + "..."
    if any("record" in part.split() for part in opts.command):  # or a script running it
        return f"running {cmd}; BCC compiles the probes first (minutes under TCG)"
    return f"running {cmd}"


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP while a guest runs: unwind like Ctrl-C, so the guest is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """vng runs in its own session (so it can be killed as a group): a SIGTERM or SIGHUP
    to us must unwind through launch()'s finally, or the guest outlives us."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            saved[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop vng, virtme-run and QEMU: the process group this module started."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    # QEMU may outlive vng for a moment; the group id is still ours.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def vng_argv(vng: Path, opts: VmOptions, cmdline: list[str], ctl: Path, use_kvm: bool) -> list[str]:
    """The ``vng`` command line booting ``opts.kernel`` with ``cmdline`` to run ``ctl/run.sh``."""
    memory_mib = guest_memory_mib(opts)
    argv = [
        str(vng),
        "--run",
        str(opts.kernel.resolve()),
        "--verbose",
        "--force-9p",
        "--disable-microvm",
        "--name",
        "cmaprof-vm",
        "--memory",
        f"{memory_mib}M",
        "--cpus",
        str(opts.cpus),
    ]
    if not use_kvm:
        argv.append("--disable-kvm")
    if opts.numa > 1:
        per_node = memory_mib // opts.numa
        for nid in range(opts.numa):
            lo, hi = nid * opts.cpus // opts.numa, (nid + 1) * opts.cpus // opts.numa
            cpus = f",cpus={lo}-{hi - 1}" if hi > lo else ""
            argv += ["--numa", f"{per_node}M{cpus}"]
    home = Path(os.path.expanduser("~"))
    if home.is_dir() and SAFE_PATH.match(str(home)) and str(home) != "/":
        argv += ["--overlay-rwdir", str(home)]
    argv += ["--rwdir", str(ctl)]
    if opts.out is not None:
        argv += ["--rwdir", str(opts.out)]
    for word in [ROOT_9P_FLAGS, *cmdline]:
        argv += ["--append", word]
    argv += ["--exec", f"/bin/sh {ctl}/run.sh"]
    return argv


def _copy_console(proc: subprocess.Popen, logf: BinaryIO) -> threading.Thread:
    """Start a thread copying QEMU's console (vng's stdout pipe) into the log until EOF.

    The thread owns the pipe's read end and closes it when done: left to the garbage
    collector it leaked one descriptor per launch, and closing it from another thread
    while this one reads could hand its number to the next file opened.
    """
    pipe = proc.stdout
    assert pipe is not None

    def copy() -> None:
        try:
            fd = pipe.fileno()
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                logf.write(data)
                logf.flush()
        except (OSError, ValueError):
            pass  # the log was closed: a process kept the pipe open past QEMU
        finally:
            pipe.close()

    reader = threading.Thread(target=copy, name="vm-console", daemon=True)
    reader.start()
    return reader


def _watch(
    proc: subprocess.Popen,
    ctl: Path,
    tails: list[_Tail],
    result: LaunchResult,
    opts: VmOptions,
    use_kvm: bool,
    stderr: BinaryIO,
    on_boot: Callable[[dict[str, object]], None],
) -> None:
    """Copy the guest's output and beat while it is silent, until QEMU ends, or kill it
    past ``opts.timeout_s`` (under KVM also when no guest came up in KVM_BOOT_LIMIT_S)."""
    t0 = last_output = time.monotonic()  # heartbeat only while the guest is silent
    while True:
        before = [t.pos for t in tails]
        for t in tails:
            t.pump()
        now = time.monotonic()
        if [t.pos for t in tails] != before:
            last_output = now
        elif now - last_output >= HEARTBEAT_S:
            line = progress_line(phase(opts, result.boot is not None), now - t0, opts.timeout_s)
            stderr.write((line + "\n").encode())
            stderr.flush()
            last_output = now
        if result.boot is None and (ctl / "boot").exists():
            result.boot = _parse_boot((ctl / "boot").read_text(errors="replace"))
            result.boot["host_seconds"] = time.monotonic() - t0
            on_boot(result.boot)
        if proc.poll() is not None:
            return
        elapsed = time.monotonic() - t0
        if elapsed > opts.timeout_s:
            result.timed_out = True
            _kill_group(proc)
            return
        if use_kvm and result.boot is None and elapsed > KVM_BOOT_LIMIT_S:
            result.kvm_slow = True
            _kill_group(proc)
            return
        time.sleep(0.2)


def launch(
    argv: list[str],
    ctl: Path,
    log: Path,
    opts: VmOptions,
    use_kvm: bool,
    stdout: BinaryIO,
    stderr: BinaryIO,
    on_boot: Callable[[dict[str, object]], None],
) -> LaunchResult:
    """Run ``argv`` (vng, from :func:`vng_argv`) once in its own process group.

    The console is appended to ``log``; the command's output (``ctl/stdout``,
    ``ctl/stderr``) is copied to ``stdout``/``stderr`` as it grows; ``on_boot`` gets the
    boot facts once the guest's script wrote them. QEMU is always stopped on return.
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(argv[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    result = LaunchResult()
    t0 = time.monotonic()
    tails = [_Tail(ctl / "stdout", stdout), _Tail(ctl / "stderr", stderr)]
    with open(log, "ab") as logf:
        logf.write(f"### cmaprof vm run: {shlex.join(argv)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        reader = _copy_console(proc, logf)
        try:
            _watch(proc, ctl, tails, result, opts, use_kvm, stderr, on_boot)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            result.returncode = proc.wait()
            reader.join(timeout=10)
            for t in tails:
                t.pump()
    result.read_only_hit = any(t.read_only_hit for t in tails)
    result.seconds = time.monotonic() - t0
    try:
        result.status = int((ctl / "status").read_text().strip())
    except (OSError, ValueError):
        result.status = None
    return result
