"""Whether the probes compile and load on this kernel, and which one does not.

``cmaprof doctor`` says "recording: possible" only when the default probes compile and
load here; ``cmaprof record`` fails with the same message before it creates anything.
A compile is slow (seconds on a host, minutes in a TCG guest), so each result is cached
per kernel (release, build string), headers, BCC version, probe set, ``-D`` options and
source text in ``~/.cache/cmaprof/compile.json``; a successful ``record`` stores its own
result. Only a compiler's own error is remembered as a failure.

The first compiler error names a file: a probe's own ``<name>.bpf.c`` (the module's text
carries ``#line`` markers) or a kernel header, attributed to the probe whose file
included it (clang's ``In file included from`` chain).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmaprof import probes
from cmaprof.collectors import bccload
from cmaprof.errors import EnvironmentProblem


def _cache_file() -> Path:
    """``$XDG_CACHE_HOME/cmaprof/compile.json`` (``~/.cache`` by default), read each time."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cmaprof/compile.json"


#: Probes that need another one compiled with them (probes/blockers.bpf.c #error).
NEEDS = {"blockers": ("cma",), "stream": ("page_alloc",)}

_ERROR = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<msg>.*)$")
_INCLUDED = re.compile(r"^In file included from (?P<file>[^:]+):\d+")


@dataclass(frozen=True)
class CompileFailure:
    """The first error of a failed compile or load.

    :param probe: the probe it is attributed to, or None (common code, or unknown).
    :param error: the compiler's first ``error:`` line, or BCC's exception text.
    """

    probe: str | None
    error: str

    def message(self, names: Sequence[str]) -> str:
        """One line: which probe, the first error, and what --skip-unavailable leaves out."""
        who = f"probe {self.probe} does" if self.probe else "the probes do"
        left = dependents(self.probe, names) if self.probe else []
        skip = (
            f"; add --skip-unavailable to record without {', '.join(left)}, or leave "
            f"{'it' if len(left) == 1 else 'them'} out of --probes"
            if left and self.probe != "page_alloc"
            else ""
        )
        return (
            f"{who} not compile or load on this kernel: {self.error}{skip}; "
            f"cmaprof probes dump {' '.join(names)} prints the exact source"
        )


class ProbeCompileError(EnvironmentProblem):
    """BCC could not compile or load the probes; :attr:`failure` says which and why."""

    def __init__(self, failure: CompileFailure, names: Sequence[str]) -> None:
        super().__init__(failure.message(names))
        self.failure = failure
        self.names = list(names)


def dependents(probe: str | None, names: Sequence[str]) -> list[str]:
    """``probe`` and the probes of ``names`` that cannot run without it."""
    if probe is None:
        return []
    out = [probe]
    for n in names:
        if n not in out and probe in NEEDS.get(n, ()):
            out.append(n)
    return [n for n in names if n in out]


def first_error(text: str) -> tuple[str, str] | None:
    """``(file, error line)`` of the first compiler error in ``text``, where ``file`` is
    the probe file that (perhaps through headers) holds it.

    clang prints an ``In file included from`` chain (outermost first: the probe's file)
    before a diagnostic whose include stack differs from the last one printed, so the
    last chain seen holds for every later diagnostic in a header.
    """
    including: str | None = None
    in_chain = False
    for line in text.splitlines():
        inc = _INCLUDED.match(line)
        if inc:
            if not in_chain:
                including = inc.group("file")
            in_chain = True
            continue
        in_chain = False
        m = _ERROR.match(line)
        if m:
            own = m.group("file")
            return (own if probe_of(own) or including is None else including), line.strip()
    return None


def probe_of(path: str) -> str | None:
    """The probe whose ``<name>.bpf.c`` is ``path``, or None."""
    name = Path(path).name
    if name.endswith(".bpf.c") and name[: -len(".bpf.c")] in probes.PROBES:
        return name[: -len(".bpf.c")]
    return None


