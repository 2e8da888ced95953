"""Who allocates: the page_alloc cube keyed by process and kernel stack (``record --by
comm|tgid|stack``, issue 17).

``tables/page_alloc_by`` holds the ``page_alloc`` key columns plus ``tgid`` (null when
not keyed by tgid), ``comm`` (null when not keyed by comm), ``stack_id`` (into the
``stacks`` table, map :data:`STACK_MAP`; null when not keyed by stack or when
``bpf_get_stackid()`` failed, its errno in ``stack_errno``), ``allocs`` and ``pages``
over the whole recording. An event the kernel counted in ``page_alloc`` but could not
key (the by-map was full) is in ``page_alloc`` only: per class, ``page_alloc`` minus
``page_alloc_by`` is the :data:`OVERFLOW` row, so every class here adds up to the
pages ``cmaprof report`` shows for it.

:func:`df_top_by` ranks the processes or stacks of each class (all, GFP class, zone,
CMA area). cmaprof's own ``record`` process (``self_tgid`` in the metadata) is
:data:`SELF`, the command it ran is marked :data:`WORKLOAD`; ``exclude_self`` drops it from a class (its pages in
``self_pages``). The check against vmstat (:mod:`cmaprof.analysis.check`) reads
``page_alloc`` and so always counts it.
"""

from __future__ import annotations

import errno
from typing import Any

import pandas as pd

from cmaprof.analysis import redact, stacks
from cmaprof.analysis.loaded import Recording
from cmaprof.errors import BadInput

TABLE = "page_alloc_by"
#: The stack map of ``record --by stack`` in the ``stacks`` table.
STACK_MAP = "pa_stacks"
#: What ``record --by`` can key by, in the order the report shows them.
KEYS = ("comm", "tgid", "stack")
#: The classes a ranking is made in: name -> what a class is.
PER = {"all": "overall", "gfp": "by GFP class", "zone": "by zone", "cma": "for CMA placements"}
SELF = "cmaprof (self)"
#: After the label of the command ``record`` ran (``workload_tgid``, needs ``--by tgid``).
WORKLOAD = " (workload)"
OVERFLOW = "(not keyed: map full)"
OTHER = "(other)"
COLUMNS = ["class", "class_pages", "self_pages", "rank", "who", "pages", "allocs", "share"]
STACK_COLUMNS = ["stack_id", "stacks", "stack"]

#: The page allocator's own functions, as they appear above the caller in a stack of
#: kmem:mm_page_alloc (names without the ``_noprof`` suffix of memory allocation
#: profiling, Linux kernel commit b951aaff5035 ("mm: enable page allocation tagging")
#: (in v6.10)). From the stacks of 6.1 (``__alloc_pages < folio_alloc <
#: __filemap_get_folio``, ``__alloc_pages < __folio_alloc < vma_alloc_folio``) and 6.18
#: (``__alloc_frozen_pages_noprof < alloc_pages_mpol < alloc_pages_noprof <
#: get_free_pages_noprof``, bpftrace ``kstack`` on this host). :func:`stack_label` is
#: the first function after them: the allocator's caller.
ALLOCATOR_FUNCTIONS = frozenset(
    {
        "__alloc_pages",
        "__alloc_frozen_pages",
        "alloc_pages",
        "alloc_pages_mpol",
        "alloc_pages_node",
        "__alloc_pages_node",
        "alloc_pages_vma",
        "alloc_pages_exact",
        "alloc_pages_bulk",
        "__alloc_pages_bulk",
        "__alloc_pages_slowpath",
        "get_page_from_freelist",
        "folio_alloc",
        "__folio_alloc",
        "folio_alloc_mpol",
        "__folio_alloc_node",
        "vma_alloc_folio",
        "get_free_pages",
        "__get_free_pages",
        "get_zeroed_page",
        "filemap_alloc_folio",
        "__page_cache_alloc",
    }
)


def _base(function: str) -> str:
    """``alloc_pages_mpol_noprof`` -> ``alloc_pages_mpol``; ``x.isra.0`` -> ``x``."""
    name = function.split(".", 1)[0]
    return name.removesuffix("_noprof")


