"""Collector for probes/migrate.bpf.c: migrate_pages() calls by reason and mode."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from cmaprof.collectors.base import Collector, CollectorContext
from cmaprof.recording import schema


class MigrateCollector(Collector):
    """Reads ``migrate_stats`` (BCC attaches the tracepoint programs at load)."""

    name = "migrate"

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf

    @classmethod
    def create(cls, ctx: CollectorContext) -> MigrateCollector:
        return cls(ctx.bpf)

    def final_tables(self) -> dict[str, pa.Table]:
        return {"migrate": self.table()}

    def table(self) -> pa.Table:
        rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["migrate"]}
        for k, v in self.bpf["migrate_stats"].items():
            rows["reason_id"].append(k.reason)
            rows["mode_id"].append(k.mode)
            for f in schema.MIGRATE_COUNTS:
                rows[f].append(sum(getattr(leaf, f) for leaf in v))
        return schema.to_table("migrate", rows)