def _capture_fd2(fn: Callable[[], Any]) -> tuple[Any, str, BaseException | None]:
    """Run ``fn`` with file descriptor 2 (where libbcc's clang writes) in a temporary
    file; the text is copied to the real stderr afterwards, so nothing is hidden."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        result: Any = None
        exc: BaseException | None = None
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - BCC raises a bare Exception
            exc = e
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    if text:
        sys.stderr.write(text)
        sys.stderr.flush()
    return result, text, exc


def failure_from(text: str, exc: BaseException) -> CompileFailure:
    """What the compiler's output (or BCC's exception) says went wrong."""
    found = first_error(text)
    if found is not None:
        return CompileFailure(probe_of(found[0]), found[1])
    return CompileFailure(None, str(exc) or type(exc).__name__)


def _kernel_id() -> str:
    u = os.uname()
    return f"{u.release} {u.version}"


def _headers_id() -> str:
    """What BCC compiles against, as it chooses (``BCC_KERNEL_SOURCE``, the modules'
    ``build`` link, or the kheaders archive): installing other headers is a new key."""
    rel = os.uname().release
    parts = [os.environ.get("BCC_KERNEL_SOURCE", "")]
    for p in (Path(f"/lib/modules/{rel}/build"), Path("/sys/kernel/kheaders.tar.xz")):
        try:
            parts.append(f"{p.resolve()}:{p.stat().st_mtime_ns}")
        except OSError:
            parts.append(f"{p}:-")
    return " ".join(parts)


def cache_key(names: Sequence[str], defines: Mapping[str, Any], bcc_version: str) -> str:
    h = hashlib.sha256()
    parts = (_kernel_id(), _headers_id(), bcc_version, probes.text(names))
    for part in (*parts, *probes.cflags(names, defines)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(key: str) -> CompileFailure | bool | None:
    """True (compiled), a :class:`CompileFailure`, or None (not known)."""
    entry = _read_cache().get(key)
    if not isinstance(entry, dict):
        return None
    if entry.get("ok"):
        return True
    return CompileFailure(entry.get("probe"), str(entry.get("error", "")))


def remember(key: str, result: CompileFailure | None) -> None:
    """Store one result (best effort: a read-only home only costs a compile later).
    Only a compiler's own error is remembered: anything else (BCC's bare exception
    without a diagnostic, a signal, memory) may not happen again."""
    if result is not None and " error: " not in result.error:
        return
    data = _read_cache()
    data[key] = (
        {"ok": True, "kernel": _kernel_id()}
        if result is None
        else {"ok": False, "kernel": _kernel_id(), "probe": result.probe, "error": result.error}
    )
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass


def _bcc_version() -> str:
    from cmaprof.collectors.bccload import import_bcc

    return str(getattr(import_bcc(), "__version__", "?"))


def raise_if_known(names: Sequence[str], defines: Mapping[str, Any]) -> None:
    """Raise :class:`ProbeCompileError` when the cache knows ``names`` fail here."""
    known = cached(cache_key(names, defines, _bcc_version()))
    if isinstance(known, CompileFailure):
        raise ProbeCompileError(known, names)


def load(names: Sequence[str], defines: Mapping[str, Any]) -> Any:
    """:func:`~cmaprof.collectors.bccload.load_probes`, raising :class:`ProbeCompileError`
    when the compiler reports an error (at once, without compiling, when the cache knows this set fails
    here); any other BCC exception (load, verifier, attach) is raised as it is."""
    key = cache_key(names, defines, _bcc_version())
    known = cached(key)
    if isinstance(known, CompileFailure):
        raise ProbeCompileError(known, names)
    bpf, text, exc = _capture_fd2(lambda: bccload.load_probes(names, defines))
    if exc is not None:
        if first_error(text) is None:
            # no compiler diagnostic: a load or attach failure (verifier, file
            # descriptors, a tracepoint's 64 program slots), the caller's to explain
            raise exc
        failure = failure_from(text, exc)
        remember(key, failure)
        raise ProbeCompileError(failure, names) from exc
    remember(key, None)
    return bpf


def check(names: Sequence[str], defines: Mapping[str, Any]) -> CompileFailure | None:
    """Compile and load ``names`` once (or answer from the cache); None when they load."""
    if cached(cache_key(names, defines, _bcc_version())) is True:
        return None
    try:
        load(names, defines).cleanup()
    except ProbeCompileError as exc:
        return exc.failure
    except Exception as exc:  # noqa: BLE001 - BCC's bare exception: load, verifier, attach
        return CompileFailure(None, str(exc) or type(exc).__name__)
    return None


def compile_only(names: Sequence[str], defines: Mapping[str, Any]) -> CompileFailure | None:
    """Compile ``names`` with clang through libbcc without loading or attaching any
    program (so a set with kprobes compiles on a host without them); None when it
    compiles. ``BCC_KERNEL_SOURCE`` chooses the headers, as for every BCC compile."""
    import ctypes as ct

    from cmaprof.collectors.bccload import import_bcc

    lib = import_bcc().lib
    flags = [f.encode() for f in probes.cflags(names, defines)]
    argv = (ct.c_char_p * len(flags))(*flags)
    text = probes.text(names).encode()

    def _compile() -> Any:
        mod = lib.bpf_module_create_c_from_string(text, 0, argv, len(flags), True, None)
        if not mod:
            raise RuntimeError("Failed to compile BPF module <text>")
        lib.bpf_module_destroy(mod)

    _, out, exc = _capture_fd2(_compile)
    return None if exc is None else failure_from(out, exc)
