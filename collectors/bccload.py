"""Importing BCC's Python bindings, with one clear message for each way it goes wrong.

BCC is not on PyPI: cmaprof uses Debian's ``python3-bpfcc``, installed for Debian's own
interpreter (``/usr/bin/python3``) in ``/usr/lib/python3/dist-packages/bcc``. It is
importable from a virtual environment only when that environment was made from
``/usr/bin/python3`` with ``--system-site-packages``. The PyPI package called ``bcc`` is
an unrelated project; when installed it shadows the real module (it has no ``bcc.BPF``).

Nothing here imports ``bcc`` at module import time: ``analysis`` and the unit tests run
without it.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from cmaprof.collectors.bpfmodule import SYS_BPF
from cmaprof.errors import EnvironmentProblem

#: Where Debian's python3-bpfcc installs the bindings.
DEBIAN_BCC = Path("/usr/lib/python3/dist-packages/bcc/__init__.py")
#: The interpreter python3-bpfcc is built for.
DEBIAN_PYTHON = Path("/usr/bin/python3")

VENV_FIX = (
    "sudo make setup, or by hand: /usr/bin/python3 -m venv --system-site-packages "
    ".venv && .venv/bin/pip install -e '.[test,vm]'"
)


class BccProblem(EnvironmentProblem):
    """BCC cannot be imported; :attr:`problem` says why and :attr:`fix` what to do."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; fix: {fix}")
        self.problem = problem
        self.fix = fix


def _module_file(mod: ModuleType) -> str:
    f = getattr(mod, "__file__", None)
    if f:
        return str(f)
    paths = list(getattr(mod, "__path__", []) or [])
    return str(paths[0]) if paths else "<unknown location>"


