"""What makes a TCG guest iteration shorter: the guest kernel's headers unpacked on the
host from its bzImage (cmaprof.guest.kheaders), the root file system's 9p cache mode."""

import gzip
import io
import lzma
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from cmaprof.guest import kheaders
from cmaprof.guest.launch import ROOT_9P_FLAGS, guest_script, vng_argv
from cmaprof.guest.options import VmOptions

SHARED_7_3 = Path("/work/shared/kernels/bzImage-7.3.4-cma")


def _tar_xz(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ)


def _bzimage(vmlinux: bytes, setup_sects: int = 3) -> bytes:
    """A bzImage as the boot protocol lays it out: setup, then the gzip payload."""
    payload = gzip.compress(vmlinux)
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, 0x40, len(payload))
    return bytes(setup) + b"\0" * 0x40 + payload + b"\0" * 16


def _vmlinux(archive: bytes) -> bytes:
    # another xz stream first (not a kheaders tar): the search must go past it
    other = _tar_xz({"./firmware/blob": b"x"})
    return b"\x7fELF" + b"\0" * 100 + other + b"\0" * 33 + archive + b"\0" * 50


def test_headers_are_unpacked_once_and_found_by_sha(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = _tar_xz(
        {
            "./include/linux/mm.h": b"#define X 1\n",
            "./arch/x86/include/asm/page.h": b"#define Y 2\n",
        }
    )
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(_bzimage(_vmlinux(archive)))
    tree = kheaders.host_kheaders(kernel, "ab12")
    assert tree == tmp_path / "cache/cmaprof/kheaders/ab12"
    assert (tree / "include/linux/mm.h").read_bytes() == b"#define X 1\n"
    assert (tree / "arch/x86/include/asm/page.h").read_bytes() == b"#define Y 2\n"
    kernel.write_bytes(b"gone")  # the second call does not read the kernel again
    assert kheaders.host_kheaders(kernel, "ab12") == tree


def test_unsafe_members_are_not_extracted(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    link = tarfile.TarInfo("./include/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = _tar_xz({"./include/a.h": b"a", "./arch/b.h": b"b", "../outside.h": b"no"}, [link])
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(_bzimage(_vmlinux(archive)))
    tree = kheaders.host_kheaders(kernel, "cd34")
    assert tree is not None and (tree / "include/a.h").exists()
    assert not (tree / "include/evil").exists() and not (tree.parent / "outside.h").exists()


@pytest.mark.parametrize(
    "image",
    [b"not a kernel", _bzimage(b"\x7fELF no archive in here")],
    ids=["not-a-bzimage", "no-kheaders"],
)
def test_no_headers_means_none(tmp_path, monkeypatch, image):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(image)
    assert kheaders.host_kheaders(kernel, "ef56") is None
    assert kheaders.host_kheaders(kernel, "") is None


@pytest.mark.skipif(not SHARED_7_3.exists(), reason="no shared 7.3.4 kernel")
def test_the_shared_kernel_has_the_headers_bcc_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tree = kheaders.host_kheaders(SHARED_7_3, "shared")
    assert tree is not None
    # what BCC reads first, and the mm headers the probes include
    for f in ("include/generated/autoconf.h", "include/linux/kconfig.h",
              "include/linux/mmzone.h", "arch/x86/include/asm/page.h"):  # fmt: skip
        assert (tree / f).is_file(), f
    assert "#define CONFIG_CMA 1" in (tree / "include/generated/autoconf.h").read_text()


def test_the_guest_script_exports_the_headers(tmp_path):
    script = guest_script(tmp_path, ["true"], {"BCC_KERNEL_SOURCE": "/c/kh/ab 12"})
    assert "export BCC_KERNEL_SOURCE='/c/kh/ab 12'\n" in script
    assert "BCC_KERNEL_SOURCE" not in guest_script(tmp_path, ["true"])


def test_the_root_is_mounted_with_a_cache_and_a_user_append_still_wins(tmp_path):
    opts = VmOptions(kernel=tmp_path / "bzImage", command=["true"])
    argv = vng_argv(Path("/x/vng"), opts, ["cma=256M", "rootflags=trans=virtio"], tmp_path, False)
    words = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert words == [ROOT_9P_FLAGS, "cma=256M", "rootflags=trans=virtio"]
    # vng's own words (virtme --force-9p) kept, the cache mode added
    assert ROOT_9P_FLAGS.split(",") == [
        "rootflags=version=9p2000.L",
        "trans=virtio",
        "access=any",
        "msize=524288",
        "cache=loose",
    ]


def test_under_tcg_bpf_stats_is_on_from_boot_before_the_command(tmp_path):
    """Under TCG the sampling windows must not flip bpf_stats_enabled_key (launch.py
    TCG_STATS_ON: a stale int3 in bpf_trace_run4 panicked a 6.12 guest)."""
    tcg = guest_script(tmp_path, ["cmaprof", "record"], tcg=True)
    on = tcg.index("echo 1 >/proc/sys/kernel/bpf_stats_enabled")
    assert on < tcg.index("cmaprof record")
    assert "bpf_stats_enabled" not in guest_script(tmp_path, ["cmaprof", "record"])
    subprocess.run(["sh", "-n"], input=tcg, text=True, check=True)


def test_extract_kheaders_says_what_is_missing(tmp_path):
    """cmaprof.kernel.image, under both the probe matrix and vm run: one clear error."""
    from cmaprof.errors import BadInput
    from cmaprof.kernel.image import extract_kheaders

    kernel = tmp_path / "bzImage"
    kernel.write_bytes(_bzimage(b"\x7fELF no archive in here"))
    with pytest.raises(BadInput, match="CONFIG_IKHEADERS=y"):
        extract_kheaders(kernel, tmp_path / "cache")
    kernel.write_bytes(b"not a kernel")
    with pytest.raises(BadInput, match="decompress"):
        extract_kheaders(kernel, tmp_path / "cache")


def test_an_int3_oops_is_named_as_tcg_text_patching(tmp_path):
    """The console of the 7.3.4 coexist guest that panicked in CI (2026-12-07)."""
    from cmaprof.guest import diagnose
    from cmaprof.guest.launch import LaunchResult

    log = tmp_path / "console.log"
    log.write_text(
        "[   13.244093] Oops: int3: 0000 [#1] SMP NOPTI\n"
        "[   13.245166] RIP: 0010:__schedule+0x410/0xf60\n"
        "[   13.252058] Kernel panic - not syncing: Fatal exception in interrupt\n"
    )
    opts = VmOptions(kernel=SHARED_7_3, command=["true"])
    text = str(diagnose.failure(LaunchResult(returncode=1), log, opts))
    assert "panicked" in text and "TCG" in text and "run again" in text
    log.write_text(
        "[ 1.0] BUG: kernel NULL pointer dereference\n[ 1.1] Kernel panic - not syncing\n"
    )
    assert "TCG" not in str(diagnose.failure(LaunchResult(returncode=1), log, opts))
