"""System tools the workloads run (losetup, mkfs.ext4, mount, dd): found on PATH or
a clear :class:`~cmaprof.errors.EnvironmentProblem` naming the package."""

from __future__ import annotations

import os
import shutil
import subprocess

from cmaprof.errors import EnvironmentProblem


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"workload {what} needs root (loop devices, mount)")


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise EnvironmentProblem(f"{name} not found (apt-get install {package})")
    return path


def sh(argv: list[str], what: str) -> str:
    """Run ``argv`` (an argument list, never a shell string); its stdout, or a clear error."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise EnvironmentProblem(
            f"{what}: {' '.join(argv)} failed ({proc.returncode}): {msg[-1] if msg else ''}"
        )
    return proc.stdout
