"""cmaprof.kernel.formats against real tracefs format files of three kernels.

Corpus and provenance: tests/data/formats/README.md.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from cmaprof.errors import BadInput
from cmaprof.kernel.cexpr import evaluate
from cmaprof.kernel.formats import (
    EventFormat,
    Field,
    FlagTable,
    FormatError,
    SymbolicTable,
    gfp_table,
    load_format_dir,
    migratetype_names_from_pagetypeinfo,
    parse_format,
)

FORMATS = Path(__file__).resolve().parents[1] / "data" / "formats"
K41, K61, K618 = "linux-4.1-reconstructed", "linux-6.1-guest", "linux-6.18-host"
KERNELS = (K41, K61, K618)


@functools.cache
def formats(kernel):
    return load_format_dir(FORMATS / kernel)


def event(kernel, system, name):
    return formats(kernel)[(system, name)]


def gfp(kernel, system="kmem", name="mm_page_alloc"):
    return gfp_table(event(kernel, system, name))


# ----------------------------------------------------------------------------- loading


def test_load_format_dir_keys_and_names():
    host = formats(K618)
    assert ("kmem", "mm_page_alloc") in host
    assert ("page_isolation", "test_pages_isolated") in host
    assert not any(sys == "cma" for sys, _ in host)  # host has CONFIG_CMA off
    assert {sys for sys, _ in formats(K61)} == {
        "kmem",
        "cma",
        "migrate",
        "compaction",
        "page_isolation",
    }
    assert set(formats(K41)) == {
        ("kmem", "mm_page_alloc"),
        ("kmem", "mm_page_free"),
        ("kmem", "mm_page_alloc_zone_locked"),
    }
    for kernel in KERNELS:
        for (system, name), fmt in formats(kernel).items():
            assert (fmt.system, fmt.name) == (system, name)
            assert fmt.print_fmt.startswith('"')


def test_ids():
    assert event(K618, "kmem", "mm_page_alloc").id == 653
    assert event(K61, "kmem", "mm_page_alloc").id == 272
    assert event(K41, "kmem", "mm_page_alloc").id is None  # not derivable from source


@pytest.mark.parametrize("kernel", KERNELS)
def test_common_header(kernel):
    fields = event(kernel, "kmem", "mm_page_alloc").fields
    assert list(fields)[:4] == ["common_type", "common_flags", "common_preempt_count", "common_pid"]
    assert fields["common_pid"] == Field("common_pid", "int common_pid", 4, 4, True, False)
    assert fields["common_type"].size == 2 and not fields["common_type"].signed


def test_page_pointer_before_v42_pfn_after():
    old = event(K41, "kmem", "mm_page_alloc")
    assert old.has_field("page") and not old.has_field("pfn")
    assert old.fields["page"] == Field("page", "struct page * page", 8, 8, False, False)
    for name in ("mm_page_free", "mm_page_alloc_zone_locked"):
        assert event(K41, "kmem", name).has_field("page")
    for kernel in (K61, K618):
        new = event(kernel, "kmem", "mm_page_alloc")
        assert not new.has_field("page")
        assert new.fields["pfn"] == Field("pfn", "unsigned long pfn", 8, 8, False, False)


@pytest.mark.parametrize(
    "kernel, decl, offset, size",
    [
        (K41, "gfp_t gfp_flags", 20, 4),
        (K61, "unsigned long gfp_flags", 24, 8),
        (K618, "unsigned long gfp_flags", 24, 8),
    ],
)
def test_gfp_flags_field_width(kernel, decl, offset, size):
    f = event(kernel, "kmem", "mm_page_alloc").fields["gfp_flags"]
    assert (f.decl, f.offset, f.size, f.signed) == (decl, offset, size, False)


def test_percpu_refill_is_a_field_only_on_new_kernels():
    assert not event(K41, "kmem", "mm_page_alloc_zone_locked").has_field("percpu_refill")
    assert event(K618, "kmem", "mm_page_alloc_zone_locked").has_field("percpu_refill")


def test_data_loc_fields_in_61_cma_events():
    for name in ("cma_alloc_start", "cma_alloc_finish", "cma_alloc_busy_retry", "cma_release"):
        f = event(K61, "cma", name).fields["name"]
        assert f.data_loc and f.size == 4 and f.decl == "__data_loc char[] name"
    release = event(K61, "cma", "cma_release")
    assert release.fields["page"].decl == "const struct page * page"
    assert not release.fields["pfn"].data_loc
    assert not any(f.data_loc for f in event(K618, "kmem", "mm_page_alloc").fields.values())


def test_array_and_data_loc_names():
    text = (
        "name: x\nID: 1\nformat:\n"
        "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:1;\n"
        "\tfield:__data_loc char[] msg;\toffset:24;\tsize:4;\tsigned:1;\n"
        "\tfield:unsigned long stack[8];\toffset:32;\tsize:64;\tsigned:0;\n"
        '\nprint fmt: "%s", __get_str(msg)\n'
    )
    fmt = parse_format(text, "sys")
    assert list(fmt.fields) == ["comm", "msg", "stack"]
    assert fmt.fields["comm"].decl == "char comm[16]" and not fmt.fields["comm"].data_loc
    assert fmt.fields["msg"].data_loc
    assert (fmt.system, fmt.name, fmt.id) == ("sys", "x", 1)


def test_name_line_overrides_argument():
    text = (FORMATS / K618 / "kmem" / "mm_page_free" / "format").read_text()
    fmt = parse_format(text, system="kmem", name="something_else")
    assert fmt.name == "mm_page_free"
    assert fmt.flag_table("gfp_flags") is None


# ----------------------------------------------------------------------------- GFP decoding

SB_BREAD = 0x148C48  # __GFP_MOVABLE|__GFP_NOFAIL|GFP_NOFS|__GFP_HARDWALL|__GFP_COMP (5.1+ bits)


@pytest.mark.parametrize(
    "kernel, value, text",
    [
        # 6.1 (5.1+ bit layout, __GFP_ATOMIC still exists)
        (K61, 0x100CCA, "GFP_HIGHUSER_MOVABLE"),
        (K61, SB_BREAD, "GFP_NOFS|__GFP_NOFAIL|__GFP_COMP|__GFP_HARDWALL|__GFP_MOVABLE"),
        (K61, 0xCC0, "GFP_KERNEL"),
        (K61, 0x400CC0, "GFP_KERNEL_ACCOUNT"),
        (K61, 0xA20, "GFP_ATOMIC"),
        (K61, 0x800, "GFP_NOWAIT"),
        (K61, 0x2800, "GFP_NOWAIT|__GFP_NOWARN"),
        (K61, 0x1000000, "0x1000000"),  # bit 24: KASAN_HW_TAGS off, not in the table
        (K61, 0xCC0 | 1 << 40, "GFP_KERNEL|0x10000000000"),
        (K61, 0, "none"),
        # 6.18 (enum bits; __GFP_ATOMIC gone, GFP_NOWAIT includes __GFP_NOWARN)
        (K618, 0x100CCA, "GFP_HIGHUSER_MOVABLE"),
        (K618, SB_BREAD, "GFP_NOFS|__GFP_MOVABLE|__GFP_NOFAIL|__GFP_COMP|__GFP_HARDWALL"),
        (K618, 0x820, "GFP_ATOMIC"),
        (K618, 0xA20, "GFP_ATOMIC|0x200"),  # 6.1's GFP_ATOMIC: bit 9 is unused now
        (K618, 0x2800, "GFP_NOWAIT"),
        (K618, 0x800, "__GFP_KSWAPD_RECLAIM"),
        (K618, 0x1000000, "__GFP_NO_OBJ_EXT"),
        (K618, 0x2000000, "0x2000000"),
        (K618, 0, "none"),
        (
            K618,
            2**64 - 1,
            (
                "GFP_TRANSHUGE|GFP_ATOMIC|GFP_DMA|GFP_DMA32|__GFP_RECLAIMABLE|__GFP_ZERO"
                "|__GFP_WRITE|__GFP_RETRY_MAYFAIL|__GFP_NOFAIL|__GFP_NORETRY|__GFP_MEMALLOC"
                "|__GFP_THISNODE|__GFP_ACCOUNT|__GFP_ZEROTAGS|__GFP_NO_OBJ_EXT"
                "|0xfffffffffe000200"
            ),  # bit 9 (old __GFP_ATOMIC) and bits 25..63 are not in the table
        ),
        # 4.1 (pre-4.4 names without "__", 0 prints GFP_NOWAIT)
        (K41, 0xD0, "GFP_KERNEL"),
        (K41, 0x200DA, "GFP_HIGHUSER_MOVABLE"),
        (K41, 0x2084D0, "GFP_KERNEL|GFP_REPEAT|GFP_ZERO|GFP_NOTRACK"),
        (K41, 0x100050, "GFP_NOFS|0x100000"),  # __GFP_NOACCOUNT has no table entry
        (K41, 0x20, "GFP_ATOMIC"),
        (K41, 0, "GFP_NOWAIT"),
    ],
)
def test_decode_known_values(kernel, value, text):
    assert gfp(kernel).decode(value) == text


def test_names_mask_of_remainder():
    t = gfp(K618)
    assert t.names(SB_BREAD) == [
        "GFP_NOFS",
        "__GFP_MOVABLE",
        "__GFP_NOFAIL",
        "__GFP_COMP",
        "__GFP_HARDWALL",
    ]
    assert t.names(0x2000000 | 0xCC0) == ["GFP_KERNEL"]
    assert t.remainder(0x2000000 | 0xCC0) == 0x2000000
    assert t.mask_of("GFP_KERNEL") == 0xCC0
    assert t.mask_of("__GFP_NO_OBJ_EXT") == 1 << 24
    assert t.mask_of("GFP_TEMPORARY") is None
    assert gfp(K41).mask_of("GFP_TEMPORARY") == 0x800D0
    assert gfp(K61).mask_of("__GFP_ATOMIC") == 0x200


def test_tables_of_other_events_match_mm_page_alloc():
    for kernel in (K61, K618):
        ref = gfp(kernel)
        for system, name, fieldname in (
            ("kmem", "kmalloc", "gfp_flags"),
            ("kmem", "kmem_cache_alloc", "gfp_flags"),
            ("compaction", "mm_compaction_try_to_compact_pages", "gfp_mask"),
        ):
            table = event(kernel, system, name).flag_table(fieldname)
            assert table is not None and table.entries == ref.entries


def test_table_terminator_and_counts():
    assert len(gfp(K618).entries) == 38 and gfp(K618).unresolved == ()
    assert "{ 0, ((void *)0) }" in event(K618, "kmem", "mm_page_alloc").print_fmt
    assert len(gfp(K61).entries) == 36 and gfp(K61).unresolved == ()
    assert len(gfp(K41).entries) == 28 and gfp(K41).unresolved == ()


def _live_pairs():
    path = FORMATS / K618 / "live" / "mm_page_alloc_gfp_flags.tsv"
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            raw, text, _events = line.split("\t")
            rows.append((int(raw, 16), text))
    return rows


def test_live_capture_file_is_not_empty():
    assert len(_live_pairs()) >= 10


@pytest.mark.parametrize(
    "raw, text", _live_pairs(), ids=lambda v: hex(v) if isinstance(v, int) else ""
)
def test_live_host_trace_pipe_text(raw, text):
    """Raw gfp_flags from bpftrace vs the kernel's own trace_pipe text (6.18.44 host)."""
    assert gfp(K618).decode(raw) == text


