"""``record --by comm,tgid,stack``: the keys, their ``-D`` defines, and the page_alloc
cube by process and kernel stack read at the end of the recording.

With any of ``PA_BY_COMM``/``PA_BY_TGID``/``PA_BY_STACK`` compiled in,
probes/page_alloc.bpf.c adds every event the cube counted to the per-CPU hash
``page_alloc_by`` (``struct page_alloc_by_key`` of probes/events.h) and, with
``PA_BY_STACK``, the kernel stack to the stack map ``pa_stacks``. When the recording is
finished :func:`by_table` reads the hash into the ``page_alloc_by`` table
(cmaprof/recording/schema.py) and :func:`by_info` gives its metadata
(:class:`cmaprof.recording.metadata.PageAllocByInfo`); the stacks are symbolised by
:mod:`cmaprof.collectors.stacks` into ``stacks`` (map ``pa_stacks``). Events that found
the hash full are counted in ``page_alloc_stats`` (``PA_STAT_BY_OVERFLOW_*``): the
cube's totals are ``page_alloc_by``'s plus those, exactly.

One parser for ``--by`` (:func:`by_defines`) serves both probes: ``stack`` also keys
the blockers probe's origin entries (``BLK_BY_STACK``) when that probe runs.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from cmaprof.errors import BadInput
from cmaprof.probes import abi
from cmaprof.recording import schema

#: The stack map of the page_alloc cube by stack (probes/page_alloc.bpf.c).
STACK_MAP = "pa_stacks"
#: ``record --by`` keys, their ``-D`` define in page_alloc.bpf.c and what each keys.
BY_KEYS = {
    "comm": ("PA_BY_COMM", "the page_alloc cube by process name (the task's comm)"),
    "tgid": ("PA_BY_TGID", "the page_alloc cube by process id (tgid)"),
    "stack": (
        "PA_BY_STACK",
        (
            "the page_alloc cube by kernel stack; with the blockers probe, also the "
            "placing allocation of each CMA page"
        ),
    ),
}
KEY_FIELDS = [f for f, _ in schema.PAGE_ALLOC_KEYS]


def parse_by(text: str | None) -> list[str]:
    """``comm,stack`` -> ``["comm", "stack"]`` (blanks dropped, order kept, no repeats)."""
    out: list[str] = []
    for k in (text or "").split(","):
        k = k.strip()
        if k and k not in out:
            out.append(k)
    return out


#: ``--by-entries`` bounds: a key is 40 bytes per CPU, a stack PA_STACK_DEPTH * 8 bytes.
MAX_ENTRIES = 1 << 20


def by_defines(
    by: list[str], probes_chosen: list[str], entries: int | None = None
) -> dict[str, int]:
    """The ``-D`` options of ``record --by KEY,...``: ``PA_BY_<KEY>=1`` for each key,
    and ``BLK_BY_STACK=1`` for ``stack`` when the blockers probe runs.

    :param probes_chosen: the probes of this recording (page_alloc is always one).
    :param entries: ``--by-entries``: keys of ``page_alloc_by`` and stacks of
        ``pa_stacks`` (None: the events.h defaults, PA_BY_ENTRIES, PA_STACK_ENTRIES).
    :raises BadInput: an unknown key; ``--by-entries`` without ``--by`` or out of range.
    """
    for key in by:
        if key not in BY_KEYS:
            raise BadInput(
                f"--by {key}: unknown key; known: {', '.join(BY_KEYS)} "
                f"(combinable, e.g. --by comm,stack)"
            )
    out = {BY_KEYS[k][0]: 1 for k in by}
    if "stack" in by and "blockers" in probes_chosen:
        out["BLK_BY_STACK"] = 1
    if entries is not None:
        if not by:
            raise BadInput("--by-entries sizes the tables of --by: give --by KEY too")
        if not 1 <= entries <= MAX_ENTRIES:
            raise BadInput(f"--by-entries {entries}: give 1 to {MAX_ENTRIES}")
        out["PA_BY_ENTRIES"] = entries
        if "stack" in by:
            out["PA_STACK_ENTRIES"] = entries
    return out


def keys_of(defines: dict[str, Any]) -> list[str]:
    """The ``--by`` keys a module was compiled with, in :data:`BY_KEYS` order."""
    return [k for k, (d, _) in BY_KEYS.items() if int(defines.get(d, 0) or 0)]


def _cstr(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


def by_rows(items: Any, keys: list[str]) -> dict[str, list]:
    """Column lists of ``page_alloc_by`` from the hash's (key, per-CPU leaves) pairs.

    :param keys: the ``--by`` keys compiled in; a key part not asked for is null.
    """
    rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["page_alloc_by"]}
    for k, leaves in items:
        for f in KEY_FIELDS:
            rows[f].append(int(getattr(k.cube, f)))
        rows["tgid"].append(int(k.tgid) if "tgid" in keys else None)
        rows["comm"].append(_cstr(k.comm) if "comm" in keys else None)
        sid = int(k.stack_id)
        taken = "stack" in keys
        rows["stack_id"].append(sid if taken and sid >= 0 else None)
        rows["stack_errno"].append(-sid if taken and sid < 0 else None)
        rows["allocs"].append(sum(int(v.allocs) for v in leaves))
        rows["pages"].append(sum(int(v.pages) for v in leaves))
    return rows


def by_table(bpf: Any, keys: list[str]) -> pa.Table:
    """The ``page_alloc_by`` table of a loaded module, sorted by pages (most first)."""
    t = schema.to_table("page_alloc_by", by_rows(bpf["page_alloc_by"].items(), keys))
    return t.sort_by([("pages", "descending")])


def by_info(
    defines: dict[str, Any],
    table: pa.Table,
    stats: dict[str, int],
    stacks_stored: int | None,
    tgids: dict[str, int | None],
) -> dict[str, Any]:
    """The ``page_alloc.by`` metadata: keys, sizes, use and overflow.

    :param stats: ``page_alloc_stats`` summed over CPUs, by ``PA_STAT_*`` name.
    :param tgids: ``self_tgid`` (cmaprof record) and ``workload_tgid`` (the command).
    """
    keys = keys_of(defines)
    out: dict[str, Any] = {
        "by_keys": keys,
        "max_entries": int(defines.get("PA_BY_ENTRIES", abi.PA_BY_ENTRIES)),
        "entries_used": table.num_rows,
        "overflow_allocs": int(stats.get("by_overflow_allocs", 0)),
        "overflow_pages": int(stats.get("by_overflow_pages", 0)),
        **tgids,
    }
    if "stack" in keys:
        out.update(
            stack_map=STACK_MAP,
            stack_entries=int(defines.get("PA_STACK_ENTRIES", abi.PA_STACK_ENTRIES)),
            stack_depth=int(defines.get("PA_STACK_DEPTH", abi.PA_STACK_DEPTH)),
            stacks_stored=stacks_stored,
        )
    return out
