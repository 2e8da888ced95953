"""The kernel headers built into a kernel image (CONFIG_IKHEADERS), without booting it.

``kernel/kheaders_data.tar.xz`` is linked into vmlinux as data (kernel/kheaders.c); a
bzImage carries vmlinux compressed. Extracting it lets the host compile every probe
against the exact headers of every test kernel in a few seconds (``BCC_KERNEL_SOURCE``,
tests/live/test_probe_matrix.py), and lets a guest's BCC read them unpacked instead of
unpacking ``/sys/kernel/kheaders.tar.xz`` under TCG at every boot (cmaprof.guest).
"""

from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import os
import shutil
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path

from cmaprof.errors import BadInput

_GZIP = b"\x1f\x8b\x08"
#: xz stream magic (the kheaders archive is always xz: kernel/gen_kheaders.sh).
XZ_MAGIC = b"\xfd7zXZ\x00"
#: vmlinux is larger than this; smaller gzip streams in a bzImage are something else.
_MIN_VMLINUX = 1 << 20
#: A kheaders tree has these top directories (what BCC needs of a ``BCC_KERNEL_SOURCE``).
KHEADERS_DIRS = ("include", "arch")
#: Marker written last into an extracted tree: the tree is complete.
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


def _gzip_scan(image: bytes) -> bytes | None:
    """The first gzip stream of ``image`` that inflates to more than a vmlinux's size
    (an image without a boot-protocol header)."""
    at = image.find(_GZIP)
    while at >= 0:
        try:
            out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(image[at:])
        except zlib.error:
            out = b""
        if len(out) > _MIN_VMLINUX:
            return out
        at = image.find(_GZIP, at + 1)
    return None


def kheaders_tar(image: bytes) -> bytes:
    """The kheaders tar archive inside a bzImage or vmlinux (bytes of the file): the
    first xz stream that is a tar of ``./include`` and ``./arch``.

    :raises BadInput: no vmlinux Python can decompress inside (zstd, lz4, lzo), or no
        kheaders archive (CONFIG_IKHEADERS off).
    """
    vmlinux = image if image[:4] == b"\x7fELF" else (_payload(image) or _gzip_scan(image))
    if vmlinux is None:
        raise BadInput(
            "no vmlinux this tool can decompress in this kernel image: build it with "
            "CONFIG_KERNEL_GZIP (or XZ, BZIP2), or give vmlinux itself"
        )
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
    raise BadInput("this kernel image has no kheaders archive: build it with CONFIG_IKHEADERS=y")


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Only directories and regular files, with relative paths that stay inside."""
    out = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isdir() or m.isreg()):
            continue
        out.append(m)
    return out


def _complete(tree: Path) -> bool:
    """``tree`` was fully unpacked: its :data:`DONE` marker, or (trees unpacked before
    the marker, renamed into place whole) the header the probes need first."""
    return (tree / DONE).exists() or (tree / "include/linux/mm_types.h").exists()


def _unpack(data: bytes, dest: Path, kernel: Path) -> None:
    """Unpack the archive ``data`` into ``dest`` atomically: a temporary directory,
    completed with :data:`DONE`, renamed into place (another process may win)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".kheaders-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, members=_safe_members(tar))
        (tmp / DONE).write_text(f"{kernel}\n")
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _complete(dest):  # not another run's rename
            raise


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/cmaprof/kheaders`` (``~/.cache/cmaprof/kheaders``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "cmaprof" / "kheaders"


def extract_kheaders(kernel: Path, cache: Path | None = None, key: str | None = None) -> Path:
    """The directory of ``kernel``'s own headers (``include/``, ``arch/``), extracted
    once into ``cache`` (default :func:`default_cache`) under ``key`` (default the first
    16 hex digits of the image's sha256); a complete tree there is not read again.

    :param kernel: a bzImage or vmlinux built with CONFIG_IKHEADERS.
    :raises BadInput: see :func:`kheaders_tar`. :raises OSError: unreadable or unwritable.
    """
    root = cache or default_cache()
    if key and _complete(root / key):
        return root / key
    data = kernel.read_bytes()
    dest = root / (key or hashlib.sha256(data).hexdigest()[:16])
    if not _complete(dest):
        _unpack(kheaders_tar(data), dest, kernel)
    return dest