# The 4.1-era kernel behind `perf kmem stat --page` in Namhyung Kim's 2015-03 patch thread
# (libtraceevent of the time printed the names but not the leftover hex).
PERF_KMEM_2015 = {
    0x00000010: "GFP_NOIO",
    0x000000D0: "GFP_KERNEL",
    0x00000200: "GFP_NOWARN",
    0x000084D0: "GFP_KERNEL|GFP_REPEAT|GFP_ZERO",
    0x000200D2: "GFP_HIGHUSER",
    0x000200DA: "GFP_HIGHUSER_MOVABLE",
    0x000280DA: "GFP_HIGHUSER_MOVABLE|GFP_ZERO",
    0x002084D0: "GFP_KERNEL|GFP_REPEAT|GFP_ZERO|GFP_NOTRACK",
    0x0102005A: "GFP_NOFS|GFP_HARDWALL|GFP_MOVABLE",
}


@pytest.mark.parametrize("raw, text", sorted(PERF_KMEM_2015.items()))
def test_reconstructed_41_table_matches_perf_kmem_2015(raw, text):
    assert "|".join(gfp(K41).names(raw)) == text


def test_41_leftover_bits_are_printed():
    assert gfp(K41).decode(0x0102005A) == "GFP_NOFS|GFP_HARDWALL|GFP_MOVABLE|0x1000002"


