"""Fuzz the loader: a damaged recording either reports or fails with one clear BadInput.

Each example copies the checked-in recording, applies one random mutation (truncate,
overwrite bytes, delete a file, or put a value of the wrong type into metadata.json),
then runs what ``cmaprof report --format text|json|csv`` runs. The property: it
succeeds, or raises :class:`~cmaprof.errors.BadInput` whose one-line message names the
damaged file (or, for metadata, ``metadata.json`` and the damaged field). Anything
else is a bug.

``CMAPROF_FUZZ_EXAMPLES`` sets the number of examples (default 300; ``make fuzz``
runs 10000). The seed is random unless ``CMAPROF_FUZZ_SEED`` is set, and a failure
prints it with the mutation; ``CMAPROF_FUZZ_SEED=N`` replays the run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from cmaprof.analysis import loaded as recording
from cmaprof.analysis import tables
from cmaprof.errors import BadInput
from tests.conftest import DATA

REC = DATA / "recordings" / "host-6.18-anon"
FILES = sorted(str(p.relative_to(REC)) for p in REC.rglob("*") if p.is_file())
META = json.loads((REC / "metadata.json").read_text())
EXAMPLES = int(os.environ.get("CMAPROF_FUZZ_EXAMPLES", "300"))
#: Random unless set; printed with every failure (replay: CMAPROF_FUZZ_SEED=N).
SEED = int(os.environ.get("CMAPROF_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
REPORTS = {"text": tables.table_report, "json": tables.report_json, "csv": tables.report_csv}

#: Metadata fields the analysis reads; fuzzed more often than the others.
READ_KEYS = [
    "zone_names",
    "cma_areas",
    "page_alloc",
    "dropped",
    "lost",
    "bpf_stats",
    "probes_unavailable",
    "duration_ns",
    "page_size",
    "command",
    "kernel_release",
    "cpus",
    "complete",
    "stop_reason",
    "label",
    "headers",
    "format_version",
    "tool",
]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in ``obj`` (dict keys and list indices), the root excluded."""
    out = []
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return out
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


META_PATHS = sorted(set(_paths(META)) | {(k,) for k in READ_KEYS}, key=repr)
NESTED_EXTRA = [
    ("zone_names", "9"),
    ("cma_areas", 0),
    ("dropped", "page_alloc"),
    ("bpf_stats", "page_alloc_raw", "run_cnt"),
    ("probes_unavailable", "bulk"),
]

bad_values = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["", "x", "-1", "1e999", "Normal", "NaN"]),
    st.integers(min_value=-(2**70), max_value=-1),
    st.integers(min_value=2**63, max_value=2**80),
    st.integers(min_value=0, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=4)), max_size=3),
    st.dictionaries(
        st.text(max_size=4),
        st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers())),
        max_size=3,
    ),
)

mutations = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0, 1)),
    st.tuples(
        st.just("overwrite"),
        st.sampled_from(FILES),
        st.floats(0, 1),
        st.binary(min_size=1, max_size=16),
    ),
    st.tuples(st.just("flip"), st.sampled_from(FILES), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("delete"), st.sampled_from(FILES)),
    st.tuples(st.just("meta"), st.sampled_from(META_PATHS + NESTED_EXTRA), bad_values),
    st.tuples(st.just("meta"), st.sampled_from([(k,) for k in READ_KEYS]), bad_values),
)


def _set(meta: dict, path: tuple, value: Any) -> None:
    obj: Any = meta
    for k in path[:-1]:
        if isinstance(obj, dict):
            obj = obj.setdefault(k, {})
        elif isinstance(obj, list) and isinstance(k, int) and k < len(obj):
            obj = obj[k]
        else:
            return
    last = path[-1]
    if isinstance(obj, dict):
        obj[last] = value
    elif isinstance(obj, list):
        if isinstance(last, int) and last < len(obj):
            obj[last] = value
        else:
            obj.append(value)


def _write(f: Path, data: bytes) -> None:
    """Replace ``f`` (a symbolic link to the checked-in file) with a file of ``data``."""
    f.unlink()
    f.write_bytes(data)


def _apply(rec: Path, m: tuple) -> tuple[list[str], str]:
    """Damage ``rec``; return the names a BadInput message may use for it and a label."""
    kind = m[0]
    if kind == "meta":
        path, value = m[1], m[2]
        meta = json.loads((rec / "metadata.json").read_text())
        _set(meta, path, value)
        _write(rec / "metadata.json", json.dumps(meta).encode())
        return ["metadata.json"], f"metadata {path!r} = {value!r}"
    rel = m[1]
    f = rec / rel
    names = [rel, str(Path(rel).parent)]
    if kind == "delete":
        f.unlink()
        return names, f"delete {rel}"
    data = bytearray(f.read_bytes())
    size = len(data)
    pos = int(m[2] * size)
    if kind == "truncate":
        data = data[:pos]
    elif kind == "overwrite":
        data[pos : pos + len(m[3])] = m[3]
    elif kind == "flip" and data:
        data[min(pos, len(data) - 1)] ^= m[3]
    _write(f, bytes(data))
    return names, f"{kind} {rel} at {pos} of {size}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@seed(SEED)
@given(mutation=mutations, fmt=st.sampled_from(sorted(REPORTS)))
def test_damaged_recording_reports_or_fails_clearly(mutation, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "rec"
        # Links to the checked-in files (fast); _apply replaces the one it damages.
        shutil.copytree(REC, rec, copy_function=os.symlink)
        names, label = _apply(rec, mutation)
        note(f"CMAPROF_FUZZ_SEED={SEED}; mutation: {label}; format {fmt}")
        try:
            out = REPORTS[fmt](recording.load(rec))
        except BadInput as exc:
            msg = str(exc)
            assert "\n" not in msg, f"{label}: message is not one line: {msg!r}"
            assert any(n in msg for n in names), f"{label}: message names no file: {msg!r}"
            if mutation[0] == "meta" and mutation[1][0] not in ("tool",):
                field = str(mutation[1][0])
                assert field in msg or field.replace("_", " ") in msg, (
                    f"{label}: message does not name the field {field!r}: {msg!r}"
                )
            return
        assert isinstance(out, str)


def test_fuzz_mutations_reach_every_file():
    """The mutation space covers the tables, series, proc and format files."""
    tops = {f.split("/")[0] for f in FILES}
    assert {"metadata.json", "tables", "series", "proc", "formats"} <= tops
