"""The kernel headers a guest kernel carries (``CONFIG_IKHEADERS``), extracted on the host.

BCC in a guest without a headers package for its kernel unpacks
``/sys/kernel/kheaders.tar.xz`` (about 38 MB of headers, 7.5 k files on 7.3) into
``/tmp/kheaders-<release>`` on its first compile of each boot: xz and tar under TCG. The
same archive is inside the bzImage (kernel/kheaders.c embeds it in .rodata), so the host
unpacks it once per kernel, in seconds, into ``~/.cache/cmaprof/kheaders/<sha256[:16]>/`` (the probe matrix's tree),
and the guest's BCC reads it from there (``BCC_KERNEL_SOURCE``; the host's root is the
guest's). A kernel without the archive, or compressed in a way Python cannot undo
(zstd, lz4, lzo), gets None: BCC then does what it does without us.
"""

from __future__ import annotations

from pathlib import Path

from cmaprof.errors import BadInput
from cmaprof.guest.kvm import cache_dir
from cmaprof.kernel import image


def host_kheaders(kernel: Path, sha256: str) -> Path | None:
    """The unpacked kheaders of ``kernel`` (sha256 ``sha256``) on the host, unpacking
    them on first use (:func:`cmaprof.kernel.image.extract_kheaders`); None when it has
    none we can read or the cache is not writable."""
    if not sha256:
        return None
    try:
        return image.extract_kheaders(kernel, cache_dir() / "kheaders", key=sha256[:16])
    except (BadInput, OSError):
        return None
