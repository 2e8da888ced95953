"""Pages that blocked cma_alloc(): decoded rows, the failure and origin summaries, and
a parser for the kernel's own view of the same pages (the ``dump_page()`` lines that
``alloc_contig_dump_pages()`` prints with dynamic debug on, followed by the page_owner
record when the kernel runs with ``page_owner=on``), used to cross-check the probe.

Vocabulary (stages, causes, states): :mod:`cmaprof.recording.schema`. The summaries
count ``pages`` as distinct blocking pfns and ``events`` as observations: a page that
fails to migrate and then stops the isolation test is one page, two events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

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
    return df


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
    return "\n".join(out)
