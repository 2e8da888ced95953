"""Which collector runs each probe: one line per probe, in the order they are driven.

A new probe adds its ``probes/NAME.bpf.c`` (and its entry in :mod:`cmaprof.probes`), its
``collectors/NAME.py`` with a :class:`~cmaprof.collectors.base.Collector` whose
``create(ctx)`` builds it (or returns None when it has nothing to do here), and one
line below.
"""

from __future__ import annotations

import importlib

from cmaprof.collectors.base import Collector, CollectorContext

#: probe name -> "module:class" (imported only when the probe runs).
COLLECTORS: dict[str, str] = {
    "page_alloc": "cmaprof.collectors.page_alloc:PageAllocCollector",
    "cma": "cmaprof.collectors.cma:CmaCollector",
    "migrate": "cmaprof.collectors.migrate:MigrateCollector",
    "blockers": "cmaprof.collectors.blockers:BlockersCollector",
    "bulk": "cmaprof.collectors.bulk:BulkCollector",
    "stream": "cmaprof.collectors.stream:StreamCollector",
}


def collector_class(name: str) -> type[Collector]:
    """The collector class of probe ``name``.

    :raises KeyError: no collector is registered for ``name``.
    """
    module, _, cls = COLLECTORS[name].partition(":")
    out: type[Collector] = getattr(importlib.import_module(module), cls)
    return out


def create(ctx: CollectorContext) -> list[Collector]:
    """The collectors of the probes in ``ctx.names``, in :data:`COLLECTORS` order
    (page_alloc first: it owns the counting switch)."""
    out: list[Collector] = []
    for name in COLLECTORS:
        if name in ctx.names:
            c = collector_class(name).create(ctx)
            if c is not None:
                out.append(c)
    return out
