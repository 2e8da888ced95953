"""probes/events.h is the one definition of the probe ABI (cmaprof.probes.abi).

Two checks: every struct layout that abi.dtype() computes is what the C compiler lays
out (offsetof/sizeof of every member, compiled from events.h itself), and no Python
source restates a constant of events.h (by name or, for the vocabularies, by value).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cmaprof.collectors import bpfmodule, bulk, stream
from cmaprof.probes import abi
from cmaprof.recording import schema

ROOT = Path(__file__).resolve().parents[2]
SOURCE_TREES = ("cmaprof", "probes", "collectors", "analysis")
TYPEDEFS = """
#include <stddef.h>
#include <stdio.h>
typedef unsigned long long __u64, u64;
typedef long long __s64, s64;
typedef unsigned int __u32, u32;
typedef int __s32, s32;
typedef unsigned short __u16, u16;
typedef unsigned char __u8, u8;
#include "events.h"
"""


def _python_sources() -> list[Path]:
    out = []
    for tree in SOURCE_TREES:
        out += [p for p in (ROOT / tree).rglob("*.py") if p.name != "abi.py"]
    return sorted(out)


def _compiler() -> str:
    for cc in ("clang", "cc", "gcc"):
        if shutil.which(cc):
            return cc
    pytest.skip("needs a C compiler (clang, cc or gcc) to check events.h layouts")


def _c_layouts(tmp_path: Path, defines: dict[str, int]) -> dict[str, tuple[int, dict]]:
    """struct -> (sizeof, {member: (offsetof, sizeof)}), as the compiler sees events.h."""
    lines = [TYPEDEFS, "int main(void) {"]
    for name, fields in abi.STRUCTS.items():
        lines.append(f'printf("S {name} %zu\\n", sizeof(struct {name}));')
        for f in fields:
            lines.append(
                f'printf("F {name} {f.name} %zu %zu\\n", offsetof(struct {name}, {f.name}),'
                f" sizeof(((struct {name} *)0)->{f.name}));"
            )
    lines += ["return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    flags = [f"-D{k}={v}" for k, v in defines.items()]
    subprocess.run(
        [_compiler(), "-I", str(ROOT / "probes"), *flags, "-o", str(exe), str(src)], check=True
    )
    out: dict[str, tuple[int, dict]] = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    ):
        parts = line.split()
        if parts and parts[0] == "S":
            out[parts[1]] = (int(parts[2]), {})
        elif parts and parts[0] == "F":
            out[parts[1]][1][parts[2]] = (int(parts[3]), int(parts[4]))
    return out


@pytest.mark.parametrize("defines", [{}, {"STREAM_BATCH": 7}], ids=["defaults", "batch7"])
def test_every_struct_dtype_matches_the_c_layout(tmp_path, defines):
    c = _c_layouts(tmp_path, defines)
    assert set(c) == set(abi.STRUCTS)
    for name, (size, members) in c.items():
        dt = abi.dtype(name, **defines)
        assert dt.itemsize == size, name
        assert list(dt.names) == list(members), name
        for member, (offset, msize) in members.items():
            fdt, foffset = dt.fields[member][:2]
            assert (foffset, fdt.itemsize) == (offset, msize), f"{name}.{member}"


def _widths(dt: np.dtype) -> list[tuple[str, int]]:
    return [(n, dt.fields[n][0].itemsize) for n in dt.names if not n.startswith("pad")]


def _cols(fields) -> list[tuple[str, int]]:
    return [(f[0], f[1].bit_width // 8) for f in fields]


def test_record_fields_are_the_recording_columns():
    """events.h's field names are the column names: no positional zip, no rename."""
    assert _widths(abi.dtype("page_alloc_key")) == _cols(schema.PAGE_ALLOC_KEYS)
    assert _widths(abi.dtype("page_alloc_val")) == _cols(schema.COUNTS)
    fail = [(f.name, f.type) for f in schema.SCHEMAS["page_alloc_fail"]]
    assert _widths(abi.dtype("page_alloc_fail_key")) == _cols(fail[:3])
    bulk_cols = [(f.name, f.type) for f in schema.SCHEMAS["page_alloc_bulk"]]
    assert _widths(abi.dtype("bulk_key")) == _cols(bulk_cols[:2])
    ev = _widths(abi.dtype("stream_event"))
    keys = {n for n, _ in schema.PAGE_ALLOC_KEYS}
    assert [n for n, _ in ev if n in keys] == [n for n, _ in schema.PAGE_ALLOC_KEYS]
    assert stream.EVENT_DTYPE == abi.dtype("stream_event")
    assert stream.batch_dtype(5).itemsize == abi.sizeof("stream_batch", STREAM_BATCH=5)


