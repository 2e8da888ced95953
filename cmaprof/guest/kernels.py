"""The CMA test kernels beside the repository (``../shared/kernels``) and their versions."""

from __future__ import annotations

import os
import re
from pathlib import Path


def shared_test_kernels() -> list[Path]:
    """The ``../shared/kernels/bzImage-*-cma`` beside the repository root, oldest first."""
    kdir = Path(__file__).resolve().parents[2].parent / "shared" / "kernels"
    return sorted(kdir.glob("bzImage-*-cma"), key=lambda p: _version_key(p.name))


def default_test_kernel() -> Path | None:
    """``$CMAPROF_TEST_KERNEL``, else the newest ``../shared/kernels/bzImage-*-cma`` beside
    the repository root, else None."""
    env = os.environ.get("CMAPROF_TEST_KERNEL")
    if env:
        return Path(env)
    found = shared_test_kernels()
    return found[-1] if found else None


def kernel_version(kernel: Path) -> str:
    """``6.12.118`` of ``bzImage-6.12.118-cma`` (the file name without its affixes)."""
    name = kernel.name
    for affix in ("bzImage-", "vmlinuz-"):
        name = name.removeprefix(affix)
    return name.removesuffix("-cma")


def _version_key(name: str) -> list[tuple[int, object]]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name)]