def stack_label(frames: tuple[str, ...] | list[str]) -> str:
    """The short name of a stack: the first function (tracing glue trimmed) that is not
    one of :data:`ALLOCATOR_FUNCTIONS` (``do_anonymous_page``); the innermost function
    when every frame is the allocator's."""
    names = [stacks.function(f) for f in stacks.trim(frames)]
    for n in names:
        if _base(n) not in ALLOCATOR_FUNCTIONS:
            return n
    return names[0] if names else "(empty stack)"


def has_by(rec: Recording) -> bool:
    """Whether the recording has the ``page_alloc_by`` table (``record --by``)."""
    return (rec.path / f"tables/{TABLE}.parquet").exists()


def by_info(rec: Recording) -> dict[str, Any]:
    """The metadata of ``record --by`` (``page_alloc.by``: ``by_keys``, ``max_entries``,
    ``entries_used``, ``overflow_allocs``/``_pages``, ``self_tgid``, ``workload_tgid``,
    the stack map's sizes), as JSON; empty without ``--by``."""
    pa_meta = rec.meta.get("page_alloc")
    inner = pa_meta.get("by") if isinstance(pa_meta, dict) else None
    return inner if isinstance(inner, dict) else {}


def by_keys(rec: Recording) -> list[str]:
    """What the recording is keyed by (``by_keys`` in its metadata, else the columns
    that are not all null)."""
    keys = by_info(rec).get("by_keys")
    if isinstance(keys, list) and keys:
        return [str(k) for k in keys]
    df = df_page_alloc_by(rec)
    have = {"comm": "comm", "tgid": "tgid", "stack": "stack_id"}
    return [k for k in KEYS if k in df and df[have[k]].notna().any()]


def require(rec: Recording, key: str) -> None:
    """:raises BadInput: the recording was not made with ``record --by key``."""
    if key not in KEYS:
        raise BadInput(f"--by {key}: not one of {', '.join(KEYS)}")
    if not has_by(rec):
        raise BadInput(
            f"{rec.path}: no {TABLE} table (recorded without --by); record again with "
            f"`cmaprof record --by {key}` to see who allocates"
        )
    keys = by_keys(rec)
    if key not in keys:
        raise BadInput(
            f"{rec.path}: recorded with --by {','.join(keys) or '?'}, not {key}; record "
            f"again with `cmaprof record --by {key}`"
        )


def df_page_alloc_by(rec: Recording) -> pd.DataFrame:
    """``page_alloc_by`` decoded like ``df_page_alloc`` (zone, migratetype, gfp,
    cma_area); empty without ``record --by``."""
    return rec.df_page_alloc_by()


def self_tgid(rec: Recording) -> int | None:
    """The tgid of the ``cmaprof record`` process, None when not recorded."""
    v = by_info(rec).get("self_tgid")
    return int(v) if isinstance(v, int) else None


def self_known(rec: Recording) -> bool:
    """Whether cmaprof's own rows can be told apart: its tgid recorded and keyed."""
    df = df_page_alloc_by(rec)
    return self_tgid(rec) is not None and "tgid" in df and bool(df["tgid"].notna().any())


def _self_mask(rec: Recording, df: pd.DataFrame) -> pd.Series:
    """Rows of cmaprof's own process (by its tgid: needs ``--by tgid``)."""
    if not self_known(rec):
        return pd.Series(False, index=df.index)
    return df["tgid"].eq(self_tgid(rec)).fillna(False).astype(bool)


def _stack_who(df: pd.DataFrame, frames: dict[int, tuple[str, ...]]) -> list[str]:
    out = []
    for sid, err in zip(df["stack_id"], df["stack_errno"], strict=True):
        if not pd.isna(sid):
            got = frames.get(int(sid))
            out.append(stack_label(got) if got else f"(stack {int(sid)} not stored)")
        elif not pd.isna(err) and int(err):
            e = abs(int(err))
            out.append(f"(no stack: {errno.errorcode.get(e, str(e))})")
        else:
            out.append("(no stack)")
    return out


