"""The kernel headers a guest kernel carries (``CONFIG_IKHEADERS``), extracted on the host.

BCC in a guest without a headers package for its kernel unpacks
``/sys/kernel/kheaders.tar.xz`` (about 38 MB of headers, 7.5 k files on 7.3) into
``/tmp/kheaders-<release>`` on its first compile of each boot: xz and tar under TCG. The
same archive is inside the bzImage (kernel/kheaders.c embeds it in .rodata), so the host
unpacks it once per kernel, in seconds, into ``~/.cache/cmaprof/kheaders/<sha256>/``,
and the guest's BCC reads it from there (``BCC_KERNEL_SOURCE``; the host's root is the
guest's). A kernel without the archive, or compressed in a way Python cannot undo
(zstd, lz4, lzo), gets None: BCC then does what it does without us.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path

from cmaprof.guest.kvm import cache_dir

#: xz stream magic (the kheaders archive is always xz: kernel/gen_kheaders.sh).
XZ_MAGIC = b"\xfd7zXZ\x00"
#: A kheaders tree has these (what BCC needs of a ``BCC_KERNEL_SOURCE``).
KHEADERS_DIRS = ("include", "arch")
#: Marker written last: the tree is complete.
DONE = ".cmaprof-complete"


def _payload(image: bytes) -> bytes | None:
    """The decompressed vmlinux of a bzImage (boot protocol >= 2.08: payload_offset and
    payload_length at 0x248 in the setup header, after ``(setup_sects + 1) * 512``)."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        return None
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    data = image[start : start + length]
    try:
        if data[:2] == b"\x1f\x8b":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        if data[:6] == XZ_MAGIC:
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if data[:3] == b"BZh":
            return bz2.BZ2Decompressor().decompress(data)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
        return None
    return None  # zstd, lz4, lzo, lzma-alone: not in Python's standard library


def _kheaders_tar(vmlinux: bytes) -> bytes | None:
    """The first xz stream of ``vmlinux`` that is a tar of ``./include`` and ``./arch``."""
    pos = vmlinux.find(XZ_MAGIC)
    while pos >= 0:
        try:
            data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinux[pos:])
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tops = {m.name.removeprefix("./").split("/")[0] for m in tar.getmembers()}
            if set(KHEADERS_DIRS) <= tops:
                return data
        except (lzma.LZMAError, tarfile.TarError, EOFError):
            pass
        pos = vmlinux.find(XZ_MAGIC, pos + 1)
    return None


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Only directories and regular files, with relative paths that stay inside."""
    out = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isdir() or m.isreg()):
            continue
        out.append(m)
    return out


def _extract(kernel: Path, dest: Path) -> bool:
    """Unpack ``kernel``'s kheaders into ``dest`` (atomically: a temporary directory
    renamed into place); False when the kernel has none we can read."""
    vmlinux = _payload(kernel.read_bytes())
    data = _kheaders_tar(vmlinux) if vmlinux else None
    if data is None:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".kheaders-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, members=_safe_members(tar))
        (tmp / DONE).write_text(f"{kernel}\n")
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return (dest / DONE).exists()  # another run won the rename
    return True


def host_kheaders(kernel: Path, sha256: str) -> Path | None:
    """The unpacked kheaders of ``kernel`` (sha256 ``sha256``) on the host, unpacking
    them on first use; None when it has none or the cache is not writable."""
    if not sha256:
        return None
    dest = cache_dir() / "kheaders" / sha256
    if (dest / DONE).exists():
        return dest
    try:
        return dest if _extract(kernel, dest) else None
    except OSError:
        return None
