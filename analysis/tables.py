"""Text tables (<= 80 columns) and the machine-readable report of a recording.

``table_*`` return text; :func:`report_tables` returns the named DataFrames that
``cmaprof report --format json|csv`` prints. ``--redact`` nulls pfn/pid columns of those
frames; text tables must print pfns with :func:`cmaprof.analysis.redact.fmt_pfn`.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from cmaprof.analysis import blockers, by, by_text, check, cma, migrate, page_alloc, stats, stream
from cmaprof.analysis import causes as causes_  # issue 12: a cause per failed cma_alloc()
from cmaprof.analysis import layout as layout_  # issue 12: memory layout section
from cmaprof.analysis import phases as phases_  # issue 12: where a call's time went
from cmaprof.analysis import utilisation as utilisation_  # issue 12: held/borrowed/free
from cmaprof.analysis.counterfactual import table_counterfactual
from cmaprof.analysis.loaded import Recording
from cmaprof.errors import BadInput
from cmaprof.kernel import formats
from cmaprof.recording.metadata import Metadata

WIDTH = 80


def _human_pages(pages: int, page_size: int) -> str:
    b = float(pages * page_size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return ""


def table_header(rec: Recording) -> str:
    m = rec.meta
    dur = m.get("duration_ns")
    lines = [
        f"cmaprof recording {rec.path}",
        f"kernel {m.get('kernel_release')}  cpus {m.get('cpus')}  duration {dur / 1e9:.2f} s"
        if dur
        else f"kernel {m.get('kernel_release')}  cpus {m.get('cpus')}  duration unknown",
    ]
    if m.get("command"):
        lines.append(textwrap.shorten("command: " + " ".join(m["command"]), WIDTH))
    imp = m.get("imported")
    if isinstance(imp, dict):
        lines.append(
            textwrap.fill(
                f"imported from {imp.get('source')} text: {imp.get('lines')} lines, "
                f"{imp.get('malformed_lines')} malformed; zone from "
                f"{imp.get('zone_source')}, CMA placement {imp.get('cma_placement')}",
                WIDTH,
                subsequent_indent="  ",
            )
        )
    if not rec.complete:
        lines.append(
            "WARNING: recording is INCOMPLETE (killed before it was finished); "
            "tables may be missing"
        )
    elif m.get("stop_reason", "").startswith("signal"):
        lines.append(f"stopped by {m['stop_reason']}")
    return "\n".join(lines)


def table_zone_gfp(rec: Recording, top: int = 12, wide: bool = False) -> str:
    """Per node and zone: the GFP classes by pages, with share, orders, migratetypes.

    Each class is a line of numbers followed by its GFP string (as the kernel prints
    it), indented and wrapped at ``|`` so that no line exceeds 80 columns.

    :param wide: the GFP string at the end of its line of numbers, unwrapped (for grep)
    """
    df = page_alloc.df_gfp_classes(rec)
    page_size = int(rec.meta.page_size or 4096)
    out = ["Page allocations per zone and GFP class (pages = base pages)"]
    if df.empty:
        out.append("  no allocations traced")
        return "\n".join(out)
    hdr = f"{'pages':>10} {'share':>6} {'allocs':>10}  {'orders':<20} migratetypes"
    if wide:
        hdr = f"{hdr:<{WIDTH}} gfp"
    indent = " " * 6
    for (node, zone), g in df.groupby(["node", "zone"], observed=True, sort=True):
        total = int(g["pages"].sum())
        out.append("")
        out.append(
            f"Node {node}, zone {zone}: {total} pages ({_human_pages(total, page_size)}) "
            f"in {int(g['allocs'].sum())} allocations"
        )
        out.append(hdr)
        for r in g.head(top).itertuples(index=False):
            nums = (
                f"{r.pages:>10} {r.zone_share:>6.1%} {r.allocs:>10}  {r.orders:<20.20} "
                f"{r.migratetypes}"
            )
            if wide:
                out.append(f"{nums:<{WIDTH}} {r.gfp}")
                continue
            out.append(nums[:WIDTH])
            out.extend(
                indent + line for line in formats.wrap_flags(str(r.gfp), WIDTH - len(indent))
            )
        rest = g.iloc[top:]
        if len(rest):
            out.append(
                f"{int(rest['pages'].sum()):>10} {rest['zone_share'].sum():>6.1%} "
                f"{int(rest['allocs'].sum()):>10}  ({len(rest)} more GFP classes)"
            )
    return "\n".join(out)


def table_check(rec: Recording) -> str:
    """Traced counts against kernel counters (vmstat, CMA sysfs) over the recording."""
    if not rec.vmstat("start") or not rec.vmstat("end"):
        return (
            "Check against the kernel: no kernel counters\n"
            "  (no /proc/vmstat read at the start and end of this recording)"
        )
    df = check.df_check(rec)
    out = [
        "Check against the kernel: counters read at the start and end of the recording",
        f"{'counter':<28} {'source':<12} {'unit':<5} {'traced':>10} {'kernel':>10} {'diff':>8}",
    ]
    notes: dict[str, None] = {}
    for r in df.itertuples(index=False):
        kernel = "-" if r.kernel is None or pd.isna(r.kernel) else f"{int(r.kernel)}"
        traced = "-" if r.traced is None or pd.isna(r.traced) else f"{int(r.traced)}"
        if traced != "-" and kernel != "-" and (r.diff_pct is None or pd.isna(r.diff_pct)):
            diff = f"{int(r.traced) - int(r.kernel):+d}"  # kernel counted 0: no ratio
        elif r.diff_pct is None or pd.isna(r.diff_pct):
            diff = "-"
        else:
            diff = f"{r.diff_pct:+.2f}%"
        out.append(
            f"{str(r.counter)[:28]:<28} {r.source:<12} {r.unit:<5} {traced:>10} "
            f"{kernel:>10} {diff:>8}"
        )
        if isinstance(r.note, str) and r.note:
            key = f"-: {r.note}" if traced == "-" else f"note: {r.counter}: {r.note}"
            notes[key] = None
    for note in notes:
        out.append(textwrap.fill(note, WIDTH, subsequent_indent="  "))
    bulk = rec.meta.probes_unavailable.get("bulk")
    if bulk:
        out.append(
            textwrap.fill(f"note: bulk allocator not traced: {bulk}", WIDTH, subsequent_indent="  ")
        )
    return "\n".join(out)


def _dropped(meta: Metadata) -> dict[str, int]:
    return meta.dropped_counts


def _ms(ns: float | None) -> str:
    """Latency in milliseconds, three significant digits, at most 6 characters (< 1000 s);
    ``-`` for a value that is not there."""
    if ns is None or pd.isna(ns):
        return "-"
    ms = ns / 1e6
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def table_cma(rec: Recording) -> str:
    """cma_alloc() per area: outcomes, pages, retries, migrations, latency (ms)."""
    df = cma.df_cma_summary(rec)
    if df.empty:
        return ""
    out = [
        "cma_alloc() calls (latency in milliseconds)",
        (
            f"{'area':<10} {'calls':>5} {'ok':>5} {'fail':>4} {'pages':>7} {'retry':>5} "
            f"{'migr':>6} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}"
        ),
    ]
    for r in df.itertuples(index=False):
        out.append(
            f"{str(r.area)[:10]:<10} {r.calls:>5} {r.succeeded:>5} {r.failed:>4} "
            f"{r.pages_allocated:>7} {r.busy_retries:>5} {r.migrate_succeeded:>6} "
            f"{_ms(r.p50_ns):>6} {_ms(r.p90_ns):>6} {_ms(r.p99_ns):>6} {_ms(r.max_ns):>6}"
        )
    few = [
        f"{name} needs {cma.calls_needed(q)}"
        for name, q in cma.PERCENTILES.items()
        if (df["calls"] < cma.calls_needed(q)).any()
    ]
    if few:
        out.append(
            textwrap.fill(
                f"-: too few calls to estimate the percentile ({', '.join(few)} calls in "
                f"the area, {stats.TAIL_MIN} beyond it); "
                + ", ".join(f"{r.area} has {r.calls}" for r in df.itertuples(index=False)),
                WIDTH,
                subsequent_indent="  ",
            )
        )
    return "\n".join(out)


def table_migrate(rec: Recording) -> str:
    """migrate_pages() per reason and mode (pages)."""
    df = migrate.df_migrate(rec)
    if df.empty:
        return ""
    out = [
        "migrate_pages() by reason and mode (pages)",
        f"{'reason':<18} {'mode':<20} {'calls':>8} {'succeeded':>10} {'failed':>8} {'mean_us':>9}",
    ]
    for r in df.itertuples(index=False):
        mean = "-" if pd.isna(r.mean_duration_ns) else f"{r.mean_duration_ns / 1e3:.1f}"
        out.append(
            f"{str(r.reason)[:18]:<18} {str(r.mode)[:20]:<20} {r.calls:>8} "
            f"{r.succeeded:>10} {r.failed:>8} {mean:>9}"
        )
    return "\n".join(out)


def _failed_line(rec: Recording) -> str:
    fails = page_alloc.df_failed(rec)
    n_fail = int(fails["allocs"].sum()) if not fails.empty else 0
    if not n_fail:
        return "failed allocations: 0"
    top = fails.iloc[0]
    return (
        f"failed allocations: {n_fail} (largest: {top['gfp']} order {top['order']}, "
        f"{top['allocs']} times)"
    )


def _losses_lines(m: Metadata) -> list[str]:
    """Lost events (recursion misses), dropped ones, the zone source."""
    lost = m.lost or {}
    lost_total = sum(int(v) for v in lost.values())
    lost_at = ", ".join(f"{k} {v}" for k, v in lost.items() if v)
    lost_text = (
        f"lost events (BPF recursion misses): {lost_total}" + (f" ({lost_at})" if lost_at else "")
        if lost
        else "lost events: not measured"
    )
    out = [textwrap.fill(lost_text, WIDTH, subsequent_indent="  ")]
    out.append(
        "dropped (bounded maps full, unreadable pages): "
        + (", ".join(f"{k} {v}" for k, v in _dropped(m).items() if v) or "none")
    )
    pa_meta = m.page_alloc
    src = pa_meta.zone_source if pa_meta is not None else None
    if pa_meta is not None and src:
        out.append(
            textwrap.fill(
                f"zone/node source: {src}: {pa_meta.zone_source_reason or ''}",
                WIDTH,
                subsequent_indent="  ",
            )
        )
    return out


def _setup_lines(m: Metadata) -> list[str]:
    """Probes not run and headers that are not the running kernel's."""
    out = []
    if m.probes_unavailable:
        out.append("probes not run:")
        for probe, why in m.probes_unavailable.items():
            out.append(
                textwrap.fill(
                    f"{probe}: {why}", WIDTH, initial_indent="  ", subsequent_indent="    "
                )
            )
    hdr = m.headers
    if hdr is not None and hdr.has("matches_running_kernel") and not hdr.matches_running_kernel:
        out.append(
            textwrap.fill(
                f"headers: compiled against {hdr.build_dir} (not the "
                f"running kernel's); page->flags layout validated above",
                WIDTH,
                subsequent_indent="  ",
            )
        )
    return out


