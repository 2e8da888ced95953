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
