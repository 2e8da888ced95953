"""Doctor check of the kernel headers BCC will compile the probes against: the
running kernel's, a linked fallback of another version, kheaders, or none."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cmaprof.collectors.doctor import files
from cmaprof.collectors.doctor.check import FAIL, OK, WARN, Check

_UTS = re.compile(r'^#define\s+UTS_RELEASE\s+"([^"]+)"', re.MULTILINE)


_VER = re.compile(r"^#define\s+LINUX_VERSION_(MAJOR|PATCHLEVEL|CODE)\s+(\d+)", re.MULTILINE)


def _major_minor(release: str) -> str:
    m = re.match(r"(\d+)\.(\d+)", release)
    return f"{m.group(1)}.{m.group(2)}" if m else release


def _headers_version(root: Path, tree: str) -> tuple[str | None, str | None]:
    """(UTS release, "major.minor") of the configured headers tree at ``tree``."""
    uts_text = files.read(root, f"{tree}/include/generated/utsrelease.h") or ""
    m = _UTS.search(uts_text)
    uts = m.group(1) if m else None
    ver_text = files.read(root, f"{tree}/include/generated/uapi/linux/version.h") or ""
    fields = {k: int(v) for k, v in _VER.findall(ver_text)}
    if "MAJOR" in fields and "PATCHLEVEL" in fields:
        mm: str | None = f"{fields['MAJOR']}.{fields['PATCHLEVEL']}"
    elif "CODE" in fields:
        mm = f"{fields['CODE'] >> 16}.{(fields['CODE'] >> 8) & 0xFF}"
    else:
        mm = _major_minor(uts) if uts else None
    return uts, mm


@dataclass(frozen=True)
class _Tree:
    """The headers tree BCC picks, as ``root`` shows it (paths inside root)."""

    release: str
    kdir: str
    build_host: Path
    build_in: str
    kpath_host: Path
    via: str
    env_src: str | None

    @property
    def own_headers(self) -> str:
        return f"linux-headers-{self.release}"

    @property
    def ikheaders_fix(self) -> str:
        return (
            f"install the running kernel's headers ({self.own_headers}) or boot a kernel "
            f"built with CONFIG_IKHEADERS"
        )


def _tree(root: Path, release: str, environ: Mapping[str, str]) -> _Tree:
    kdir = f"/lib/modules/{release}"
    build_host, build_in = files.resolve(root, f"{kdir}/build")
    source_host, source_in = files.resolve(root, f"{kdir}/source")
    env_src = environ.get("BCC_KERNEL_SOURCE")
    if env_src:
        kpath_host = files.resolve(root, env_src)[0]
        via = f"BCC_KERNEL_SOURCE={env_src}"
    elif files.is_dir(build_host) and files.is_dir(source_host):
        kpath_host = source_host
        via = f"{kdir}/build -> {build_in}, source -> {source_in}"
    else:
        kpath_host = build_host
        via = f"{kdir}/build -> {build_in}"
    return _Tree(release, kdir, build_host, build_in, kpath_host, via, env_src)


def check_headers(root: Path, release: str, environ: Mapping[str, str]) -> Check:
    """The kernel headers BCC will compile against, chosen as BCC's loader does.

    BCC uses ``$BCC_KERNEL_SOURCE``, else ``/lib/modules/<release>/source`` when both
    ``build`` and ``source`` are directories, else ``build``; when that tree has no
    ``include/linux/kconfig.h`` it extracts ``/sys/kernel/kheaders.tar.xz``
    (CONFIG_IKHEADERS, loading module ``kheaders`` when needed).
    """
    t = _tree(root, release, environ)
    kheaders = files.exists(root / "sys/kernel/kheaders.tar.xz")
    if files.is_file(t.kpath_host / "include/linux/kconfig.h"):
        return _check_tree(root, t, kheaders)
    return _check_kheaders(root, t, kheaders)


def _check_tree(root: Path, t: _Tree, kheaders: bool) -> Check:
    """A headers tree with ``kconfig.h``: complete? of the running kernel?"""
    name, release, kdir, env_src, via = "headers", t.release, t.kdir, t.env_src, t.via
    tree = env_src or f"{kdir}/build"
    # BCC's compile needs more than kconfig.h; a tree without these makes the
    # compile fail, and BCC 0.26 then crashes (SIGSEGV in BPF()) instead of raising.
    gen_host = t.kpath_host if env_src else t.build_host
    missing = [
        rel
        for base, rel in (
            (t.kpath_host, "include/linux/types.h"),
            (gen_host, "include/generated/autoconf.h"),
        )
        if not files.is_file(base / rel)
    ]
    if missing:
        return Check(
            name,
            FAIL,
            f"incomplete kernel headers at {via}: no {' and no '.join(missing)}; "
            f"BCC cannot compile against them",
            f"reinstall them ({t.own_headers}, or sudo make setup), or unset "
            f"BCC_KERNEL_SOURCE if it points there"
            if env_src
            else f"reinstall them ({t.own_headers}, or sudo make setup)",
            True,
        )
    uts, mm = _headers_version(root, tree)
    if uts == release:
        return Check(name, OK, f"headers of the running kernel {release} ({via})", "", True)
    distro = (
        "Debian "
        if t.build_in.startswith("/usr/src/linux-headers-")
        and files.exists(root / "etc/debian_version")
        else ""
    )
    if uts is None:
        return Check(
            name,
            WARN,
            f"headers at {via} of unknown version (no "
            f"include/generated/utsrelease.h): struct layouts and page-flag "
            f"shifts may differ from the running kernel {release}",
            t.ikheaders_fix,
            True,
        )
    detail = (
        f"LINKED FALLBACK: {distro}{mm} headers for a {_major_minor(release)} "
        f"kernel ({uts} for {release}, build -> {t.build_in}): struct layouts and "
        f"page-flag shifts may differ; cmaprof validates what it reads from "
        f"struct page at start-up"
    )
    fix = t.ikheaders_fix
    if kheaders and not env_src:
        detail += (
            "; /sys/kernel/kheaders.tar.xz matches the kernel but BCC prefers the build/ headers"
        )
        fix = (
            f"remove the links {kdir}/build and {kdir}/source so BCC uses "
            f"/sys/kernel/kheaders.tar.xz"
        )
    return Check(name, WARN, detail, fix, True)


def _check_kheaders(root: Path, t: _Tree, kheaders: bool) -> Check:
    """No usable headers tree: kheaders of the running kernel, or nothing."""
    name, release, kdir = "headers", t.release, t.kdir
    kheaders_mod = any(
        files.exists(root / f"lib/modules/{release}/kernel/kernel/kheaders.ko{s}")
        for s in ("", ".xz", ".zst", ".gz")
    )
    build_link = root / kdir.lstrip("/") / "build"
    if t.env_src or files.exists(t.build_host):
        lost = f"{t.via} has no include/linux/kconfig.h"
    elif build_link.is_symlink():
        lost = f"{kdir}/build -> {t.build_in}, which does not exist"
    else:
        lost = f"no {kdir}/build"
    if kheaders:
        return Check(
            name,
            OK,
            f"kheaders: /sys/kernel/kheaders.tar.xz of the running kernel "
            f"(CONFIG_IKHEADERS), which BCC extracts to /tmp ({lost})",
            "",
            True,
        )
    if kheaders_mod:
        return Check(
            name,
            OK,
            f"kheaders module of the running kernel (BCC loads it with modprobe kheaders; {lost})",
            "",
            True,
        )
    return Check(
        name,
        FAIL,
        f"no kernel headers for {release}: {lost} and no /sys/kernel/kheaders.tar.xz",
        f"sudo make setup (installs {t.own_headers} or links Debian's newest "
        f"headers), or boot a kernel with CONFIG_IKHEADERS",
        True,
    )
