"""Reading files below ``root`` (the directory standing for ``/``), following symbolic
links inside it as a chroot would; a file that cannot be read is None or False, never
an exception."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def resolve(root: Path, path: str) -> tuple[Path, str]:
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


def read(root: Path, path: str) -> str | None:
    try:
        return resolve(root, path)[0].read_text(errors="replace")
    except OSError:
        return None


def is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:
        return False


def exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError:
        return False


def listdir(p: Path) -> list[str] | None:
    """Entry names of directory ``p``; None when it cannot be read (absent, not root)."""
    try:
        return sorted(e.name for e in p.iterdir())
    except OSError:
        return None


def readable(p: Path) -> bool:
    return os.access(p, os.R_OK | os.X_OK)