def _who(rec: Recording, df: pd.DataFrame, key: str) -> list[str]:
    """The label of each row for ``key``; :data:`SELF` for cmaprof's own process."""
    if key == "stack":
        who = _stack_who(df, stacks.stack_frames(rec, STACK_MAP))
    elif key == "comm":
        who = ["(no comm)" if pd.isna(c) else str(c) for c in df["comm"]]
    else:
        comm = df["comm"] if "comm" in df else pd.Series(None, index=df.index)
        hide = redact.is_active()
        who = [
            ("tgid hidden" if hide else f"{int(t)}") + ("" if pd.isna(c) else f" {c}")
            for t, c in zip(df["tgid"], comm, strict=True)
        ]
    if key != "stack":
        work = by_info(rec).get("workload_tgid")
        if isinstance(work, int) and "tgid" in df:
            ran = df["tgid"].eq(work).fillna(False)
            who = [w + WORKLOAD if r else w for w, r in zip(who, ran, strict=True)]
        mine = _self_mask(rec, df)
        who = [SELF if m else w for w, m in zip(who, mine, strict=True)]
    return who


def class_of(df: pd.DataFrame, per: str) -> pd.Series:
    """The class of each row of a decoded cube: ``all``; the GFP string; ``Node N
    ZONE``; the CMA area name (rows outside CMA: NA)."""
    if per == "all":
        return pd.Series("all", index=df.index, dtype="object")
    if per == "gfp":
        return df["gfp"].astype("object")
    if per == "zone":
        return pd.Series(
            [f"Node {n} {z}" for n, z in zip(df["node"], df["zone"], strict=True)],
            index=df.index,
            dtype="object",
        )
    if per == "cma":
        return df["cma_area"].astype("object")
    raise BadInput(f"per={per!r}: not one of {', '.join(PER)}")


def _keyed(rec: Recording, df: pd.DataFrame, key: str, per: str) -> pd.DataFrame:
    """Per (class, who) of the rows ``df`` of ``page_alloc_by``: pages and allocs, and
    for stacks the heaviest stack of each label (``stack_id``, ``stacks`` merged,
    ``stack`` text)."""
    df = df.assign(**{"class": class_of(df, per), "who": _who(rec, df, key)})
    df = df[df["class"].notna()]
    out = df.groupby(["class", "who"], sort=False)[["pages", "allocs"]].sum().reset_index()
    if key != "stack" or out.empty:
        return out
    df = df.assign(stack_key=df["stack_id"].fillna(-1).astype("int64"))
    per_stack = df.groupby(["class", "who", "stack_key"], sort=False)["pages"].sum()
    heaviest = per_stack.sort_values(ascending=False).reset_index()
    heaviest = heaviest.drop_duplicates(["class", "who"]).set_index(["class", "who"])
    idx = pd.MultiIndex.from_frame(out[["class", "who"]])
    out["stack_id"] = [None if s < 0 else int(s) for s in heaviest.loc[idx, "stack_key"]]
    out["stacks"] = list(df.groupby(["class", "who"], sort=False)["stack_key"].nunique().loc[idx])
    frames = stacks.stack_frames(rec, STACK_MAP)
    out["stack"] = [
        " < ".join(stacks.trim(frames[s])) if s in frames else None for s in out["stack_id"]
    ]
    return out


def _overflow(rec: Recording, keyed: pd.DataFrame, per: str) -> pd.DataFrame:
    """Per class: pages and allocs in ``page_alloc`` that ``page_alloc_by`` lacks."""
    cube = rec.df_page_alloc()
    cube = cube.assign(**{"class": class_of(cube, per)})
    total = cube[cube["class"].notna()].groupby("class")[["pages", "allocs"]].sum()
    got = keyed.groupby("class")[["pages", "allocs"]].sum()
    diff = total.astype("int64").sub(got.astype("int64"), fill_value=0)
    diff = diff[diff["pages"] > 0].reset_index()
    return diff.assign(who=OVERFLOW)


def self_pages(rec: Recording, per: str) -> pd.Series:
    """Pages of cmaprof's own process per class (``per`` as in :func:`df_top_by`);
    empty when it cannot be told apart (:func:`self_known`)."""
    df = df_page_alloc_by(rec)
    mine = df[_self_mask(rec, df)]
    return mine.assign(**{"class": class_of(mine, per)}).groupby("class")["pages"].sum()


