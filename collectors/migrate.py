"""Collector for probes/migrate.bpf.c: migrate_pages() calls by reason and mode."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from cmaprof.analysis import schema


class MigrateCollector:
    name = "migrate"

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf

    def table(self) -> pa.Table:
        rows: dict[str, list] = {f.name: [] for f in schema.SCHEMAS["migrate"]}
        for k, v in self.bpf["migrate_stats"].items():
            rows["reason_id"].append(k.reason)
            rows["mode_id"].append(k.mode)
            for f in schema.MIGRATE_COUNTS:
                rows[f].append(sum(getattr(leaf, f) for leaf in v))
        return schema.to_table("migrate", rows)