def _overhead_lines(m: Metadata) -> list[str]:
    """BPF run time per event of the hot programs (bpf_stats, in windows or always)."""
    out = []
    stats = {k: v for k, v in (m.bpf_stats or {}).items() if v.get("run_cnt")}
    samp = m.bpf_stats_sampling or {}
    where = (
        f"bpf_stats in {samp.get('windows')} windows of {samp.get('window_s'):g} s"
        if samp.get("mode") == "sampled"
        else "bpf_stats"
    )
    for prog in ("page_alloc_btf", "page_alloc_raw", "stream_btf", "stream_raw"):
        main = stats.pop(prog, None)
        if main and main.get("run_time_ns"):
            out.append(
                textwrap.fill(
                    f"overhead: {prog} ran {main['run_cnt']} times, "
                    f"{main['run_time_ns'] / main['run_cnt']:.0f} ns per event ({where})",
                    WIDTH,
                    subsequent_indent="  ",
                )
            )
        elif main:
            out.append(f"overhead: {prog} ran {main['run_cnt']} times (run time not measured)")
    if "bpf_stats" not in m:
        out.append("overhead: not measured (no bpf_stats in this recording)")
    if stats:
        total_ms = sum(v.get("run_time_ns", 0) for v in stats.values()) / 1e6
        runs = sum(v["run_cnt"] for v in stats.values())
        out.append(f"overhead: {len(stats)} other programs ran {runs} times, {total_ms:.1f} ms")
    return out