def _rank_class(g: pd.DataFrame, top: int) -> pd.DataFrame:
    """The top ``top`` rows of one class by pages, then :data:`OTHER`, then the
    overflow row; ``share`` of the class's pages (they add up to 1)."""
    over = g[g["who"] == OVERFLOW]
    g = g[g["who"] != OVERFLOW].sort_values(["pages", "who"], ascending=[False, True])
    head, rest = g.head(top).copy(), g.iloc[top:]
    head["rank"] = range(1, len(head) + 1)
    parts = [head]
    if len(rest):
        other = {"who": f"{OTHER} {len(rest)} more", "pages": rest["pages"].sum()}
        parts.append(pd.DataFrame([{**other, "allocs": rest["allocs"].sum()}]))
    parts.append(over)
    out = pd.concat([p for p in parts if len(p)], ignore_index=True)
    out["class_pages"] = int(out["pages"].sum())
    out["share"] = out["pages"] / out["class_pages"] if out["class_pages"].iloc[0] else 0.0
    return out


def df_top_by(
    rec: Recording, key: str = "comm", per: str = "gfp", top: int = 10, exclude_self: bool = True
) -> pd.DataFrame:
    """Who allocates in each class: the ``top`` processes (``key`` comm or tgid) or
    kernel stacks (``key`` stack, by :func:`stack_label`) of each class (``per``: all,
    gfp, zone, cma), largest class first.

    Columns :data:`COLUMNS` (``pages`` base pages; ``share`` of ``class_pages``, the
    class's pages in ``page_alloc``, less ``self_pages`` when ``exclude_self``; ``rank``
    1.. for the top rows, NA for :data:`OTHER` and :data:`OVERFLOW`), and for stacks
    :data:`STACK_COLUMNS` (the heaviest stack of the label: its id, how many stacks
    share the label, every frame joined by `` < ``).

    :param exclude_self: leave out cmaprof's own process (:data:`SELF`; with ``key``
        stack only rows keyed by its tgid too); a class of its pages alone then has
        no rows (:func:`self_pages` has them)
    :raises BadInput: the recording was not made with ``record --by key``
    """
    require(rec, key)
    cols = COLUMNS + (STACK_COLUMNS if key == "stack" else [])
    df = df_page_alloc_by(rec)
    mine = _self_mask(rec, df)
    own = self_pages(rec, per)
    keyed = _keyed(rec, df, key, per)
    over = _overflow(rec, keyed, per)
    if exclude_self:
        keyed = _keyed(rec, df[~mine], key, per)
    both = pd.concat([keyed, over], ignore_index=True)
    parts = []
    for cls, g in both.groupby("class", sort=False):
        r = _rank_class(g, top)
        r["class"] = cls
        r["self_pages"] = int(own.get(cls, 0)) if exclude_self else 0
        parts.append(r)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    out = pd.concat(parts, ignore_index=True).reindex(columns=cols)
    out = out.sort_values(["class_pages", "class"], ascending=[False, True], kind="stable")
    out["rank"] = out["rank"].astype("Int64")
    for c in ("pages", "allocs", "class_pages", "self_pages"):
        out[c] = out[c].astype("int64")
    for c in ("stack_id", "stacks"):
        if c in out:
            out[c] = out[c].astype("Int64")
    return out.reset_index(drop=True)


#: Rows of the default report's "who allocates" section.
WHO_TOP = 5


def who_key(rec: Recording) -> str | None:
    """The key the default report ranks by: comm, else tgid, else stack (None without
    ``page_alloc_by``)."""
    if not has_by(rec):
        return None
    keys = by_keys(rec)
    return next((k for k in KEYS if k in keys), None)


def df_who_allocates(rec: Recording, top: int = WHO_TOP) -> pd.DataFrame:
    """The ``top`` processes (or stacks, see :func:`who_key`) over all classes,
    cmaprof itself excluded (:func:`df_top_by` with ``per`` all); empty without
    ``page_alloc_by``."""
    key = who_key(rec)
    if key is None:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    return df_top_by(rec, key, "all", top, exclude_self=True)