def test_decode_algorithm_order_and_mask_zero():
    t = FlagTable(((0x3, "AB"), (0x0, "ZERO"), (0x1, "A"), (0x4, "C")), ())
    assert t.decode(0x3) == "AB"  # first match wins, bits are cleared
    assert t.decode(0x1) == "A"
    assert t.decode(0x9) == "A|0x8"
    assert t.decode(0) == "none"  # default zero string (show_gfp_flags)
    assert FlagTable(((1, "A"),), (), zero="").decode(0) == ""
    assert t.decode(-1) == "AB|C|0xfffffffffffffff8"


def test_zero_string_comes_from_the_print_fmt():
    fmt = _fake_event('__print_flags(REC->flags, "|", {1, "ONE"}, {2, "TWO"})')
    assert fmt.flag_table("flags").zero == ""  # what trace_print_flags_seq prints for 0
    fmt = _fake_event('(REC->flags) ? __print_flags(REC->flags, "|", {1, "ONE"}) : "nothing"')
    assert fmt.flag_table("flags").decode(0) == "nothing"


# ----------------------------------------------------------------------------- unresolved


def _fake_event(print_args, fields=("flags",)):
    lines = "".join(
        f"\tfield:unsigned long {f};\toffset:{8 + 8 * i};\tsize:8;\tsigned:0;\n"
        for i, f in enumerate(fields)
    )
    text = f'name: fake\nID: 7\nformat:\n{lines}\nprint fmt: "x=%s", {print_args}\n'
    return parse_format(text, "test", source="fake/format")


