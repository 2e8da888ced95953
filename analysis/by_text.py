"""Who allocates as text and as the tables of ``cmaprof report --by`` (issue 17).

:func:`table_top_by` is one section (processes or stacks of each class, <= 80 columns),
:func:`table_by_report` every section of ``report --by``, :func:`table_who_allocates`
the short section the default report adds when the recording has ``page_alloc_by``;
:func:`by_tables` the DataFrames of ``report --by --format csv|json``.
"""

from __future__ import annotations

import textwrap

import pandas as pd

from cmaprof.analysis import by
from cmaprof.analysis.loaded import Recording
from cmaprof.kernel import formats

WIDTH = 80
#: What the rows of each key are, in titles and column headers.
NOUN = {"comm": "processes", "tgid": "processes (tgid)", "stack": "kernel stacks"}
COLUMN = {"comm": "process", "tgid": "tgid process", "stack": "stack (allocator's caller)"}
#: Classes ``report --by`` shows, in order (``all`` is the default report's).
SECTIONS = ("gfp", "zone", "cma")


def _row(r: object, indent: str = "") -> str:
    line = f"{r.pages:>10} {r.share:>6.1%} {r.allocs:>10}  {r.who}"  # type: ignore[attr-defined]
    return (indent + line)[:WIDTH]


def _class_lines(cls: str, g: pd.DataFrame, key: str, stacks: bool) -> list[str]:
    """One class: its name (GFP strings wrapped at ``|``), its total, its rows."""
    out = [""]
    out += formats.wrap_flags(str(cls), WIDTH)
    first = g.iloc[0]
    total = f"  {int(first['class_pages'])} pages"
    if int(first["self_pages"]):
        total += f"; {by.SELF}: {int(first['self_pages'])} pages, not shown"
    out.append(total)
    out.append(f"{'pages':>10} {'share':>6} {'allocs':>10}  {COLUMN[key]}")
    for r in g.itertuples(index=False):
        out.append(_row(r))
        if stacks and key == "stack" and isinstance(getattr(r, "stack", None), str):
            out += textwrap.wrap(r.stack, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 8)
    return out


def table_top_by(
    rec: Recording,
    key: str = "comm",
    per: str = "gfp",
    top: int = 10,
    exclude_self: bool = True,
    stacks: bool = False,
) -> str:
    """Top ``key`` (comm, tgid, stack) of each class (``per``: gfp, zone, cma, all) as
    text, see :func:`cmaprof.analysis.by.df_top_by`.

    :param stacks: every frame of the heaviest stack under each stack row
    """
    df = by.df_top_by(rec, key, per, top, exclude_self)
    self_note = "cmaprof itself excluded" if exclude_self else "cmaprof itself included"
    title = f"Top {NOUN[key]} {by.PER[per]} (base pages; {self_note})"
    out = textwrap.wrap(title, WIDTH)
    if df.empty:
        what = "in CMA areas" if per == "cma" else "keyed"
        out.append(f"  no allocations {what}")
        return "\n".join(out)
    for cls, g in df.groupby("class", sort=False):
        out += _class_lines(str(cls), g, key, stacks)
    own = by.self_pages(rec, per) if exclude_self else pd.Series(dtype="int64")
    alone = own[~own.index.isin(df["class"])]
    if len(alone):
        note = f"{len(alone)} classes of {by.SELF} alone ({int(alone.sum())} pages) not shown"
        out += ["", *textwrap.wrap(note, WIDTH)]
    return "\n".join(out)


def _map_lines(rec: Recording) -> list[str]:
    info = by.by_info(rec)
    used, most = info.get("entries_used"), info.get("max_entries")
    lost = int(info.get("overflow_allocs") or 0)
    text = f"page_alloc_by: {used if used is not None else '?'} of {most or '?'} entries"
    text += (
        f"; {lost} allocations ({int(info.get('overflow_pages') or 0)} pages) not keyed: "
        "the map was full"
        if lost
        else "; every allocation keyed"
    )
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ")


def table_by_report(
    rec: Recording,
    keys: list[str],
    top: int = 10,
    exclude_self: bool = True,
    stacks: bool = False,
) -> str:
    """``cmaprof report --by``: for each key, the top of each GFP class, zone and CMA
    area, and how full the by-map was.

    :raises BadInput: the recording was not made with ``record --by`` each key
    """
    for key in keys:
        by.require(rec, key)
    parts = [
        table_top_by(rec, key, per, top, exclude_self, stacks) for key in keys for per in SECTIONS
    ]
    return "\n\n".join([*parts, "\n".join(_map_lines(rec))])


def table_who_allocates(rec: Recording) -> str:
    """The default report's short section: the top :data:`~cmaprof.analysis.by.WHO_TOP`
    processes over all classes, cmaprof itself excluded (its pages stated); "" without
    ``page_alloc_by``."""
    key = by.who_key(rec)
    if key is None:
        return ""
    df = by.df_who_allocates(rec)
    keys = ",".join(by.by_keys(rec))
    out = [f"Who allocates: top {by.WHO_TOP} {NOUN[key]}, all classes (record --by {keys})"]
    if df.empty:
        return "\n".join([*out, "  no allocations keyed"])
    out.append(f"{'pages':>10} {'share':>6} {'allocs':>10}  {COLUMN[key]}")
    out += [_row(r) for r in df.itertuples(index=False)]
    own = int(df["self_pages"].iloc[0])
    note = (
        f"{by.SELF}: {own} pages, not shown"
        if by.self_known(rec)
        else f"{by.SELF}: not told apart (needs record --by tgid)"
    )
    out += textwrap.wrap(f"{note}; per class: cmaprof report --by {key}", WIDTH)
    return "\n".join(out + _map_lines(rec))


def by_tables(
    rec: Recording,
    keys: list[str],
    top: int = 10,
    exclude_self: bool = True,
    redact: bool = False,
) -> dict[str, pd.DataFrame]:
    """The tables of ``report --by --format csv|json``: ``top_KEY_PER`` for each key
    and class (``top_comm_gfp``, ``top_stack_cma``, ...).

    :param redact: tgids hidden (:mod:`cmaprof.analysis.redact`)
    """
    if redact:
        from cmaprof.analysis import redact as rd

        with rd.active():
            return rd.redact_tables(by_tables(rd.view(rec), keys, top, exclude_self))
    for key in keys:
        by.require(rec, key)
    return {
        f"top_{key}_{per}": by.df_top_by(rec, key, per, top, exclude_self)
        for key in keys
        for per in ("all", *SECTIONS)
    }
