"""The probe registry: which BPF programs exist, what they need, how they load.

Each probe is a ``<name>.bpf.c`` file in this package; the probes of one recording
are compiled together as one BPF module (one clang run: the kernel headers are
parsed once, which matters in a TCG guest) whose text is the probes' files in a row, with ``-DENABLE_<NAME>=1`` for each probe and the probes' ``-D`` options.
:func:`dump` prints exactly what :func:`load` would compile
(``cmaprof probes dump NAME...``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmaprof.errors import BadInput
from cmaprof.probes import abi

PROBES_DIR = Path(__file__).resolve().parent

#: Compiler flags the kernel's own build uses that BCC's fixed flag list lacks.
#: ``-fms-extensions``: the kernel builds with it since v6.19 (Rasmus Villemoes, "Kbuild:
#: enable -fms-extensions"), and 7.3's linux/fs.h embeds a tagged
#: struct anonymously (``struct filename { struct __filename_head; ... }``): without the
#: flag clang drops that member and fs.h's ``static_assert(sizeof(struct filename) % 64
#: == 0)`` fails. Older headers compile the same with it (checked on 6.1 and 6.12).
#: ``-Wno-ignored-attributes``: kernel headers with x86 IBT (arch/x86/include/asm/ibt.h,
#: ``#define __noendbr __attribute__((nocf_check))`` under CONFIG_X86_KERNEL_IBT, v5.18's
#: "x86: Kernel IBT" series) warn once per use under the BPF target: dozens of lines of
#: noise in front of every recording's messages on the 7.3 guest.
KERNEL_CFLAGS: tuple[str, ...] = ("-fms-extensions", "-Wno-ignored-attributes")


@dataclass(frozen=True)
class Probe:
    """A BPF program file and the tracepoints it cannot run without.

    :param name: probe name, also the stem of ``<name>.bpf.c`` and of its collector module.
    :param tracepoints: ``system/event`` names of which at least one must exist
        (empty: the probe has none; ``features.available_probes`` decides).
    :param options: default ``-D`` options (name -> value).
    :param opt_in: run only when asked for (``record --events``), never by default.
    """

    name: str
    description: str
    tracepoints: tuple[str, ...]
    options: Mapping[str, int]
    opt_in: bool = False

    @property
    def path(self) -> Path:
        return PROBES_DIR / f"{self.name}.bpf.c"


#: In include order: page_alloc calls bulk's bulk_note_alloc(); migrate adds its pages
#: to the cma call in flight.
PROBES: dict[str, Probe] = {
    # No tracepoint: kprobes on the bulk allocator (collectors/features.py decides).
    "bulk": Probe(
        name="bulk",
        description="bulk-allocator pages per node/zone (pgalloc_* without mm_page_alloc)",
        tracepoints=(),
        options={"BULK_MAX_SCAN": 512, "BULK_MAX_KEYS": 256, "BULK_MAX_TASKS": 4096},
    ),
    "page_alloc": Probe(
        name="page_alloc",
        description="pages per node/zone/order/gfp/migratetype/CMA area",
        tracepoints=("kmem/mm_page_alloc",),
        options={"MAX_KEYS": 16384, "MAX_FAIL_KEYS": 1024, "CALIB_PAIRS": 64},
    ),
    "cma": Probe(
        name="cma",
        description="cma_alloc() latency, outcome, retries, migrations, isolation",
        tracepoints=("cma/cma_alloc_start", "cma/cma_alloc"),
        options={"MAX_CMA_INFLIGHT": 1024, "CMA_RINGBUF_PAGES": 64},
    ),
    "migrate": Probe(
        name="migrate",
        description="migrate_pages() by reason and mode, with durations",
        tracepoints=("migrate/mm_migrate_pages",),
        options={"MAX_MIGRATE_KEYS": 256},
    ),
    # After cma (uses the call in flight); page_alloc calls blockers_note_alloc().
    "blockers": Probe(
        name="blockers",
        description="pages that block cma_alloc(), classified, with their placing allocation",
        tracepoints=("page_isolation/test_pages_isolated",),
        options={"BLK_MAX_LIST": 32, "BLK_RINGBUF_PAGES": 256},
    ),
    # Per-event records (record --events page_alloc[:FILTER]); after page_alloc.
    "stream": Probe(
        name="stream",
        description="one record per page allocation, filtered or sampled (--events)",
        tracepoints=("kmem/mm_page_alloc",),
        options={"STREAM_BATCH": abi.STREAM_BATCH, "STREAM_RINGBUF_PAGES": 4096},
        opt_in=True,
    ),
}


def get(name: str) -> Probe:
    """Return the probe called ``name`` or raise :class:`BadInput` listing the known ones."""
    try:
        return PROBES[name]
    except KeyError:
        raise BadInput(f"unknown probe {name!r}; known probes: {', '.join(PROBES)}") from None


def _ordered(names: Sequence[str]) -> list[Probe]:
    wanted = {get(n).name for n in names}
    return [p for p in PROBES.values() if p.name in wanted]


def cflags(names: Sequence[str], options: Mapping[str, Any] | None = None) -> list[str]:
    """Compiler flags: include path, ``ENABLE_*`` per probe, then every ``-D`` option,
    then ``$CMAPROF_CFLAGS`` (split like a shell would: e.g. ``-include fix.h`` to work
    around a kernel header, or a ``-D`` that overrides a detected feature)."""
    merged: dict[str, Any] = {}
    for p in _ordered(names):
        merged[f"ENABLE_{p.name.upper()}"] = 1
        merged.update(p.options)
    merged.update(options or {})
    extra = shlex.split(os.environ.get("CMAPROF_CFLAGS", ""))
    return [f"-I{PROBES_DIR}", *KERNEL_CFLAGS] + [f"-D{k}={v}" for k, v in merged.items()] + extra


def text(names: Sequence[str]) -> str:
    """The C text BCC compiles: ``common.h`` then the probes' files, in registry order,
    each behind a ``#line`` marker so that compiler errors name the real file.

    The files are pasted, not ``#include``d, because BCC rewrites map operations
    (``map.lookup()``) and builds ``struct tracepoint__*`` argument types only in the
    main file; ``common.h``'s include guard makes the probes' own ``#include`` a no-op.
    """
    parts = [PROBES_DIR / "common.h"] + [p.path for p in _ordered(names)]
    return "".join(f'#line 1 "{path}"\n{path.read_text()}\n' for path in parts)


def dump(names: Sequence[str], options: Mapping[str, Any] | None = None) -> str:
    """The exact flags and text that :func:`cmaprof.collectors.bccload.load_probes` would
    compile, with the sources."""
    lines = ["// cflags: " + " ".join(cflags(names, options)), text(names)]
    for hdr in ("events.h",):
        lines += [f"// ---- {PROBES_DIR / hdr}", (PROBES_DIR / hdr).read_text()]
    return "\n".join(lines)