def _venv_system_site(prefix: str) -> bool | None:
    """``include-system-site-packages`` of the venv at ``prefix`` (None: not a venv)."""
    try:
        text = (Path(prefix) / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages":
            return value.strip().lower() == "true"
    return False


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _explain_missing(exc: BaseException) -> BccProblem:
    """Why ``import bcc`` failed in this interpreter, and what to do."""
    here = f"{sys.executable} (Python {sys.version.split()[0]})"
    if not DEBIAN_BCC.exists():
        return BccProblem(
            f"BCC's Python bindings are not installed ({exc})",
            "apt-get install python3-bpfcc (or sudo make setup); cmaprof uses Debian's BCC, "
            "never the PyPI package called bcc",
        )
    if sys.prefix != sys.base_prefix and _venv_system_site(sys.prefix) is False:
        return BccProblem(
            f"BCC is installed for /usr/bin/python3 but the virtual environment {sys.prefix} "
            f"was made without --system-site-packages, so {here} cannot import it",
            f"recreate the venv: {VENV_FIX}",
        )
    base = getattr(sys, "_base_executable", sys.executable)
    if not (_same_file(base, DEBIAN_PYTHON) or _same_file(sys.executable, DEBIAN_PYTHON)):
        return BccProblem(
            f"BCC (python3-bpfcc) is installed for Debian's /usr/bin/python3, but cmaprof "
            f"runs under another interpreter, {here}, which cannot import it",
            f"run cmaprof from a venv made from /usr/bin/python3: {VENV_FIX}",
        )
    return BccProblem(
        f"`import bcc` failed in {here} although {DEBIAN_BCC.parent} exists: {exc}",
        "apt-get install --reinstall python3-bpfcc libbpfcc",
    )


def import_bcc() -> ModuleType:
    """Import and return BCC's ``bcc`` module.

    :raises BccProblem: (an :class:`EnvironmentProblem`) BCC is not installed; this
        interpreter cannot import Debian's BCC (another interpreter, or a venv without
        system site packages); libbcc cannot be loaded; or the unrelated PyPI package
        ``bcc`` shadows it.
    """
    try:
        bcc = importlib.import_module("bcc")
    except ImportError as exc:
        raise _explain_missing(exc) from exc
    except OSError as exc:  # bcc/libbcc.py loads libbcc.so.0 with ctypes at import
        raise BccProblem(
            f"BCC's Python bindings were found but libbcc could not be loaded ({exc})",
            "apt-get install --reinstall libbpfcc python3-bpfcc",
        ) from exc
    if getattr(bcc, "__file__", None) is None and not hasattr(bcc, "BPF"):
        # A directory without __init__.py imports as a namespace package: what a
        # half-removed python3-bpfcc (or an empty directory mounted over it) leaves.
        sys.modules.pop("bcc", None)
        raise _explain_missing(ImportError(f"{_module_file(bcc)} has no __init__.py"))
    if not hasattr(bcc, "BPF"):
        raise BccProblem(
            f"the module `bcc` imported from {_module_file(bcc)} is not BCC (it has no "
            f"bcc.BPF): it is the unrelated PyPI package called bcc, shadowing Debian's "
            f"python3-bpfcc",
            f"{sys.executable} -m pip uninstall bcc",
        )
    return bcc


def describe(bcc: ModuleType) -> str:
    """``bcc <version> from <directory>``, for doctor and recording metadata."""
    version = getattr(bcc, "__version__", None) or "(version unknown)"
    return f"bcc {version} from {Path(_module_file(bcc)).parent}"


def load_probes(names: Sequence[str], options: Mapping[str, Any] | None = None) -> Any:
    """Compile the probes ``names`` into one ``bcc.BPF`` module.

    Programs named with BCC's prefixes (``TRACEPOINT_PROBE``, ``kprobe__``) attach at
    load and count only while the config map says ``enabled``; the page_alloc
    programs have plain names and are attached by their collector.

    For a set of :data:`HEADER_FREE_PROBES` whose mm constants an earlier run stored
    (:func:`remember_layout`) under the same :func:`layout_key`, the module is
    compiled without the mm headers (``-DCMAPROF_HEADERS_CACHED=1``, common.h); the
    module's ``cmaprof_layout_key`` and ``cmaprof_headers_cached`` say which.
    """
    from cmaprof import probes

    bcc = import_bcc()
    warm = threading.Thread(target=_warm_imports, name="warm-imports", daemon=True)
    warm.start()
    cflags = probes.cflags(names, options)
    key = layout_key(names, cflags)
    layout = cached_layout(key) if set(names) <= HEADER_FREE_PROBES else None
    extra = header_free_cflags(layout) if layout else []
    b = bcc.BPF(text=probes.text(names).encode(), cflags=cflags + extra)
    b.cmaprof_layout_key, b.cmaprof_headers_cached = key, bool(layout)
    return b


#: What the end of a recording imports that is slow to import in a TCG guest (pandas,
#: for the derived tables: 44 s cold in the 7.3.4 guest): imported in a thread while
#: BCC compiles, a ctypes call that releases the GIL, on another CPU.
WARM_IMPORTS = ("cmaprof.recording.derived",)


def _warm_imports() -> None:
    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - only a head start; the real import reports
            return


#: Probes whose C needs from the kernel's mm headers only the constants of
#: :data:`LAYOUT_FIELDS` (common.h ``CMAPROF_HEADERS_CACHED``).
HEADER_FREE_PROBES = frozenset({"page_alloc", "stream", "migrate"})
#: ``struct layout_info`` members (as calib_raw fills them) -> the -D that restates
#: them for a header-free compile.
LAYOUT_FIELDS = {
    "zones_pgshift": "ZONES_PGSHIFT_OVERRIDE",
    "zones_mask": "ZONES_MASK_OVERRIDE",
    "nodes_pgshift": "NODES_PGSHIFT_OVERRIDE",
    "nodes_mask": "NODES_MASK_OVERRIDE",
    "page_struct_size": "CMAPROF_PAGE_STRUCT_SIZE",
    "gfp_movable": "CMAPROF_GFP_MOVABLE",
}


def _layout_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cmaprof" / "layout.json"


def layout_key(names: Sequence[str], cflags: Sequence[str]) -> str:
    """What the header constants depend on: the running kernel (release and build
    string), the headers BCC would use (their directory, resolved, and the mtime of
    its generated autoconf.h; or the kernel's kheaders archive), ``BCC_KERNEL_SOURCE``,
    BCC's version, the probes' exact text and flags."""
    import hashlib

    from cmaprof import probes

    u = os.uname()
    build = Path(os.environ.get("BCC_KERNEL_SOURCE") or f"/lib/modules/{u.release}/build")
    stamps = []
    for f in (build / "include/generated/autoconf.h", Path("/sys/kernel/kheaders.tar.xz")):
        try:
            stamps.append(f"{f.resolve()}:{f.stat().st_mtime_ns}")
        except OSError:
            stamps.append(f"{f}:absent")
    bcc_version = str(getattr(sys.modules.get("bcc"), "__version__", ""))
    h = hashlib.sha256()
    for part in (u.release, u.version, str(build.resolve()), *stamps, bcc_version,
                 probes.text(names), *cflags):  # fmt: skip
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def cached_layout(key: str) -> dict[str, int] | None:
    """The constants stored under ``key``, or None (absent, unreadable, incomplete)."""
    import json

    try:
        entry = json.loads(_layout_file().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or set(entry) != set(LAYOUT_FIELDS):
        return None
    return {k: int(v) for k, v in entry.items()}


def remember_layout(key: str, layout: Mapping[str, int]) -> None:
    """Store the constants a full compile had (best effort: a read-only home only
    costs the next run a full compile)."""
    import json
    import tempfile

    if set(layout) != set(LAYOUT_FIELDS) or not (
        layout["page_struct_size"] and layout["gfp_movable"]
    ):
        return
    path = _layout_file()
    try:
        data = json.loads(path.read_text())
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[key] = {k: int(v) for k, v in layout.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".layout-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


def header_free_cflags(layout: Mapping[str, int]) -> list[str]:
    """The -D flags of a header-free compile with these constants."""
    return ["-DCMAPROF_HEADERS_CACHED=1"] + [
        f"-D{LAYOUT_FIELDS[k]}={int(layout[k])}" for k in LAYOUT_FIELDS
    ]


#: ``enum bpf_prog_type`` / ``enum bpf_attach_type`` / ``enum bpf_cmd`` values of
#: include/uapi/linux/bpf.h (a stable ABI) for a BTF-typed raw tracepoint.
_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_TRACING = 26
_BPF_TRACE_RAW_TP = 23
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")


class TpBtfUnavailable(EnvironmentProblem):
    """A tp_btf program could not be loaded or attached here; the message says why."""


def _prog_load_attr() -> Any:
    """``union bpf_attr`` for BPF_PROG_LOAD, up to ``attach_btf_id`` (v5.5), zero-padded."""
    import ctypes as ct

    class Attr(ct.Structure):
        _fields_ = [
            ("prog_type", ct.c_uint32),
            ("insn_cnt", ct.c_uint32),
            ("insns", ct.c_uint64),
            ("license", ct.c_uint64),
            ("log_level", ct.c_uint32),
            ("log_size", ct.c_uint32),
            ("log_buf", ct.c_uint64),
            ("kern_version", ct.c_uint32),
            ("prog_flags", ct.c_uint32),
            ("prog_name", ct.c_char * 16),
            ("prog_ifindex", ct.c_uint32),
            ("expected_attach_type", ct.c_uint32),
            ("prog_btf_fd", ct.c_uint32),
            ("func_info_rec_size", ct.c_uint32),
            ("func_info", ct.c_uint64),
            ("func_info_cnt", ct.c_uint32),
            ("line_info_rec_size", ct.c_uint32),
            ("line_info", ct.c_uint64),
            ("line_info_cnt", ct.c_uint32),
            ("attach_btf_id", ct.c_uint32),
            ("tail", ct.c_uint64 * 8),
        ]

    return Attr()


def attach_tp_btf(bpf: Any, fn_name: str, tracepoint: str) -> int:
    """Load ``fn_name`` of ``bpf`` as a BTF-typed raw tracepoint (tp_btf) on
    ``tracepoint`` and attach it; returns the link fd (close it to detach).

    BCC 0.26 loads TRACING programs only as fentry/fexit (its name prefixes), so the
    bytes BCC compiled (map fds already in place) are loaded here with
    ``expected_attach_type = BPF_TRACE_RAW_TP`` and the BTF id of
    ``btf_trace_<tracepoint>`` (libbpf's ``libbpf_find_vmlinux_btf_id``); the program
    then appears in ``bpf.funcs`` like any BCC program (bpf_stats, cleanup).

    :raises TpBtfUnavailable: no vmlinux BTF, no such BTF type, or the kernel refused
        the load (before v5.5) or the attach; the caller falls back to ``raw_tp``.
    """
    import ctypes as ct

    bcc = import_bcc()
    if not VMLINUX_BTF.exists():
        raise TpBtfUnavailable(f"no {VMLINUX_BTF} (kernel without CONFIG_DEBUG_INFO_BTF)")
    try:
        libbpf = ct.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise TpBtfUnavailable(f"libbpf.so.1 not loadable: {exc}") from exc
    find = libbpf.libbpf_find_vmlinux_btf_id
    find.argtypes, find.restype = [ct.c_char_p, ct.c_int], ct.c_int
    btf_id = find(tracepoint.encode(), _BPF_TRACE_RAW_TP)
    if btf_id <= 0:
        raise TpBtfUnavailable(f"vmlinux BTF has no btf_trace_{tracepoint}")
    lib, name = bcc.lib, fn_name.encode()
    start = lib.bpf_function_start(bpf.module, name)
    if not start:
        raise TpBtfUnavailable(f"the module has no program {fn_name}")
    size = lib.bpf_function_size(bpf.module, name)
    license_ = ct.c_char_p(lib.bpf_module_license(bpf.module))
    log = ct.create_string_buffer(1 << 16)
    attr = _prog_load_attr()
    attr.prog_type, attr.insn_cnt = _BPF_PROG_TYPE_TRACING, size // 8
    attr.insns = ct.cast(start, ct.c_void_p).value or 0
    attr.license = ct.cast(license_, ct.c_void_p).value or 0
    attr.prog_name = name[:15]
    attr.expected_attach_type, attr.attach_btf_id = _BPF_TRACE_RAW_TP, btf_id
    libc = ct.CDLL(None, use_errno=True)
    fd = libc.syscall(SYS_BPF, _BPF_PROG_LOAD, ct.byref(attr), ct.sizeof(attr))
    if fd < 0:
        err = ct.get_errno()
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ct.addressof(log)
        libc.syscall(SYS_BPF, _BPF_PROG_LOAD, ct.byref(attr), ct.sizeof(attr))
        tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise TpBtfUnavailable(
            f"the kernel refused {fn_name} as tp_btf ({os.strerror(err)}): {' / '.join(tail)}"
        )
    link = lib.bpf_attach_kfunc(fd)  # bpf_raw_tracepoint_open(NULL, fd)
    if link < 0:
        os.close(fd)
        raise TpBtfUnavailable(f"cannot attach {fn_name} to tp_btf/{tracepoint}")
    bpf.funcs[name] = bcc.BPF.Function(bpf, name, fd)
    return int(link)
