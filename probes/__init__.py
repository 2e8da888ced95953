"""The probe registry: which BPF programs exist, what they need, how they load.

Each probe is a ``<name>.bpf.c`` file in this package, compiled by BCC with ``-D``
options. :func:`dump` prints exactly what :func:`load` would compile, for verifier
and compile errors (``cmaprof probes dump NAME``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmaprof.errors import BadInput

PROBES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Probe:
    """A BPF program file and the tracepoints it cannot run without.

    :param name: probe name, also the stem of ``<name>.bpf.c`` and of the collector module.
    :param tracepoints: ``system/event`` names that must exist in tracefs.
    :param options: default ``-D`` options (name -> value).
    """

    name: str
    description: str
    tracepoints: tuple[str, ...]
    options: Mapping[str, int]

    @property
    def path(self) -> Path:
        return PROBES_DIR / f"{self.name}.bpf.c"


PROBES: dict[str, Probe] = {
    "page_alloc": Probe(
        name="page_alloc",
        description="pages per node/zone/order/gfp/migratetype/CMA area (kmem:mm_page_alloc)",
        tracepoints=("kmem/mm_page_alloc",),
        options={"MAX_KEYS": 16384, "MAX_FAIL_KEYS": 1024, "CALIB_PAIRS": 256},
    ),
}


def get(name: str) -> Probe:
    """Return the probe called ``name`` or raise :class:`BadInput` listing the known ones."""
    try:
        return PROBES[name]
    except KeyError:
        raise BadInput(f"unknown probe {name!r}; known probes: {', '.join(sorted(PROBES))}")


def cflags(probe: Probe, options: Mapping[str, Any] | None = None) -> list[str]:
    """The compiler flags for ``probe``: its include path and ``-DNAME=value`` options."""
    merged = dict(probe.options)
    merged.update(options or {})
    return [f"-I{PROBES_DIR}"] + [f"-D{k}={v}" for k, v in sorted(merged.items())]


def source(probe: Probe) -> str:
    """The C text that BCC compiles (the ``.bpf.c`` file; ``events.h`` is included)."""
    return probe.path.read_text()


def dump(name: str, options: Mapping[str, Any] | None = None) -> str:
    """The exact flags and source that :func:`load` would compile, as one text."""
    probe = get(name)
    lines = [
        f"// probe {probe.name}: {probe.path}",
        "// cflags: " + " ".join(cflags(probe, options)),
    ]
    lines.append(source(probe))
    lines.append(f"// ---- {PROBES_DIR / 'events.h'}")
    lines.append((PROBES_DIR / "events.h").read_text())
    return "\n".join(lines)


def load(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """Compile ``name`` with BCC and return the ``bcc.BPF`` object (nothing attached).

    Programs are named without BCC's auto-attach prefixes, so the collector decides
    what to attach and when.
    """
    from cmaprof.collectors.bccload import import_bcc

    bcc = import_bcc()
    probe = get(name)
    return bcc.BPF(src_file=str(probe.path).encode(), cflags=cflags(probe, options))
