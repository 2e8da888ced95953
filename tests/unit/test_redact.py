"""``cmaprof report --redact`` and a scan of every output for kernel addresses and pfns.

The recordings scanned are real outputs of ``cmaprof record`` (tests/data/recordings:
the 6.18 host, and the 6.1 CMA guest, whose cma_alloc table and CMA areas hold pfns).
The guest one was made with::

    cmaprof vm run --cma 64M --memory 1G --out OUT -- cmaprof record -o OUT/rec \
        --probes page_alloc,cma -- sh -c 'for i in 1 2 3 4 5; do
        echo 23 > /sys/kernel/debug/cma/reserved/alloc; done;
        echo 20000 > /sys/kernel/debug/cma/reserved/alloc; true'

(five 23-page cma_alloc() calls and one larger than the 16384-page area, which fails).
:func:`scan_outputs` is shared with the live tests, which run it on fresh recordings.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matplotlib
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cmaprof.analysis import redact, tables
from cmaprof.analysis.loaded import load
from tests.conftest import DATA, run_cli

RECORDINGS = sorted(p for p in (DATA / "recordings").iterdir() if (p / "metadata.json").exists())
HOST = DATA / "recordings" / "host-6.18-anon"
GUEST = DATA / "recordings" / "guest-6.1-cma"

#: A 64-bit kernel virtual address, in hex (with or without 0x) or in decimal.
KADDR_HEX = re.compile(r"(?i)\b(?:0x)?ffff[89a-f][0-9a-f]{11}\b")
KADDR_DEC = re.compile(r"\b1844[0-9]{16}\b")
KERNEL_LOW = 0xFFFF800000000000
ALL_ONES = 2**64 - 1  # the "no page" pfn (-1) of a failed allocation, not an address


def _texts_of(path: Path) -> list[tuple[str, str]]:
    """(label, text) of one output file: parquet as its values, others as text."""
    if path.suffix == ".parquet":
        t = pq.read_table(path)
        out = [(f"{path} (values)", json.dumps(t.to_pylist(), default=str))]
        for name in t.column_names:
            vals = t.column(name).to_pylist()
            big = [v for v in vals if isinstance(v, int) and KERNEL_LOW <= v < ALL_ONES]
            if big:
                out.append((f"{path}:{name}", f"integer kernel address {big[0]:#x}"))
        return out
    return [(str(path), path.read_bytes().decode("utf-8", "replace"))]


def kernel_address_hits(label: str, text: str) -> list[str]:
    hits = []
    if text.startswith("integer kernel address"):
        hits.append(f"{label}: {text}")
    for pat in (KADDR_HEX, KADDR_DEC):
        m = pat.search(text)
        if m:
            hits.append(
                f"{label}: {m.group(0)!r} near {text[max(0, m.start() - 60) : m.end() + 20]!r}"
            )
    return hits


def pfn_hits(label: str, text: str, pfns: set[int]) -> list[str]:
    """pfns of the recording printed in hex (any) or decimal (6 digits or more: smaller
    numbers are counts as often as pfns)."""
    hits = []
    for m in re.finditer(r"(?i)\b0x[0-9a-f]+\b", text):
        if int(m.group(0), 16) in pfns:
            hits.append(f"{label}: pfn {m.group(0)}")
    for m in re.finditer(r"\b\d{6,}\b", text):
        if int(m.group(0)) in pfns:
            hits.append(
                f"{label}: pfn {m.group(0)} near {text[max(0, m.start() - 60) : m.end()]!r}"
            )
    return hits


def report_outputs(rec_dir: Path, redacted: bool) -> dict[str, str]:
    """The report in every format, through the CLI's command (what a user pastes), run
    in-process (click's runner) to keep the test fast."""
    from click.testing import CliRunner

    from cmaprof import cli

    out = {}
    for fmt in ("text", "json", "csv"):
        args = ["report", str(rec_dir), "--format", fmt] + (["--redact"] if redacted else [])
        res = CliRunner().invoke(cli.cli, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        out[f"report {fmt}{' --redact' if redacted else ''}"] = res.stdout
    return out


def plot_outputs(rec_dir: Path, outdir: Path) -> dict[str, str]:
    """Every plot of the recording, as SVG with its text kept as text (scannable), plus
    the PNGs' bytes (their metadata)."""
    from cmaprof.analysis import compare, plots

    rec = load(rec_dir)
    out = {}
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        paths = plots.save_all(rec, outdir / "single", "svg")
        paths += plots.save_sides([compare.load_side(rec_dir)], outdir / "sides", "svg")
    paths += plots.save_all(rec, outdir / "png", "png")
    for p in paths:
        out[str(p)] = p.read_bytes().decode("utf-8", "replace")
    assert paths
    return out


def scan_outputs(rec_dir: Path, tmp: Path, extra: dict[str, str] | None = None) -> dict:
    """Scan the recording's files, the report in every format with and without
    --redact, and the plots: no kernel address anywhere; with --redact no pfn."""
    files = [p for p in rec_dir.rglob("*") if p.is_file() and "formats" not in p.parts]
    texts = [t for p in files for t in _texts_of(p)]
    plain = report_outputs(rec_dir, False)
    red = report_outputs(rec_dir, True)
    plots_ = plot_outputs(rec_dir, tmp / "plots")
    everything = texts + list(plain.items()) + list(red.items()) + list(plots_.items())
    everything += list((extra or {}).items())
    kaddr = [h for label, t in everything for h in kernel_address_hits(label, t)]
    pfns = redact.known_pfns(load(rec_dir))
    leaked = [
        h for label, t in list(red.items()) + list(plots_.items()) for h in pfn_hits(label, t, pfns)
    ]
    assert not kaddr, "\n".join(kaddr[:10])
    assert not leaked, "\n".join(leaked[:10])
    return {"files": len(everything), "pfns": pfns, "plain": plain, "redacted": red}


@pytest.mark.parametrize("rec_dir", RECORDINGS, ids=[p.name for p in RECORDINGS])
def test_scan_every_output(rec_dir, tmp_path):
    res = scan_outputs(rec_dir, tmp_path)
    assert res["files"] > 10


def test_guest_recording_has_pfns_and_plain_report_may_show_them():
    """The scan above is not vacuous: the guest recording holds pfns."""
    if not GUEST.exists():
        pytest.skip(f"{GUEST} not checked in")
    pfns = redact.known_pfns(load(GUEST))
    meta = json.loads((GUEST / "metadata.json").read_text())
    area = meta["cma_areas"][0]
    assert area["base_pfn"] in pfns
    assert len(pfns) > 2  # cma_alloc results too


def test_redacted_json_keeps_every_number_but_pfns_pids_and_path():
    for rec_dir in RECORDINGS:
        rec = load(rec_dir)
        plain = json.loads(tables.report_json(rec))
        red = json.loads(tables.report_json(rec, redact=True))
        assert plain.keys() == red.keys()
        for name in plain:
            assert len(plain[name]) == len(red[name]), name
            for a, b in zip(plain[name], red[name], strict=True):
                assert a.keys() == b.keys()
                for k in a:
                    if redact.is_sensitive_column(k):
                        assert b[k] is None, (name, k)
                    elif k == "path":
                        assert b[k] == rec_dir.name and a[k] == str(rec_dir)
                    else:
                        assert a[k] == b[k], (name, k)


def test_redacted_text_differs_only_in_paths():
    rec = load(HOST)
    plain = tables.table_report(rec).splitlines()
    red = tables.table_report(rec, redact=True).splitlines()
    assert len(plain) == len(red)
    diff = [(a, b) for a, b in zip(plain, red, strict=True) if a != b]
    # the memory layout section (issue 12) prints zone pfns: those, and nothing else,
    # become <pfn>
    layout = [(a, b) for a, b in diff if a.startswith("N0 ")]
    assert [a.split()[1] for a, _ in layout] == ["DMA", "DMA32", "Normal"]
    assert all(re.sub(r"0x[0-9a-f]+", "<pfn>", a).split() == b.split() for a, b in layout)
    assert [b for a, b in diff if (a, b) not in layout] == [
        "cmaprof recording host-6.18-anon",
        "command: python -m cmaprof workload anon:1024 pagecache:256",
    ]


def test_redact_frame():
    df = pd.DataFrame(
        {
            "pfn": pd.array([0x40000, None], dtype="UInt64"),
            "first_busy_pfn": [0x40010, 0x40020],
            "pid": [17, 18],
            "tgid": [17, 18],
            "comm": ["jbd2/vda-8", "kworker/u4:1"],
            "pages": [23, 262144],
        }
    )
    out = redact.redact_frame(df)
    assert list(out.columns) == list(df.columns)
    for c in ("pfn", "first_busy_pfn", "pid", "tgid"):
        assert out[c].isna().all(), c
    assert out["comm"].tolist() == ["jbd2/vda-8", "kworker/u4:1"]
    assert out["pages"].tolist() == [23, 262144]
    assert df["pid"].tolist() == [17, 18]  # the input is not changed


def test_redact_text_and_fmt_pfn(tmp_path):
    rec_dir = tmp_path / "home" / "alice" / "runs" / "r1"
    shutil.copytree(HOST, rec_dir)
    rec = load(rec_dir)
    rec.meta["hostname"] = "build-box-17"
    pfns = {0x40000, 0x47FFF}
    text = (
        f"cmaprof recording {rec_dir}\n"
        "area reserved at pfn 0x40000, end 0x47fff; first busy pfn=262161; pfn: 12\n"
        "pages 262144 allocated on build-box-17; flags 0x400 0xfff\n"
    )
    out = redact.redact_text(text, rec, pfns)
    assert "alice" not in out and "cmaprof recording r1" in out
    assert "build-box-17" not in out
    assert "0x40000" not in out and "0x47fff" not in out
    assert "pfn=<pfn>" in out and "pfn: <pfn>" in out
    assert "pages 262144" in out  # a count equal to a pfn is a count: unchanged
    assert "0x400 0xfff" in out  # hex that is not a pfn (flags) stays
    assert redact.fmt_pfn(0x40000) == "0x40000"
    with redact.active():
        assert redact.fmt_pfn(0x40000) == "<pfn>"
        assert redact.fmt_pfn(None) == "-"
    assert redact.fmt_pfn(0x40000) == "0x40000"


def test_redacted_meta_and_view():
    rec = load(HOST)
    v = redact.view(rec)
    assert "hostname" not in v.meta and "cmdline" not in v.meta and "argv" not in v.meta
    assert v.meta["command"][0] == "python"
    assert rec.meta["command"][0].startswith("/")  # the original is untouched
    assert v.path == rec.path
    assert v.df_page_alloc()["pages"].sum() == rec.df_page_alloc()["pages"].sum()


def test_cli_redact_flag(tmp_path):
    proc = run_cli("report", str(HOST), "--redact")
    assert proc.returncode == 0, proc.stderr
    assert str(HOST) not in proc.stdout and "/work" not in proc.stdout
