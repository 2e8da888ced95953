"""The DuckDB query of the README, run verbatim over a directory of recordings.

The directory holds the checked-in host recording and recordings imported from the
guest traces (a different kernel, zone set and metadata), so the query meets
metadata.json files with different keys and tables of different kernels. Its result
must equal what the pandas API gives for the same recordings.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cmaprof.analysis import load_many
from cmaprof.collectors import text_import as importer
from tests.conftest import DATA, ROOT

duckdb = pytest.importorskip("duckdb", reason="duckdb not installed (pip install -e .[test])")

G = DATA / "traces" / "guest-6.1"


def readme_query() -> str:
    """The first ```sql block after the README's DuckDB heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Querying many recordings") :]
    m = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    assert m, "README: no sql block in the DuckDB section"
    return m.group(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("duck")
    runs = base / "runs"
    runs.mkdir()
    shutil.copytree(DATA / "recordings" / "host-6.18-anon", runs / "host-6.18-anon")
    for name, src in (("guest-tracefs", "tracefs.trace.xz"), ("guest-perf", "perf.script.xz")):
        importer.import_text(
            [G / src],
            runs / name,
            formats_dir=G / "formats",
            zoneinfo=G / "proc" / "zoneinfo",
            cma_ranges=[str(G / "cma")],
        )
    # and one without zoneinfo: zone "unknown" (index 255)
    importer.import_text(
        [G / "trace-cmd.report.xz"], runs / "guest-nozones", formats_dir=G / "formats"
    )
    return base


def test_readme_query_equals_pandas(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(runs)  # the README's paths are relative: runs/*/...
    got = duckdb.sql(readme_query()).df()
    want = []
    for rec in load_many([runs / "runs"]):
        df = rec.df_page_alloc()
        g = df.groupby("zone", observed=True)[["pages", "allocs"]].sum().reset_index()
        g.insert(0, "run", rec.path.name)
        g.insert(1, "kernel_release", rec.meta["kernel_release"])
        want.append(g)
    want_df = pd.concat(want).sort_values(["run", "zone"]).reset_index(drop=True)
    got = got.sort_values(["run", "zone"]).reset_index(drop=True)
    assert list(got.columns) == ["run", "kernel_release", "zone", "pages", "allocs"]
    assert len(got) == len(want_df) >= 4
    assert got["run"].tolist() == want_df["run"].tolist()
    assert got["zone"].tolist() == want_df["zone"].astype(str).tolist()
    assert got["kernel_release"].tolist() == want_df["kernel_release"].tolist()
    assert got["pages"].astype("int64").tolist() == want_df["pages"].astype("int64").tolist()
    assert got["allocs"].astype("int64").tolist() == want_df["allocs"].astype("int64").tolist()


def test_every_table_and_series_reads_as_one_dataset(runs: Path) -> None:
    """Each table and each series has one schema across recordings and interval parts
    (no per-part drift, no dictionary types), so a glob over all of them reads."""
    root = runs / "runs"
    names = {p.name for p in root.glob("*/tables/*.parquet")}
    for name in sorted(names):
        rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/*/tables/{name}')").fetchall()
        total = sum(pq.read_metadata(p).num_rows for p in root.glob(f"*/tables/{name}"))
        assert rows[0][0] == total
        schemas = {
            str(
                duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{p}')")
                .df()[["column_name", "column_type"]]
                .values.tolist()
            )
            for p in root.glob(f"*/tables/{name}")
        }
        assert len(schemas) == 1, (name, schemas)
    for series in {p.name for p in root.glob("*/series/*")}:
        parts = list(root.glob(f"*/series/{series}/part-*.parquet"))
        schemas = {
            str(
                duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{p}')")
                .df()[["column_name", "column_type"]]
                .values.tolist()
            )
            for p in parts
        }
        assert len(schemas) == 1, (series, schemas)
