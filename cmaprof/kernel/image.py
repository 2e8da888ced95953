"""The kernel headers built into a kernel image (CONFIG_IKHEADERS), without booting it.

``kernel/kheaders_data.tar.xz`` is linked into vmlinux as data; a bzImage carries
vmlinux compressed (``CONFIG_KERNEL_GZIP``, the test kernels' default). Extracting it
lets the host compile every probe against the exact headers of every test kernel in a
few seconds (``BCC_KERNEL_SOURCE``), where a compile inside a TCG guest takes minutes.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import tarfile
import zlib
from pathlib import Path

from cmaprof.errors import BadInput

_GZIP = b"\x1f\x8b\x08"
_XZ = b"\xfd7zXZ\x00"
#: vmlinux is larger than this; smaller gzip streams in a bzImage are something else.
_MIN_VMLINUX = 1 << 20
#: the kheaders archive of 6.x/7.x kernels is 4-5 MB; read this much after its magic.
_MAX_XZ = 32 << 20


def _vmlinux(image: bytes) -> bytes:
    at = image.find(_GZIP)
    while at >= 0:
        try:
            out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(image[at:])
        except zlib.error:
            out = b""
        if len(out) > _MIN_VMLINUX:
            return out
        at = image.find(_GZIP, at + 1)
    raise BadInput(
        "no gzip-compressed vmlinux in this kernel image: build it with CONFIG_KERNEL_GZIP "
        "(the default of scripts/build-test-kernel.sh) or give vmlinux itself"
    )


def kheaders_tar(image: bytes) -> bytes:
    """The kheaders tar archive inside a bzImage or vmlinux (bytes of the file).

    :raises BadInput: no gzip vmlinux inside, or no kheaders archive (CONFIG_IKHEADERS off).
    """
    vmlinux = image if image[:4] == b"\x7fELF" else _vmlinux(image)
    at = vmlinux.find(_XZ)
    while at >= 0:
        try:
            tar = lzma.LZMADecompressor().decompress(vmlinux[at : at + _MAX_XZ])
            with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
                if any(n.endswith("include/linux/mm_types.h") for n in tf.getnames()):
                    return tar
        except (lzma.LZMAError, tarfile.TarError, EOFError):
            pass
        at = vmlinux.find(_XZ, at + 1)
    raise BadInput("this kernel image has no kheaders archive: build it with CONFIG_IKHEADERS=y")


def extract_kheaders(kernel: Path, cache: Path | None = None) -> Path:
    """The directory of ``kernel``'s own headers (``include/``, ``arch/``), extracted
    once into ``cache`` (default ``~/.cache/cmaprof/kheaders``) under its sha256.

    :param kernel: a bzImage (gzip payload) or vmlinux built with CONFIG_IKHEADERS.
    """
    data = kernel.read_bytes()
    root = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / (
        "cmaprof/kheaders"
    )
    dest = root / hashlib.sha256(data).hexdigest()[:16]
    if (dest / "include/linux/mm_types.h").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(kheaders_tar(data))) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(tmp, filter="data")
        else:  # Python before 3.11.4: the archive is the kernel's own, names are plain
            tf.extractall(tmp)
    if dest.exists():
        shutil.rmtree(tmp)
    else:
        tmp.replace(dest)
    return dest
