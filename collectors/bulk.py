"""Collector for probes/bulk.bpf.c: bulk-allocator pages that have no mm_page_alloc.

The bulk allocator's fast path counts its pages in ``/proc/vmstat`` ``pgalloc_*`` but fires
no ``kmem:mm_page_alloc``; this collector attaches a kprobe and a kretprobe to the bulk
function (:func:`cmaprof.collectors.features.bulk_symbol`) and reads the per (node, zone)
page counts into the ``page_alloc_bulk`` table. Counting follows the page_alloc probe's
``config`` map (``enabled``, zone source), so the program must be compiled together with
page_alloc (``bccload.load_probes(["bulk", "page_alloc", ...])``), which also tells it the
fallback pages that mm_page_alloc did trace.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from cmaprof import probes
from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.probes import abi
from cmaprof.recording import schema
from cmaprof.recording.metadata import Metadata

PROBE = probes.get("bulk")
ENTRY_FN = b"bulk_entry"
RETURN_FN = b"bulk_return"
#: Return instances the kernel keeps per CPU for the kretprobe (tasks inside the function
#: at once); BCC sets it through a tracefs kprobe event.
MAXACTIVE = 64

#: Indexes of the per-CPU ``bulk_stats`` array (probes/events.h BULK_STAT_*).
STAT_NAMES = abi.enum("BULK_STAT_")


class BulkCollector(Collector):
    """Attaches bulk.bpf.c's programs to ``symbol`` and reads its maps.

    :param bpf: the ``bcc.BPF`` module holding the bulk and page_alloc probes.
    :param symbol: the bulk allocator function (``alloc_pages_bulk_noprof`` or
        ``__alloc_pages_bulk``).
    """

    name = "bulk"

    def __init__(self, bpf: Any, symbol: str) -> None:
        self.bpf = bpf
        self.symbol = symbol
        self.attached = False

    @classmethod
    def create(cls, ctx: CollectorContext) -> BulkCollector | None:
        """None when the kernel has no bulk allocator function to probe."""
        from cmaprof.collectors import features

        symbol = features.bulk_symbol()
        return cls(ctx.bpf, symbol) if symbol is not None else None

    def final_tables(self) -> dict[str, pa.Table]:
        return {"page_alloc_bulk": self.read()}

    def metadata(self, meta: Metadata, final: bool) -> None:
        if final:
            meta.bulk = self.stats()

    def attach(self) -> None:
        """Return probe first: a return without its entry is harmless, an entry
        without its return leaves a frame to clear later."""
        ev = self.symbol.encode()
        try:
            self.bpf.attach_kretprobe(event=ev, fn_name=RETURN_FN, maxactive=MAXACTIVE)
        except TypeError:  # a BCC without maxactive: the kernel default (2 * CPUs)
            self.bpf.attach_kretprobe(event=ev, fn_name=RETURN_FN)
        try:
            self.bpf.attach_kprobe(event=ev, fn_name=ENTRY_FN)
        except Exception:
            self.bpf.detach_kretprobe(event=ev, fn_name=RETURN_FN)
            raise
        self.attached = True

    def detach(self) -> None:
        if not self.attached:
            return
        ev = self.symbol.encode()
        try:
            self.bpf.detach_kprobe(event=ev, fn_name=ENTRY_FN)
        finally:
            self.bpf.detach_kretprobe(event=ev, fn_name=RETURN_FN)
            self.attached = False

    def close(self) -> None:
        self.detach()

    def read(self) -> pa.Table:
        """The cumulative ``page_alloc_bulk`` table (one row per node and zone)."""
        rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["page_alloc_bulk"]}
        items = [((k.node, k.zone_idx), leaves) for k, leaves in self.bpf["bulk_pages"].items()]
        for (node, zone), leaves in sorted(items, key=lambda kv: kv[0]):
            rows["node"].append(node)
            rows["zone_idx"].append(zone)
            rows["calls"].append(sum(leaf.calls for leaf in leaves))
            rows["pages"].append(sum(leaf.pages for leaf in leaves))
        return schema.to_table("page_alloc_bulk", rows)

    def stats(self) -> dict[str, Any]:
        """Counters of the probe itself: calls seen, fallback calls, pages, losses."""
        t = self.bpf["bulk_stats"]
        out: dict[str, Any] = {"symbol": self.symbol}
        for i, name in enumerate(STAT_NAMES):
            out[name] = int(sum(t[t.Key(i)]))
        inflight = self.bpf["bulk_inflight"]
        out["frames_in_flight"] = int(inflight[inflight.Key(0)].value)
        return out