def _bits_to_enum_names(print_fmt):
    """6.18 table as 6.10-6.13 printed it: enum identifiers instead of bit numbers."""
    return re.sub(r"<< \((\d+)\)", r"<< (___GFP_BIT\1_BIT)", print_fmt)


def test_610_style_unresolved_identifiers_are_not_guessed():
    fmt = event(K618, "kmem", "mm_page_alloc")
    broken = EventFormat(
        fmt.system, fmt.name, fmt.id, fmt.fields, _bits_to_enum_names(fmt.print_fmt)
    )
    t = gfp_table(broken)
    assert t.entries == ()  # every mask used a bit number
    assert len(t.unresolved) == 38
    assert "___GFP_BIT10_BIT" in t.unresolved[0]
    assert t.decode(0x100CCA) == "0x100cca"  # never a wrong name
    assert t.mask_of("GFP_KERNEL") is None


def test_partially_unresolved_table():
    fmt = _fake_event(
        '(REC->flags) ? __print_flags(REC->flags, "|", '
        "{( unsigned long)(( gfp_t)((((1UL))) << (___GFP_DIRECT_RECLAIM_BIT))), "
        '"__GFP_DIRECT_RECLAIM"}, '
        '{( unsigned long)(( gfp_t)((((1UL))) << (6))), "__GFP_IO"}, '
        '{( unsigned long)(( gfp_t)0x80u), "__GFP_FS"}, { 0, NULL } ) : "none"'
    )
    t = fmt.flag_table("flags")
    assert t.entries == ((0x40, "__GFP_IO"), (0x80, "__GFP_FS"))
    assert t.unresolved == ("( unsigned long)(( gfp_t)((((1UL))) << (___GFP_DIRECT_RECLAIM_BIT)))",)
    assert t.decode(0x4C0) == "__GFP_IO|__GFP_FS|0x400"
    assert t.mask_of("__GFP_DIRECT_RECLAIM") is None


