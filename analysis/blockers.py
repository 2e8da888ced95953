"""Pages that blocked cma_alloc(): decoded rows, the failure and origin summaries, and
a parser for the kernel's own view of the same pages (the ``dump_page()`` lines that
``alloc_contig_dump_pages()`` prints with dynamic debug on, followed by the page_owner
record when the kernel runs with ``page_owner=on``), used to cross-check the probe.

Vocabulary (stages, causes, states): :mod:`cmaprof.recording.schema`. The summaries
count ``pages`` as distinct blocking pfns and ``events`` as observations: a page that
fails to migrate and then stops the isolation test is one page, two events.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import pandas as pd

from cmaprof.analysis import stacks
from cmaprof.kernel import dmesg, formats
from cmaprof.recording.derived import (  # noqa: F401  (re-exported: blockers' vocabulary)
    failures_table,
    origin_table,
    state_name,
    state_names,
    with_names,
)

if TYPE_CHECKING:
    from cmaprof.analysis.loaded import Recording

#: dev_t as the kernel keeps it (MINORBITS = 20).
MINOR_BITS = 20
#: ``origin`` text for a page whose placing allocation was not seen.
ORIGIN_UNKNOWN = "origin unknown"
#: The stack map of the placing allocations (``record --by stack``).
STACK_MAP = "blk_stacks"


def _raw_blockers(rec: Recording) -> pd.DataFrame:
    t = rec.table("cma_blockers")
    if t.num_rows == 0 and not (rec.path / "tables/cma_blockers.parquet").exists():
        t = rec.series("cma_blockers")
    return t.to_pandas()


def page_flag_names(layout: dict[str, int] | None, flags: int) -> str:
    """Names of the page flags of ``layout`` (bit numbers the probe was compiled with,
    metadata ``blockers.layout``) set in ``flags``, in bit order."""
    if not layout:
        return ""
    bits = sorted((v, k[3:]) for k, v in layout.items() if k.startswith("pg_"))
    return "|".join(name for bit, name in bits if flags >> bit & 1)


def df_cma_blockers(rec: Recording) -> pd.DataFrame:
    """One row per blocking page seen, decoded.

    Adds to the stored columns: ``stage``, ``cause``, ``state`` (first of
    :data:`schema.BLOCKER_STATES`), ``states`` (all), ``page_flag_names``, ``dev_name``
    (``major:minor`` of a file page's device), ``fs_magic_hex``, ``origin_gfp_text``
    (decoded with the recording's format files; ``origin unknown`` when no allocation
    was seen) and ``origin_migratetype``.
    """
    df = with_names(_raw_blockers(rec))
    layout = rec.meta.blockers.layout if rec.meta.blockers is not None else None
    df["states"] = [state_names(int(b)) for b in df["state_bits"]]
    df["page_flag_names"] = [page_flag_names(layout, int(f)) for f in df["page_flags"]]
    df["dev_name"] = [
        None if pd.isna(d) else f"{int(d) >> MINOR_BITS}:{int(d) & ((1 << MINOR_BITS) - 1)}"
        for d in df["dev"]
    ]
    df["fs_magic_hex"] = [None if pd.isna(m) else f"0x{int(m):x}" for m in df["fs_magic"]]
    df["origin_gfp_text"] = _decode_gfp(rec, df["origin_gfp"], df["origin_known"])
    mt = rec.migratetype_names
    df["origin_migratetype"] = [
        None if pd.isna(i) else (mt[int(i)] if int(i) < len(mt) else f"mt{int(i)}")
        for i in df["origin_migratetype_id"]
    ]
    frames = stacks.stack_frames(rec, STACK_MAP)
    df["origin_stack"] = [
        None if pd.isna(s) else frames.get(int(s), ()) for s in df["origin_stack_id"]
    ]
    df["origin_stack_text"] = [
        _stack_label(s, e, frames) for s, e in zip(df["origin_stack_id"], df["origin_stack_errno"])
    ]
    return df


def _stack_label(stack_id: Any, err: Any, frames: dict[int, tuple[str, ...]]) -> str | None:
    """Short text of an origin's stack: its first functions, why it has none, or None
    (no stack taken: ``record --by stack`` was off or the origin is unknown)."""
    if not pd.isna(stack_id):
        got = frames.get(int(stack_id))
        return stacks.short(got) if got else f"stack {int(stack_id)} not stored"
    if not pd.isna(err):
        return f"no stack: {errno.errorcode.get(int(err), str(int(err)))}"
    return None


def df_blocker_stacks(rec: Recording) -> pd.DataFrame:
    """Who placed the blocking pages, by kernel stack (``record --by stack``): per
    (cause, gfp, order, comm and stack of the placing allocation) ``pages`` (distinct
    pfns) and ``events``, with ``stack`` (every frame, tracing glue trimmed, innermost
    first, ``function+0xoff``) and ``stack_text`` (its first functions). Pages whose
    origin is unknown or has no stack are left out; empty without ``--by stack``.
    """
    cols = [
        "cause",
        "origin_gfp_text",
        "origin_order",
        "origin_comm",
        "origin_stack_id",
        "stack_text",
        "pages",
        "events",
        "stack",
    ]
    df = df_cma_blockers(rec)
    df = df[df["origin_known"].astype(bool) & df["origin_stack_text"].notna()]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(
        stack_key=df["origin_stack_id"].fillna(-1).astype("int64"),
        stack_text=df["origin_stack_text"],
    )
    keys = ["cause", "origin_gfp_text", "origin_order", "origin_comm", "stack_key", "stack_text"]
    rows = []
    for k, g in df.groupby(keys, sort=False, dropna=False):
        stack = g["origin_stack"].iloc[0]
        rows.append(
            dict(
                zip(keys, k, strict=True),
                pages=int(g["pfn"].nunique()),
                events=len(g),
                stack=stacks.trim(stack) if stack else (),
            )
        )
    out = pd.DataFrame(rows)
    out["origin_stack_id"] = [None if s < 0 else int(s) for s in out.pop("stack_key")]
    out = out.sort_values(["pages", "events"], ascending=False, kind="stable")
    return out[cols].reset_index(drop=True)


def _decode_gfp(rec: Recording, gfps: Any, known: Any) -> list[str]:
    if len(gfps) == 0:
        return []
    table = rec.gfp_table
    return [
        table.decode(int(g)) if k and not pd.isna(g) else ORIGIN_UNKNOWN
        for g, k in zip(gfps, known, strict=True)
    ]


def df_cma_failures(rec: Recording) -> pd.DataFrame:
    """Per (area, stage, cause, state): ``pages`` (distinct pfns), ``events``, ``calls``.

    The stored ``tables/cma_failures``; for a recording stopped before it was written,
    computed from the interval parts of ``cma_blockers``.
    """
    if (rec.path / "tables/cma_failures.parquet").exists():
        return rec.table("cma_failures").to_pandas()
    return failures_table(_raw_blockers(rec)).to_pandas()


def df_cma_blockers_origin(rec: Recording) -> pd.DataFrame:
    """Per (cause, state, gfp of the allocation that placed the page): pages, events;
    ``gfp`` decoded from the recording's format files (``origin unknown`` when none)."""
    if (rec.path / "tables/cma_blockers_origin.parquet").exists():
        df = rec.table("cma_blockers_origin").to_pandas()
    else:
        df = origin_table(_raw_blockers(rec)).to_pandas()
    df["gfp"] = _decode_gfp(rec, df["origin_gfp_flags"], df["origin_known"])
    return df


def has_stacks(rec: Recording) -> bool:
    """Whether the recording ran ``record --by stack``."""
    return rec.meta.blockers is not None and "stack" in (rec.meta.blockers.by or [])


def df_blocker_stacks_flat(rec: Recording) -> pd.DataFrame:
    """:func:`df_blocker_stacks` with ``stack`` as one text, frames joined by `` < ``
    (innermost first): the report's JSON and CSV."""
    df = df_blocker_stacks(rec)
    df["stack"] = [" < ".join(s) for s in df["stack"]]
    return df


# ---- the kernel's views of the same pages ------------------------------------------

#: dmesg's dump_page() fields, with our cause after the kernel's reason.
DUMP_COLUMNS = [
    *dmesg.DUMP_FIELDS[: dmesg.DUMP_FIELDS.index("reason") + 1],
    "cause",
    *dmesg.DUMP_FIELDS[dmesg.DUMP_FIELDS.index("reason") + 1 :],
]


def dump_cause(d: dict[str, Any]) -> str:
    """Our cause for one ``dump_page()`` record, from what the kernel printed only:
    ``aops:def_blk_aops`` is block-device page cache (with ``private``: buffer heads),
    ``anon``/``ksm`` anonymous, other aops a file; without a mapping the flags decide."""
    names = set(filter(None, d["flag_names"].split("|")))
    if "buddy" in names:
        return "free"
    if "reserved" in names:
        return "reserved"
    if "slab" in names:
        return "slab"
    if d["type"] in ("anon", "ksm"):
        return "anon"
    if d["aops"] == "def_blk_aops":
        return "bdev_buffer_head" if "private" in names else "bdev"
    if d["aops"]:
        return "file"
    if d["has_mapping"]:
        return "movable_kernel"
    if "lru" in names:
        return "unknown"
    return "free" if d["refcount"] == 0 else "unmovable_kernel"


def parse_dump_pages(text: str) -> pd.DataFrame:
    """The ``dump_page()`` records of a dmesg capture
    (:func:`cmaprof.kernel.dmesg.parse_dump_pages`), one row each, with our ``cause``
    for each (:func:`dump_cause`)."""
    rows = [dict(r, cause=dump_cause(r)) for r in dmesg.parse_dump_pages(text)]
    return pd.DataFrame(rows, columns=DUMP_COLUMNS)


def compare_with_dump(blockers: pd.DataFrame, dump: pd.DataFrame) -> pd.DataFrame:
    """The migrate-stage blockers and the kernel's dump records of the same pfns, side by
    side: pfn, ``cause`` (ours), ``dump_cause`` (the kernel's lines), ``agree``.

    :param blockers: :func:`df_cma_blockers` rows.
    :param dump: :func:`parse_dump_pages` rows (``reason == "migration failure"``).
    """
    ours = (
        blockers[blockers["stage"] == "migrate"][["pfn", "cause"]]
        .drop_duplicates("pfn", keep="last")
        .astype({"pfn": "int64"})
    )
    kern = (
        dump[dump["reason"] == "migration failure"][["pfn", "cause", "aops", "flag_names"]]
        .drop_duplicates("pfn", keep="last")
        .rename(columns={"cause": "dump_cause"})
        .astype({"pfn": "int64"})
    )
    both = ours.merge(kern, on="pfn", how="inner")
    both["agree"] = both["cause"] == both["dump_cause"]
    return both.reset_index(drop=True)


def compare_with_page_owner(blockers: pd.DataFrame, owner: list[dict[str, Any]]) -> pd.DataFrame:
    """Our placing allocation of each blocking page beside page_owner's record of the
    same allocation (the kernel's own, ``page_owner=on``), one row per page.

    Columns: ``pfn``, ``head_pfn`` (the allocation's first pfn: the pfn aligned down to
    its order, where page_owner keeps the record), ``cause``, ``origin_gfp``,
    ``origin_order``, ``origin_stack`` and ``stack_text`` (ours), ``owner_gfp``,
    ``owner_order``, ``owner_stack``, ``owner_migrated``, ``owner_ts_ns`` (page_owner's
    local_clock() of the allocation; ours: ``origin_t_ns``); ``same_allocation`` (gfp and
    order equal and not migrated since: page_owner then describes the page it was
    copied from), ``same_stack`` (:func:`cmaprof.analysis.stacks.same_callers`).

    :param blockers: :func:`df_cma_blockers` rows; those whose origin is known and had a
        stack taken are compared (a get_stackid failure is not the same stack).
    :param owner: :func:`cmaprof.kernel.page_owner.parse_page_owner_file` records.
    """
    ours = blockers[blockers["origin_known"].astype(bool) & blockers["origin_stack_text"].notna()]
    ours = ours.drop_duplicates("pfn", keep="last").copy()
    ours["head_pfn"] = [
        int(p) & ~((1 << int(o)) - 1)
        for p, o in zip(ours["pfn"], ours["origin_order"], strict=True)
    ]
    kern = pd.DataFrame(
        [
            {
                "head_pfn": r["pfn"],
                "owner_gfp": int(r["gfp_mask"], 16),
                "owner_order": r["order"],
                "owner_stack": tuple(r["stack"]),
                "owner_migrated": r["migrated"],
                "owner_ts_ns": r.get("ts_ns"),
            }
            for r in owner
        ],
        columns=[
            "head_pfn",
            "owner_gfp",
            "owner_order",
            "owner_stack",
            "owner_migrated",
            "owner_ts_ns",
        ],
    ).drop_duplicates("head_pfn", keep="last")
    cols = ["pfn", "head_pfn", "cause", "origin_gfp", "origin_order", "origin_stack"]
    cols += [c for c in ("t_ns", "origin_t_ns") if c in ours.columns]
    both = ours[cols + ["origin_stack_text"]].rename(columns={"origin_stack_text": "stack_text"})
    both = both.astype({"head_pfn": "int64"}).merge(
        kern.astype({"head_pfn": "int64"}), on="head_pfn", how="inner"
    )
    both["same_allocation"] = [
        int(g) == int(og) and int(o) == int(oo) and not m
        for g, og, o, oo, m in zip(
            both["origin_gfp"],
            both["owner_gfp"],
            both["origin_order"],
            both["owner_order"],
            both["owner_migrated"],
            strict=True,
        )
    ]
    both["same_stack"] = [
        stacks.same_callers(a, b) if a else False
        for a, b in zip(both["origin_stack"], both["owner_stack"], strict=True)
    ]
    return both.reset_index(drop=True)


# ---- text -----------------------------------------------------------------------------


def has_blockers(rec: Recording) -> bool:
    """Whether the recording ran the blockers probe."""
    return rec.meta.has("blockers") or (rec.path / "tables/cma_blockers.parquet").exists()


def table_cma_failures(rec: Recording) -> str:
    """Pages that blocked cma_alloc(), per area, stage, cause and state (<= 80 columns)."""
    if not has_blockers(rec):
        return ""
    df = df_cma_failures(rec)
    out = ["Pages blocking cma_alloc() (pages: distinct pfns; events: times seen)"]
    if df.empty:
        out.append("  none seen")
    else:
        out.append(
            f"{'area':<8} {'stage':<13} {'cause':<16} {'state':<18} "
            f"{'pages':>6} {'events':>7} {'calls':>5}"
        )
        df = df.sort_values(["events", "pages"], ascending=False, kind="stable")
        for r in df.itertuples(index=False):
            out.append(
                f"{str(r.area)[:8]:<8} {str(r.stage)[:13]:<13} {str(r.cause)[:16]:<16} "
                f"{str(r.state)[:18]:<18} {int(r.pages):>6} {int(r.events):>7} {int(r.calls):>5}"
            )
    meta = rec.meta.blockers
    notes = []
    if meta is not None:
        stages = [
            s
            for s, on in (
                ("migrate", meta.migrate_stage),
                ("test_isolated", meta.test_isolated_stage),
            )
            if on
        ]
        notes.append(f"stages traced: {', '.join(stages) or 'none'}")
        stats = meta.stats or {}
        lost = int(stats.get("ringbuf_full", 0)) + int(stats.get("list_truncated", 0))
        if lost:
            notes.append(
                f"not written: {stats.get('ringbuf_full', 0)} events (ring buffer full), "
                f"{stats.get('list_truncated', 0)} lists cut at {meta.max_list} pages"
            )
        if not meta.layout_verified:
            notes.append("struct layouts from headers of another kernel: unverified")
    for n in notes:
        out.append(f"note: {n}")
    return "\n".join(out)


def table_cma_blockers_origin(rec: Recording, wide: bool = False) -> str:
    """Blocking pages by the gfp of the allocation that placed them in CMA.

    :param wide: GFP strings unwrapped, on the line of their numbers
    """
    if not has_blockers(rec):
        return ""
    df = df_cma_blockers_origin(rec)
    out = ["Who placed the blocking pages (gfp of the allocation that put them in CMA)"]
    if df.empty:
        out.append("  none seen")
    else:
        out.append(f"{'cause':<16} {'state':<18} {'pages':>6} {'events':>7}  gfp")
        df = df.sort_values(["pages", "events"], ascending=False, kind="stable")
        width = 10**6 if wide else 80 - (16 + 18 + 6 + 7 + 5)
        for r in df.itertuples(index=False):
            lines = formats.wrap_flags(str(r.gfp), width)
            out.append(
                f"{str(r.cause)[:16]:<16} {str(r.state)[:18]:<18} {int(r.pages):>6} "
                f"{int(r.events):>7}  {lines[0]}"
            )
            out += [" " * (80 - width) + line for line in lines[1:]]
    meta = rec.meta.blockers
    if meta is not None and meta.origin_entries:
        kib = int(meta.origin_bytes or 0) / 1024
        out.append(
            f"note: origin array {meta.origin_entries} entries x "
            f"{meta.origin_entry_bytes} B = {kib:.0f} KiB (one per CMA page)"
        )
    by_stack = table_blocker_stacks(rec)
    return "\n".join(out + ([""] + by_stack.splitlines() if by_stack else []))


#: Stacks shown in the text report (the frame has them all).
TOP_STACKS = 10
#: Functions of each stack shown in the text report.
TOP_FRAMES = 12


def table_blocker_stacks(rec: Recording, top: int = TOP_STACKS) -> str:
    """Who placed the blocking pages, by kernel stack: per stack the cause, order,
    comm, pages and gfp of the placing allocation, then its first functions, innermost
    first (``record --by stack``; empty text without it)."""
    if not has_stacks(rec):
        return ""
    meta = rec.meta.blockers
    assert meta is not None  # has_stacks
    df = df_blocker_stacks(rec)
    out = ["Who placed the blocking pages, by kernel stack (innermost first)"]
    if df.empty:
        out.append("  none seen")
    else:
        out.append(f"{'cause':<16} {'order':>5} {'comm':<16} {'pages':>6} {'events':>7}")
        out.append("    then the gfp of the placing allocation and its stack")
        for r in df.head(top).itertuples(index=False):
            out.append(
                f"{str(r.cause)[:16]:<16} {int(r.origin_order):>5} "
                f"{str(r.origin_comm)[:16]:<16} {int(r.pages):>6} {int(r.events):>7}"
            )
            out += ["    " + line for line in formats.wrap_flags(str(r.origin_gfp_text), 76)]
            frames = stacks.short(r.stack, TOP_FRAMES).split(" < ") if r.stack else [r.stack_text]
            out += _wrap_frames(frames, 4)
        if len(df) > top:
            out.append(f"  ... {len(df) - top} more stacks (df_blocker_stacks)")
    stats = meta.stats or {}
    lost = {k: int(stats.get(f"stack_{k}", 0)) for k in ("eexist", "enomem", "other_err")}
    out.append(
        f"note: {int(stats.get('stack_ids', 0))} CMA placements with a stack, "
        f"{sum(lost.values())} without (EEXIST {lost['eexist']}, ENOMEM {lost['enomem']}, "
        f"other {lost['other_err']})"
    )
    out.append(
        f"note: stack map of {meta.stack_entries} stacks, {meta.stack_depth} frames each at most"
    )
    return "\n".join(out)


def _wrap_frames(names: list[str], indent: int) -> list[str]:
    """Function names joined by `` < `` in lines of at most 80 columns."""
    lines: list[str] = []
    cur = " " * indent
    for i, name in enumerate(names):
        piece = name if i == 0 else f" < {name}"
        if len(cur) + len(piece) > 80 and cur.strip():
            lines.append(cur)
            cur = " " * indent + "< " + name
        else:
            cur += piece
    if cur.strip():
        lines.append(cur)
    return [line[:80] for line in lines]