def test_vocabularies_come_from_events_h():
    assert bpfmodule.DROP_NAMES == abi.enum("DROP_")
    assert len(bpfmodule.DROP_NAMES) <= abi.NR_DROPS
    assert stream.STAT_NAMES == abi.enum("STREAM_STAT_")
    assert len(stream.STAT_NAMES) <= abi.STREAM_NR_STATS
    assert bulk.STAT_NAMES == abi.enum("BULK_STAT_")
    assert len(bulk.STAT_NAMES) <= abi.BULK_NR_STATS
    assert schema.BLOCKER_STAGES == abi.enum("BLK_STAGE_")
    assert len(schema.BLOCKER_CAUSES) == abi.BLK_NR_CAUSES
    assert schema.CMA_AREA_NONE == abi.CMA_AREA_NONE


#: Families whose names Python uses as a vocabulary (array indexes, codes, bits).
FAMILIES = (
    "DROP_",
    "STREAM_STAT_",
    "BULK_STAT_",
    "BLK_STAT_",
    "BLK_STAGE_",
    "BLK_CAUSE_",
    "BLK_STATE_",
    "BLK_MAPPING_",
    "CMA_OUTCOME_",
    "STREAM_CMA_",
    "ZONE_SOURCE_",
)


def _vocabulary_literal(prefix: str) -> re.Pattern:
    """The family's names, all of them in header order, as a tuple, list or dict literal
    (``("a", "b", "c")``, ``{"a": 0, "b": 1, "c": 2}``)."""
    assert len(abi.bits(prefix)) > 1, f"events.h has no {prefix}* family"
    sep = r"\s*(?::\s*[\w.]+\s*)?,\s*"
    return re.compile(sep.join(f'"{n}"' for n in abi.bits(prefix)))


def test_no_python_source_restates_a_constant():
    names = "|".join(sorted(abi.CONSTANTS, key=len, reverse=True))
    assign = re.compile(rf"^\s*(?:{names})\s*(?::[^=]*)?=(?!=)\s*(?P<rhs>.*)$", re.MULTILINE)
    keyed = re.compile(rf"[\"'](?:{names})[\"']\s*:\s*\d")
    bare_outcome = re.compile(
        r"outcome_source\W{0,4}\s*(?:==|=)\s*\d|\"outcome_source\":\s*\d|OUTCOME_SOURCES\[\d"
    )
    used = set()
    bad = []
    for path in _python_sources():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        for m in assign.finditer(text):
            if not re.fullmatch(r"abi\.\w+", m["rhs"].strip()):
                bad.append(f"{rel}: {m[0].strip()}")
        for line in text.splitlines():
            if keyed.search(line):
                bad.append(f"{rel}: a constant's value restated: {line.strip()}")
            if bare_outcome.search(line):
                bad.append(f"{rel}: bare CMA_OUTCOME_* code: {line.strip()}")
        for prefix in FAMILIES:
            if _vocabulary_literal(prefix).search(text):
                bad.append(f"{rel}: a literal of the names of events.h {prefix}*")
        used |= set(re.findall(r"\babi\.([A-Z][A-Z0-9_]+)\b", text))
    assert not bad, "\n".join(bad)
    assert used <= set(abi.CONSTANTS), used - set(abi.CONSTANTS)


def test_parse_header_reads_macros_arrays_and_defaults():
    consts, macros, structs = abi.parse_header(
        "#ifndef N\n#define N 4 /* default */\n#endif\n#define F \\\n\tu32 a; \\\n\tu8 b[N];\n"
        "struct s { F u64 c, d; char e[2]; };\n"
    )
    assert consts == {"N": 4} and set(macros) == {"F"}
    assert [(f.name, f.ctype, f.count) for f in structs["s"]] == [
        ("a", "u32", None),
        ("b", "u8", 4),
        ("c", "u64", None),
        ("d", "u64", None),
        ("e", "char", 2),
    ]
    with pytest.raises(ValueError, match="not 0"):
        abi.enum("BLK_STATE_")
