"""Kernel stacks stored in a recording (``tables/stacks``, ``record --by stack``).

A stack is a tuple of frames, innermost first, each ``function+0xoff`` (``function+0xoff
[module]``, ``?`` without a symbol), as collectors/stacks.py wrote it. The
innermost frames of a stack taken in a tracepoint are the tracing machinery's (the BPF
program itself, ``bpf_trace_run4``, ``__bpf_trace_*``, ``__traceiter_*``): :func:`trim`
drops them, so a stack starts at the function that fired the tracepoint
(``__alloc_pages`` on 6.1 for ``kmem:mm_page_alloc``).

:func:`same_callers` compares one of our stacks with another tracer's stack of the same
allocation (page_owner's, taken in ``post_alloc_hook()`` a few frames deeper): from the
function that fired the tracepoint outwards, frame by frame, ``function+0xoff`` equal
(return addresses: the same call sites).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording

#: Prefixes of the functions that run a BPF program from a tracepoint.
GLUE_PREFIXES = ("bpf_trace_run", "__bpf_trace_", "__traceiter_", "trace_call_bpf", "bpf_prog_")
#: Frames compared at least by :func:`same_callers` (fewer overlapping: not the same).
MIN_OVERLAP = 2


def function(frame: str) -> str:
    """The function name of a frame (``grow_dev_page+0x4d [ext4]`` -> ``grow_dev_page``)."""
    return frame.split(" ", 1)[0].rsplit("+", 1)[0]


def is_glue(frame: str) -> bool:
    """A frame of the tracing machinery (a BPF program, the tracepoint's callers)."""
    return frame.endswith(" [bpf]") or function(frame).startswith(GLUE_PREFIXES)


def trim(frames: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The frames from the first one that is not :func:`is_glue` outwards."""
    i = 0
    while i < len(frames) and is_glue(frames[i]):
        i += 1
    return tuple(frames[i:])


def same_callers(ours: tuple[str, ...] | list[str], other: tuple[str, ...] | list[str]) -> bool:
    """Whether two stacks of one allocation agree: ``ours`` (glue trimmed) starts at the
    function that fired the tracepoint; ``other`` holds that function too (deeper frames
    before it); the frames after it, as far as both go (at least :data:`MIN_OVERLAP`),
    are equal ``function+0xoff``."""
    ours = trim(ours)
    if not ours:
        return False
    fired = function(ours[0])
    names = [function(f) for f in other]
    if fired not in names:
        return False
    theirs = tuple(other[names.index(fired) + 1 :])
    n = min(len(ours) - 1, len(theirs))
    return n >= MIN_OVERLAP and ours[1 : 1 + n] == theirs[:n]


def df_stacks(rec: Recording, map_name: str | None = None) -> pd.DataFrame:
    """One row per stored stack: ``map``, ``stack_id``, ``frames`` (tuple, innermost
    first, as stored), ``depth``.

    :param map_name: only this stack map's stacks (``blk_stacks``).
    """
    t = rec.table("stacks").to_pandas()
    if map_name is not None:
        t = t[t["map"] == map_name]
    rows = []
    for (m, sid), g in t.sort_values(["map", "stack_id", "level"]).groupby(
        ["map", "stack_id"], sort=True
    ):
        frames = tuple(g["frame"])
        rows.append({"map": m, "stack_id": int(sid), "frames": frames, "depth": len(frames)})
    return pd.DataFrame(rows, columns=["map", "stack_id", "frames", "depth"])


def stack_frames(rec: Recording, map_name: str) -> dict[int, tuple[str, ...]]:
    """Stack id -> frames (as stored) of one stack map."""
    df = df_stacks(rec, map_name)
    return dict(zip(df["stack_id"], df["frames"], strict=True))


def short(frames: tuple[str, ...] | list[str], n: int = 8) -> str:
    """The first ``n`` functions of a trimmed stack, innermost first, joined by ``<``
    (``__alloc_pages < __folio_alloc < ... < __getblk_gfp``)."""
    names = [function(f) for f in trim(frames)[:n]]
    return " < ".join(names)