def table_footer(rec: Recording) -> str:
    """Failed allocations, losses, probes not run, headers, BPF overhead."""
    m = rec.meta
    out = [_failed_line(rec), *_losses_lines(m), *_setup_lines(m), *_overhead_lines(m)]
    return "\n".join(out)


def table_report(rec: Recording, redact: bool = False, wide: bool = False) -> str:
    """The whole text report: header, per-zone GFP classes, CMA, migration, check, footer.

    :param redact: hide pfns, pids and local paths (:mod:`cmaprof.analysis.redact`).
    :param wide: GFP strings on the line of their numbers, unwrapped, so that ``grep``
        returns both (lines then exceed 80 columns)
    """
    if redact:
        from cmaprof.analysis import redact as rd

        with rd.active():
            text = table_report(rd.view(rec), wide=wide)
        return rd.redact_text(text, rec)
    parts = [
        table_header(rec),
        layout_.table_layout(rec),  # issue 12
        table_zone_gfp(rec, wide=wide),
        by_text.table_who_allocates(rec),  # issue 17: record --by
        table_cma(rec),
        phases_.table_cma_phases(rec),  # issue 12
        causes_.table_cma_failure_causes(rec),  # issue 12
        utilisation_.table_cma_utilisation(rec),  # issue 12
        blockers.table_cma_failures(rec),
        blockers.table_cma_blockers_origin(rec, wide=wide),
        table_counterfactual(rec, wide=wide),
        table_migrate(rec),
        stream.table_stream(rec),
        table_check(rec),
        table_footer(rec),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def report_tables(rec: Recording, redact: bool = False) -> dict[str, pd.DataFrame]:
    """The tables of ``cmaprof report --format json|csv``, by name.

    :param redact: pfn, pid and tgid columns null, paths cut to their last component
        (:mod:`cmaprof.analysis.redact`).
    """
    if redact:
        from cmaprof.analysis import redact as rd

        return rd.redact_tables(report_tables(rd.view(rec)))
    m = rec.meta
    summary = pd.DataFrame(
        [
            {
                "path": str(rec.path),
                "kernel_release": m.get("kernel_release"),
                "complete": rec.complete,
                "duration_ns": m.get("duration_ns"),
                "stop_reason": m.get("stop_reason"),
                "zone_source": (m.get("page_alloc") or {}).get("zone_source"),
                "lost": sum(int(v) for v in (m.lost or {}).values()),
                "dropped": sum(_dropped(m).values()),
            }
        ]
    )
    out = {
        "recording": summary,
        "zones": page_alloc.df_zones(rec),
        "zone_gfp": page_alloc.df_zone_gfp(rec),
        "gfp_classes": page_alloc.df_gfp_classes(rec),
        "failed": page_alloc.df_failed(rec),
        "cma_alloc": cma.df_cma_summary(rec),
        "migrate": migrate.df_migrate(rec),
        "check": check.df_check(rec),
        # issue 12: zones per node and CMA areas (analysis/layout.py)
        "layout": layout_.df_layout(rec),
        "cma_layout": layout_.df_cma_layout(rec),
    }
    if causes_.has_cma_probe(rec):  # issue 12: one cause per failed call
        out["cma_failed_calls"] = causes_.df_cma_failures(rec)
        out["cma_utilisation"] = utilisation_.df_cma_utilisation(rec)
    if phases_.has_phases(rec):  # issue 12: where the time of the calls went
        out["cma_phases"] = phases_.df_cma_phase_summary(rec)
    if blockers.has_blockers(rec):  # absent: not measured; empty: none seen
        out["cma_failures"] = blockers.df_cma_failures(rec)
        out["cma_blockers_origin"] = blockers.df_cma_blockers_origin(rec)
    if by.has_by(rec):  # issue 17: record --by
        out["who_allocates"] = by.df_who_allocates(rec)
    if blockers.has_stacks(rec):  # issue 17: record --by stack
        out["cma_blocker_stacks"] = blockers.df_blocker_stacks_flat(rec)
    return out


def _jsonable(v: Any) -> Any:
    """A JSON value: numbers stay numbers; NaN, NA and infinities (undefined) are null."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _tables(rec: Recording, redact: bool, table: str | None) -> dict[str, pd.DataFrame]:
    out = report_tables(rec, redact)
    if table is None:
        return out
    return {table: pick_table(out, table, rec.path)}


def report_json(rec: Recording, redact: bool = False, table: str | None = None) -> str:
    """One JSON object: table name -> list of row objects (only ``table`` if given).
    Numbers are JSON numbers; undefined values are null."""
    return frames_json(_tables(rec, redact, table))


def frames_json(frames: dict[str, pd.DataFrame]) -> str:
    """Named tables as one JSON object: name -> list of row objects."""
    obj = {}
    for name, df in frames.items():
        obj[name] = [
            {k: _jsonable(v) for k, v in row.items()}
            for row in df.astype(object).to_dict(orient="records")
        ]
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def pick_table(frames: dict[str, pd.DataFrame], table: str, where: object) -> pd.DataFrame:
    """The table ``table`` of a report of ``where``.

    :raises BadInput: no such table (the message names those there are)
    """
    if table not in frames:
        raise BadInput(
            f"no table {table!r} in the report of {where}; its tables: {', '.join(frames)}"
        )
    return frames[table]


def table_csv(rec: Recording, table: str, redact: bool = False) -> str:
    """One table of the report as CSV (header line, one line per row) that
    ``pandas.read_csv`` reads.

    :raises BadInput: the report has no such table (the message names those it has)
    """
    buf = io.StringIO()
    _tables(rec, redact, table)[table].to_csv(buf, index=False)
    return buf.getvalue()


def write_csv_tables(rec: Recording, outdir: Path, redact: bool = False) -> list[Path]:
    """Write every table of the report as ``outdir/NAME.csv``; return the paths."""
    return write_frames_csv(report_tables(rec, redact), outdir)


def write_frames_csv(frames: dict[str, pd.DataFrame], outdir: Path) -> list[Path]:
    """Write named tables as ``outdir/NAME.csv``; return the paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in frames.items():
        path = outdir / f"{name}.csv"
        df.to_csv(path, index=False)
        paths.append(path)
    return paths


def report_csv(rec: Recording, redact: bool = False) -> str:
    """Every table as CSV in one stream, each preceded by a ``# table: NAME`` line (what
    ``report --format csv`` prints without ``-o DIR`` or ``--table``; pandas reads the
    files of :func:`write_csv_tables` or one :func:`table_csv`)."""
    return frames_csv(report_tables(rec, redact))


def frames_csv(frames: dict[str, pd.DataFrame]) -> str:
    """Named tables as CSV in one stream, each after a ``# table: NAME`` line."""
    buf = io.StringIO()
    for name, df in frames.items():
        buf.write(f"# table: {name}\n")
        df.to_csv(buf, index=False)
        buf.write("\n")
    return buf.getvalue()
