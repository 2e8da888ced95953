"""Whether a guest can run under KVM, and the kernels KVM could not boot before.

KVM (``--kvm auto``) is used when ``/dev/kvm`` opens read-write. If QEMU then fails before
the guest's script starts (some hosts cannot run stock kernels under KVM: QEMU aborts on an
MSR it cannot set), the run is repeated under TCG and the kernel's sha256 is remembered in
``~/.cache/cmaprof/kvm.json`` so later runs of that kernel go straight to TCG.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from cmaprof.errors import EnvironmentProblem

#: Under KVM a guest reaches its script in a few seconds; QEMU failing with KVM dies at once.
KVM_BOOT_LIMIT_S = 90.0


def kvm_usable() -> str | None:
    """None when /dev/kvm opens read-write, else why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror}"
    os.close(fd)
    return None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cmaprof`` (``~/.cache/cmaprof``): KVM failures, console logs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "cmaprof"


def kernel_sha256(kernel: Path) -> str:
    """Hex sha256 of the bzImage ``kernel``."""
    h = hashlib.sha256()
    with open(kernel, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def known_failures() -> dict[str, dict[str, str]]:
    """Kernel sha256 -> what KVM did with it (``kvm.json``); empty when unreadable."""
    try:
        data = json.loads((cache_dir() / "kvm.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_failure(sha: str, kernel: Path, reason: str) -> None:
    """Note in ``kvm.json`` that KVM could not boot the kernel whose sha256 is ``sha``."""
    data = known_failures()
    data[sha] = {
        "kvm": "fails",
        "kernel": str(kernel),
        "reason": reason,
        "seen": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = cache_dir() / "kvm.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # only a speed-up for the next run


def choose_kvm(mode: str, kernel: Path, say: Callable[[str], None]) -> tuple[bool, str]:
    """Whether to boot ``kernel`` under KVM, and its sha256 (empty under ``--kvm off``).

    :param mode: ``--kvm``: ``auto`` (KVM when usable and not known to fail with this
        kernel), ``on`` or ``off``.
    :param say: where the note that a known failure sends this kernel to TCG goes.
    :raises EnvironmentProblem: ``on`` when /dev/kvm is not usable.
    """
    if mode == "off":
        return False, ""
    why_not = kvm_usable()
    if mode == "on" and why_not:
        raise EnvironmentProblem(
            f"--kvm on, but KVM is not usable ({why_not}): use --kvm off or auto"
        )
    sha = kernel_sha256(kernel)
    known = known_failures().get(sha)
    if mode == "on" or why_not is None and known is None:
        return True, sha
    if why_not is None and known is not None:
        say(
            f"cmaprof: vm: KVM could not boot this kernel before ({known.get('reason', '?')}; "
            f"{cache_dir() / 'kvm.json'}): using TCG (slower)"
        )
    return False, sha
