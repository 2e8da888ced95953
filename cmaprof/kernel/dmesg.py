"""The kernel log's CMA lines: ``dump_page()`` records and ``cma_alloc`` failures.

Pure functions of dmesg text (``dmesg``, ``/dev/kmsg`` or a serial console capture);
timestamps and log-level prefixes (``<3>``, ``[   12.345678]``) are ignored. Rows are
dicts; :mod:`cmaprof.analysis` makes the frames and names the causes.
"""

from __future__ import annotations

import re
from typing import Any

#: mm/debug.c __dump_page(): 6.1 prints ``page:%p refcount:...``; later kernels'
#: __dump_folio() print ``page: refcount:...`` (no pointer).
_PAGE_RE = re.compile(
    r"page:(?P<ptr>\S*)\s*refcount:(?P<refcount>-?\d+) mapcount:(?P<mapcount>-?\d+) "
    r"mapping:(?P<mapping>\S+) index:(?P<index>\S+) pfn:(?P<pfn>0x[0-9a-f]+)"
)
_FLAGS_RE = re.compile(
    r"(?P<type>anon |ksm )?flags: (?P<raw>0x[0-9a-f]+)\((?P<names>[^)]*)\)(?P<cma> CMA)?"
)
_AOPS_RE = re.compile(r"aops:(?P<aops>\S+)(?: ino:(?P<ino>[0-9a-f]+))?")
_REASON_RE = re.compile(r"page dumped because: (?P<reason>.*)")
_PREFIX_RE = re.compile(r"^(?:<\d+>)?(?:\[\s*[\d.]+\]\s*)?")
#: 6.1 mm/page_owner.c __dump_page_owner(), printed by dump_page() after the reason.
_DUMP_OWNER_RE = re.compile(
    r"page last allocated via order (?P<order>\d+), migratetype (?P<mt>[^,]+), "
    r"gfp_mask (?P<mask>0x[0-9a-f]+)\((?P<gfp>[^)]*)\), pid (?P<pid>-?\d+), "
    r"tgid (?P<tgid>-?\d+) \((?P<comm>[^)]*)\)"
)
#: 6.1 mm/cma.c cma_alloc(): pr_err_ratelimited("%s: %s: alloc failed, req-size: %lu
#: pages, ret: %d\n", __func__, cma->name, count, ret) (``__cma_alloc`` on newer kernels).
_ALLOC_FAILED_RE = re.compile(
    r"(?P<func>\w+): (?P<area>\S+): alloc failed, req-size: (?P<pages>\d+) pages, "
    r"ret: (?P<ret>-?\d+)"
)

#: Keys of a :func:`parse_dump_pages` record, in order.
DUMP_FIELDS = (
    "pfn",
    "refcount",
    "mapcount",
    "has_mapping",
    "type",
    "aops",
    "ino",
    "flags",
    "flag_names",
    "cma",
    "reason",
    "owner_order",
    "owner_gfp_mask",
    "owner_gfp",
    "owner_pid",
    "owner_comm",
    "owner_migrated",
)


def _hex_or_null(text: str) -> int:
    return 0 if text == "(null)" else int(text, 16)


def _new_record(m: re.Match) -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(DUMP_FIELDS)
    rec.update(
        pfn=int(m["pfn"], 16),
        refcount=int(m["refcount"]),
        mapcount=int(m["mapcount"]),
        has_mapping=_hex_or_null(m["mapping"]) != 0,
        type="",
        aops="",
        flag_names="",
        cma=False,
        reason="",
        owner_migrated=False,
    )
    return rec


def _owner_line(rec: dict[str, Any], line: str) -> None:
    """A page_owner line after a finished record (``page_owner=on``)."""
    m = _DUMP_OWNER_RE.search(line)
    if m:
        rec["owner_order"] = int(m["order"])
        rec["owner_gfp_mask"] = int(m["mask"], 16)
        rec["owner_gfp"] = m["gfp"]
        rec["owner_pid"] = int(m["pid"])
        rec["owner_comm"] = m["comm"]
    elif line.startswith("page has been migrated"):
        rec["owner_migrated"] = True


def _record_line(rec: dict[str, Any], line: str) -> bool:
    """Read one line into a record in progress; True when it was the last one (reason)."""
    m = _AOPS_RE.match(line)
    if m:
        rec["aops"] = m["aops"]
        rec["ino"] = int(m["ino"], 16) if m["ino"] else None
        return False
    m = _FLAGS_RE.match(line)
    if m:
        rec["type"] = (m["type"] or "").strip()
        rec["flags"] = int(m["raw"], 16)
        rec["flag_names"] = "|".join(
            n for n in m["names"].split("|") if not n.startswith(("zone=", "node="))
        )
        rec["cma"] = bool(m["cma"])
        return False
    m = _REASON_RE.match(line)
    if m:
        rec["reason"] = m["reason"]
        return True
    return False


def parse_dump_pages(text: str) -> list[dict[str, Any]]:
    """The ``dump_page()`` records in a dmesg capture (6.1 mm/debug.c ``__dump_page()``,
    fs/inode.c ``dump_mapping()``, mm/page_owner.c ``__dump_page_owner()``), one dict
    each with the keys of :data:`DUMP_FIELDS`.

    A record starts with ``page:... pfn:0x...``; its ``page dumped because:`` line gives
    the reason the caller passed (``migration failure`` from
    ``alloc_contig_dump_pages()``); the page_owner lines after it (``page_owner=on``)
    give the allocation the kernel itself remembers (``owner_*``).
    """
    rows: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    last: dict[str, Any] | None = None  # the finished record page_owner lines belong to
    for line in text.splitlines():
        line = _PREFIX_RE.sub("", line).strip()
        m = _PAGE_RE.search(line)
        if m:
            last, cur = None, _new_record(m)
        elif last is not None:
            _owner_line(last, line)
        elif cur is not None and _record_line(cur, line):
            rows.append(cur)
            last, cur = cur, None
    return rows


def parse_alloc_failed(text: str) -> list[dict[str, Any]]:
    """The kernel's ``cma_alloc`` ``alloc failed`` lines, in order: ``area``, ``pages``
    (req-size) and ``ret`` (the errno cma_alloc() ended with). Printed unless the
    caller passed ``no_warn``: debugfs ``alloc`` prints it (6.1 cma_debug.c passes
    false), hugetlb's gigantic pages do not (``no_warn`` true)."""
    return [
        {"area": m["area"], "pages": int(m["pages"]), "ret": int(m["ret"])}
        for m in _ALLOC_FAILED_RE.finditer(text)
    ]
