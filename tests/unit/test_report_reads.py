"""What ``cmaprof report`` reads of a recording's per-event table (issue 15, target 7):
the JSON and CSV reports none of it, the text report only the three columns of its
events-per-zone section, never the whole table or the decoded frame."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bench import scale
from cmaprof import cli
from cmaprof.analysis import stream

EVENTS = Path("events") / "page_alloc.parquet"


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale.generate(tmp_path_factory.mktemp("reads") / "gen", 3000, chunk_events=1000)


def _report(rec: Path, *args: str) -> str:
    res = CliRunner().invoke(cli.cli, ["report", str(rec), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


class _Reads:
    """Every ParquetFile read of the events file: the columns asked for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, events: Path) -> None:
        self.columns: list[list[str] | None] = []
        real, log = pq.ParquetFile, self.columns

        class Spy(real):  # type: ignore[misc,valid-type]
            def __init__(self, source, *a, **k):
                super().__init__(source, *a, **k)
                self.spy_events = Path(str(source)) == events

            def read(self, columns=None, *a, **k):
                if self.spy_events:
                    log.append(None if columns is None else list(columns))
                return super().read(columns, *a, **k)

        monkeypatch.setattr(pq, "ParquetFile", Spy)
        self.decoded = 0

        def counting_decode(rec, t):
            self.decoded += 1
            return real_decode(rec, t)

        real_decode = stream.decode
        monkeypatch.setattr(stream, "decode", counting_decode)


def test_text_report_reads_three_columns_of_the_events(rec_dir, monkeypatch):
    reads = _Reads(monkeypatch, rec_dir / EVENTS)
    text = _report(rec_dir)
    assert "3000 events" in text  # the events-per-zone section is there
    assert reads.columns == [["node", "zone_idx", "order"]]
    assert reads.decoded == 0


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_json_csv_report_never_open_the_events(rec_dir, tmp_path, monkeypatch, fmt):
    reads = _Reads(monkeypatch, rec_dir / EVENTS)
    want = _report(rec_dir, "--format", fmt)
    assert reads.columns == [] and reads.decoded == 0
    # and not through another reader either: the same report with the events unreadable
    broken = tmp_path / "broken"
    shutil.copytree(rec_dir, broken)
    (broken / EVENTS).write_bytes(b"not parquet")
    assert _report(broken, "--format", fmt) == want.replace(str(rec_dir), str(broken))