@pytest.mark.parametrize("end", ["{ 0, NULL }", "{ 0, ((void *)0) }", "{ }"])
def test_table_terminators(end):
    fmt = _fake_event(f'__print_symbolic(REC->flags, {{1, "one"}}, {end}, {{2, "after"}})')
    assert fmt.symbolic_table("flags").entries == {1: "one"}
    assert _fake_event("__print_symbolic(REC->flags, { })").symbolic_table("flags").entries == {}


def test_unresolved_enum_in_symbolic_table():
    fmt = _fake_event('__print_symbolic(REC->flags, {0, "zero"}, {MR_DAMON, "damon"}, {2, "two"})')
    t = fmt.symbolic_table("flags")
    assert t.entries == {0: "zero", 2: "two"}
    assert t.unresolved == ("MR_DAMON",)


def test_argument_splitting_respects_strings_and_nesting():
    fmt = _fake_event(
        '__print_symbolic(REC->flags, {((1) << (2)), "a, (b"}, {(3), "c}\\"d"}), '
        '__print_flags(REC->other, ",", {1, "x"})',
        fields=("flags", "other"),
    )
    assert fmt.symbolic_table("flags").entries == {4: "a, (b", 3: 'c}"d'}
    assert fmt.flag_table("other").decode(1) == "x"
    assert fmt.flag_table("flags") is None and fmt.symbolic_table("other") is None


# ----------------------------------------------------------------------------- symbolic


@pytest.mark.parametrize("kernel, last", [(K61, (8, "demotion")), (K618, (9, "damon"))])
def test_migrate_reason_table(kernel, last):
    fmt = event(kernel, "migrate", "mm_migrate_pages")
    reason = fmt.symbolic_table("reason")
    assert reason.decode(0) == "compaction"
    assert reason.decode(6) == "contig_range"  # alloc_contig_range(), i.e. CMA
    assert reason.decode(last[0]) == last[1]
    assert reason.decode(last[0] + 1) == "0x%x" % (last[0] + 1)  # trace_print_symbols_seq
    assert fmt.symbolic_table("mode").decode(2) == "MIGRATE_SYNC"


@pytest.mark.parametrize("kernel", [K61, K618])
def test_compaction_zone_idx_table(kernel):
    fmt = event(kernel, "compaction", "mm_compaction_suitable")
    zones = fmt.symbolic_table("idx")
    assert zones.entries == {0: "DMA", 1: "DMA32", 2: "Normal", 3: "Movable"}
    assert fmt.symbolic_table("ret").decode(8) == "success"
    assert SymbolicTable({1: "x"}).decode(-1) == "0xffffffffffffffff"


# ----------------------------------------------------------------------------- pagetypeinfo


def test_migratetypes_61_guest_with_cma():
    text = (FORMATS / K61 / "proc" / "pagetypeinfo").read_text()
    names = migratetype_names_from_pagetypeinfo(text)
    assert names == ["Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate"]


def test_migratetypes_618_host_without_cma():
    text = (FORMATS / K618 / "proc" / "pagetypeinfo").read_text()
    names = migratetype_names_from_pagetypeinfo(text)
    assert names == ["Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate"]
    assert names.index("Isolate") == 4  # MIGRATE_ISOLATE is 4 without CONFIG_CMA


def test_pagetypeinfo_garbage():
    with pytest.raises(FormatError, match="pagetypeinfo"):
        migratetype_names_from_pagetypeinfo("Page block order: 9\n")


# ----------------------------------------------------------------------------- evaluator


