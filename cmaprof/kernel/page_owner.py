"""Records of debugfs ``page_owner`` (``page_owner=on``): who allocated a page.

One record is a blank-line separated block of ``print_page_owner()`` (mm/page_owner.c)
text: the allocation's order, gfp mask and pid, the page's and pageblock's migratetype,
then the allocation stack.
"""

from __future__ import annotations

import re
from typing import Any

_OWNER_HEAD = re.compile(r"order (\d+), mask (0x[0-9a-f]+)\(([^)]*)\), pid (\d+)(?:, tgid \d+)?")
#: mm/page_owner.c print_page_owner(): ``PFN %lu`` in 6.1, ``PFN 0x%lx`` in later kernels.
_OWNER_PFN = re.compile(
    r"^PFN (0x[0-9a-f]+|\d+) type (\S+) Block (\d+) type (\S+) Flags (\S+)", re.MULTILINE
)
#: Stack frames that mark a page allocated for buffer heads of a block device.
BH_FRAMES = ("grow_dev_page", "__getblk", "folio_create_buffers", "grow_buffers")


def parse_page_owner(text: str) -> dict[str, Any] | None:
    """One page_owner record -> pfn, order, gfp (mask and text), pid, types, buffer_head."""
    head, pfn = _OWNER_HEAD.search(text), _OWNER_PFN.search(text)
    if head is None or pfn is None:
        return None
    return {
        "pfn": int(pfn.group(1), 0),
        "order": int(head.group(1)),
        "gfp_mask": head.group(2),
        "gfp": head.group(3),
        "pid": int(head.group(4)),
        "page_type": pfn.group(2),
        "block_type": pfn.group(4),
        "flags": pfn.group(5),
        "buffer_head": any(f in text for f in BH_FRAMES),
    }


#: A stack line of print_page_owner() (stack_trace_snprint(): `` %pS``): ``function+0xoff/0xsize``,
#: `` [module]`` after it for a module's function.
_OWNER_FRAME = re.compile(r"^ (\S+?\+0x[0-9a-f]+)(?:/0x[0-9a-f]+)?(?: \[(\S+)\])?$")
_OWNER_MIGRATED = "Page has been migrated"
#: ``ts %llu ns`` (local_clock() at the allocation; since v5.11).
_OWNER_TS = re.compile(r", ts (\d+) ns")


def parse_page_owner_file(text: str) -> list[dict[str, Any]]:
    """The records of debugfs ``page_owner`` text (blank-line separated), each as
    :func:`parse_page_owner` gives it plus ``stack`` (the allocation's frames,
    innermost first, as ``function+0xoff`` or ``function+0xoff [module]``: the size
    after ``/`` dropped), ``migrated`` (the page was migrated since: its owner is
    the page it was copied from) and ``ts_ns`` (local_clock() of the allocation)."""
    out = []
    for block in text.split("\n\n"):
        rec = parse_page_owner(block)
        if rec is None:
            continue
        frames = []
        for line in block.splitlines():
            m = _OWNER_FRAME.match(line)
            if m:
                frames.append(m.group(1) + (f" [{m.group(2)}]" if m.group(2) else ""))
        rec["stack"] = frames
        rec["migrated"] = _OWNER_MIGRATED in block
        ts = _OWNER_TS.search(block)
        rec["ts_ns"] = int(ts.group(1)) if ts else None
        out.append(rec)
    return out
