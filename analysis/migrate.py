"""migrate_pages() by reason and mode, and the pgmigrate_* check."""

from __future__ import annotations

import pandas as pd

from cmaprof.analysis.loaded import Recording
from cmaprof.recording import schema

COLUMNS = ["reason", "mode", *schema.MIGRATE_COUNTS[:6], "mean_duration_ns"]


def df_migrate(rec: Recording) -> pd.DataFrame:
    """Per (reason, mode): calls, pages succeeded/failed, THP counts, mean duration.

    Reason and mode names come from the recording's mm_migrate_pages format file
    (``__print_symbolic`` tables), so they follow the kernel that was traced.
    """
    df = rec.table("migrate").to_pandas()
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    fmt = rec.event_formats.get(("migrate", "mm_migrate_pages"))
    reasons = fmt.symbolic_table("reason") if fmt else None
    modes = fmt.symbolic_table("mode") if fmt else None
    df["reason"] = [reasons.decode(int(v)) if reasons else str(v) for v in df["reason_id"]]
    df["mode"] = [modes.decode(int(v)) if modes else str(v) for v in df["mode_id"]]
    df["mean_duration_ns"] = (
        df["duration_ns"] / df["timed_calls"].where(df["timed_calls"] > 0)
    ).round()
    return df[COLUMNS].sort_values(["succeeded", "calls"], ascending=False, ignore_index=True)


def check_rows(rec: Recording) -> list[dict]:
    """pgmigrate_success|fail deltas (pages) against the pages mm_migrate_pages reported."""
    from cmaprof.analysis.cma import _row, probe_not_run

    start, end = rec.vmstat("start"), rec.vmstat("end")
    if (
        "pgmigrate_success" not in end
        or rec.table("migrate").num_rows == 0
        and not any(
            end.get(c, 0) - start.get(c, 0) for c in ("pgmigrate_success", "pgmigrate_fail")
        )
    ):
        return []
    off = probe_not_run(rec, "migrate")
    df = rec.table("migrate").to_pandas()
    return [
        _row(
            "pgmigrate_success",
            "/proc/vmstat",
            "pages",
            None if off else int(df["succeeded"].sum()),
            end["pgmigrate_success"] - start.get("pgmigrate_success", 0),
            off or "",
        ),
        _row(
            "pgmigrate_fail",
            "/proc/vmstat",
            "pages",
            None if off else int(df["failed"].sum()),
            end.get("pgmigrate_fail", 0) - start.get("pgmigrate_fail", 0),
            off or "",
        ),
    ]