@pytest.mark.parametrize(
    "expr, value",
    [
        ("0x10u", 0x10),
        ("010", 8),
        ("42UL", 42),
        ("(( gfp_t)((((1UL))) << (24)))", 1 << 24),
        ("( unsigned long)((( gfp_t)(0x400u|0x800u)) | (( gfp_t)0x40u))", 0xC40),
        ("(unsigned long)(( gfp_t)0)", 0),
        ("((0xcc0u) & ~(( gfp_t)(0x400u|0x800u))) | (( gfp_t)0x400u)", 0x4C0),
        ("~0u", 0xFFFFFFFF),  # unsigned int
        ("~0", 2**64 - 1),  # int -1, converted to unsigned long
        ("-1", 2**64 - 1),
        ("(int)0xffffffff", 2**64 - 1),
        ("(unsigned int)-1", 0xFFFFFFFF),
        ("(gfp_t)0x100000000UL", 0),  # gfp_t is 32 bits
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("1 << 2 + 1", 8),  # + binds tighter than <<
        ("6 & 3 | 8 ^ 1", 11),  # & before ^ before |
        ("7 / 2", 3),
        ("-7 / 2", 2**64 - 3),
        ("-7 % 2", 2**64 - 1),
        ("!0", 1),
        ("!5", 0),
        ("0x8000000000000000UL >> 63", 1),
    ],
)
def test_evaluate(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize(
    "expr",
    ["___GFP_MOVABLE_BIT", "(1UL << (___GFP_X_BIT))", "1 <", "(1", "1 / 0", "1 << 64", "08", ""],
)
def test_evaluate_rejects(expr):
    with pytest.raises(ValueError, match="cannot evaluate"):
        evaluate(expr)


# ----------------------------------------------------------------------------- errors


def test_format_error_is_bad_input():
    assert issubclass(FormatError, BadInput)
    assert FormatError.exit_code == 2


@pytest.mark.parametrize(
    "text, problem",
    [
        ("this is not a format file\n", "unexpected line"),
        ('name: x\nID: 1\nformat:\n\nprint fmt: ""\n', "no 'format:' section with fields"),
        ("name: x\nID: one\nformat:\n", "ID is not an integer"),
        (
            "name: x\nID: 1\nformat:\n\tfield:int a;\toffset:eight;\tsize:4;\tsigned:1;\n",
            "malformed field line",
        ),
        (
            "name: x\nID: 1\nformat:\n\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;\n",
            "no 'print fmt:'",
        ),
        (
            (
                "name: x\nformat:\n\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;\n"
                '\tfield:int a;\toffset:12;\tsize:4;\tsigned:1;\nprint fmt: ""\n'
            ),
            "duplicate field 'a'",
        ),
    ],
)
def test_malformed_format_names_source(text, problem):
    with pytest.raises(FormatError) as exc:
        parse_format(text, "sys", source="some/dir/format")
    assert "some/dir/format" in str(exc.value)
    assert problem in str(exc.value)


def test_malformed_table_names_source_and_event():
    fmt = _fake_event('__print_flags(REC->flags, "|", {1, "ONE"}')
    with pytest.raises(FormatError, match=r"fake/format \(event test:fake\).*unbalanced"):
        fmt.flag_table("flags")
    fmt = _fake_event('__print_flags(REC->flags, "|", 1, "ONE")')
    with pytest.raises(FormatError, match="not {value"):
        fmt.flag_table("flags")


def test_gfp_table_missing():
    with pytest.raises(FormatError, match=r"kmem:mm_page_free\).*no gfp_flags field"):
        gfp_table(event(K618, "kmem", "mm_page_free"))
    fmt = _fake_event("REC->gfp_flags", fields=("gfp_flags",))
    with pytest.raises(FormatError, match="no gfp_flags __print_flags table"):
        gfp_table(fmt)


def test_load_format_dir_errors(tmp_path):
    with pytest.raises(FormatError, match="not a directory"):
        load_format_dir(tmp_path / "missing")
    bad = tmp_path / "kmem" / "broken"
    bad.mkdir(parents=True)
    (bad / "format").write_text("garbage\n")
    with pytest.raises(FormatError, match=re.escape(str(bad / "format"))):
        load_format_dir(tmp_path)
