"""Workloads of block-device metadata: an ext4 image on a loop device, churned
(``bdev-metadata``: buffer heads the CMA area ends up holding) or read (``bdev-read``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cmaprof.errors import EnvironmentProblem
from cmaprof.workloads import commands
from cmaprof.workloads.memory import CHUNK


@contextlib.contextmanager
def _loop_device(image: Path) -> Iterator[str]:
    """``losetup`` ``image``; detach at the end. Yields /dev/loopN."""
    losetup = commands.tool("losetup", "mount")
    if not Path("/dev/loop-control").exists() and not Path("/dev/loop0").exists():
        raise EnvironmentProblem(
            "no loop device support (/dev/loop-control missing: CONFIG_BLK_DEV_LOOP "
            "off, or modprobe loop)"
        )
    dev = commands.sh([losetup, "--find", "--show", str(image)], "attaching a loop device").strip()
    try:
        yield dev
    finally:
        subprocess.run([losetup, "-d", dev], capture_output=True, check=False)


@contextlib.contextmanager
def _scratch_image(size: int, dir: str | None, prefix: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    try:
        image = base / "disk.img"
        with open(image, "wb") as f:
            f.truncate(size << 20)
        yield image
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _churn(root: Path, files: int, seconds: float) -> tuple[int, int]:
    """Create, write, fsync, rename and delete small files and directories under ``root``.

    Every step dirties inode-table, bitmap, directory and journal blocks: buffer
    heads on the block device's page cache (``__getblk()``). Returns (rounds, ops).
    """
    deadline = time.monotonic() + seconds
    per_dir = 50
    rounds = ops = 0
    payload = b"m" * 100
    while True:
        rnd = root / f"r{rounds}"
        rnd.mkdir()
        for i in range(files):
            d = rnd / f"d{i // per_dir}"
            if i % per_dir == 0:
                d.mkdir()
            p = d / f"f{i}"
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, payload)
                if i % 16 == 0:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if i % 3 == 0:
                os.rename(p, d / f"g{i}")
            ops += 1
            if time.monotonic() > deadline:
                break
        rounds += 1
        os.sync()
        if time.monotonic() > deadline:
            break
        if rounds >= 2:  # keep about two rounds of files: metadata stays live
            shutil.rmtree(root / f"r{rounds - 2}")
    return rounds, ops


@contextlib.contextmanager
def bdev_metadata(
    size: int = 256, files: int = 4000, seconds: float = 60.0, dir: str | None = None
) -> Iterator[str]:
    """ext4 on a loop device: metadata churn through buffer heads and the journal.

    A ``size`` MiB sparse image under ``dir`` (default: $TMPDIR or /tmp) is attached to
    a loop device, formatted ext4 with a 1 KiB block size (more groups and so more
    metadata blocks per MiB) and mounted; then rounds of ``files`` small files are
    created, written, renamed and deleted for at most ``seconds``. The metadata is
    read and written through ``sb_bread()``/``__getblk()``, whose block-device page
    cache pages are allocated ``GFP_NOFS|__GFP_MOVABLE``-style (movable, never
    highmem). The file system stays mounted, with the last round's files, until the
    workload is left: ext4 keeps the superblock and group descriptor buffer heads
    referenced while mounted.
    """
    commands.need_root("bdev-metadata")
    mkfs = commands.tool("mkfs.ext4", "e2fsprogs")
    mount, umount = commands.tool("mount", "mount"), commands.tool("umount", "mount")
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(_scratch_image(size, dir, "cmaprof-bdev-metadata-"))
        dev = stack.enter_context(_loop_device(image))
        commands.sh([mkfs, "-q", "-F", "-b", "1024", "-N", str(max(4 * files, 1024)), dev], "mkfs")
        mnt = image.parent / "mnt"
        mnt.mkdir()
        commands.sh([mount, "-t", "ext4", dev, str(mnt)], "mounting the ext4 image")
        stack.callback(subprocess.run, [umount, str(mnt)], capture_output=True, check=False)
        rounds, ops = _churn(mnt, files, seconds)
        yield f"ext4 on {dev}: {ops} file operations in {rounds} rounds, mounted until the end"


@contextlib.contextmanager
def bdev_read(
    size: int = 256, device: str | None = None, dir: str | None = None, hold: bool = False
) -> Iterator[str]:
    """Buffered reads of a block device: ``size`` MiB of ``device`` through its page cache.

    Without ``device`` a ``size`` MiB image of non-zero data under ``dir`` is attached
    to a loop device and read. Raw block-device reads use the bdev inode's mapping
    mask (``GFP_USER`` in 6.1: not movable). The cached pages are dropped at the end
    (``POSIX_FADV_DONTNEED``), or kept until the workload is left with ``hold``.
    """
    with contextlib.ExitStack() as stack:
        if device is None:
            commands.need_root("bdev-read")
            image = stack.enter_context(_scratch_image(size, dir, "cmaprof-bdev-read-"))
            with open(image, "r+b") as f:
                buf = b"\xa5" * CHUNK
                f.writelines(buf for _ in range(size))
            device = stack.enter_context(_loop_device(image))
        try:
            fd = os.open(device, os.O_RDONLY)
        except OSError as exc:
            raise EnvironmentProblem(f"bdev-read: cannot open {device}: {exc.strerror}") from None
        stack.callback(os.close, fd)
        stack.callback(os.posix_fadvise, fd, 0, 0, os.POSIX_FADV_DONTNEED)
        total = 0
        while total < size << 20 and (chunk := os.read(fd, CHUNK)):
            total += len(chunk)
        if not hold:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        yield f"{total >> 20} MiB read from {device}" + (", cached until the end" if hold else "")
