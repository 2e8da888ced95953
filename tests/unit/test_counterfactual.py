"""The ZONE_CMA counterfactual: admission by gfp_zone(), bits from the kernel's format file."""

from __future__ import annotations

import pytest

from cmaprof.analysis import counterfactual
from cmaprof.errors import BadInput
from cmaprof.kernel import formats
from tests.conftest import DATA

KERNELS = ["linux-6.1-guest", "linux-6.18-host", "linux-4.1-reconstructed"]


def _table(kernel: str) -> formats.FlagTable:
    fmts = formats.load_format_dir(DATA / "formats" / kernel)
    return formats.gfp_table(fmts[("kmem", "mm_page_alloc")])


def _value(table: formats.FlagTable, *names: str) -> int:
    rule = counterfactual.rule_from_table(table)
    bits = {"__GFP_MOVABLE": rule.movable, "__GFP_HIGHMEM": rule.highmem}
    v = 0
    for n in names:
        mask = table.mask_of(n) or table.mask_of(n.lstrip("_")) or bits.get(n)
        assert mask, n
        v |= mask
    return v


@pytest.mark.parametrize("kernel", KERNELS)
def test_highuser_movable_admitted_buffer_heads_refused(kernel):
    table = _table(kernel)
    rule = counterfactual.rule_from_table(table)
    # anonymous and page-cache pages: gfp_zone() is ZONE_MOVABLE
    assert rule.admits(_value(table, "GFP_HIGHUSER_MOVABLE"))
    assert rule.admits(_value(table, "GFP_HIGHUSER_MOVABLE", "__GFP_ZERO"))
    # sb_bread()/__getblk() metadata: GFP_NOFS|__GFP_MOVABLE (no __GFP_HIGHMEM)
    assert not rule.admits(_value(table, "GFP_NOFS", "__GFP_MOVABLE"))
    # alloc_migration_target() for a DMA32/Normal page: GFP_USER|__GFP_MOVABLE
    assert not rule.admits(_value(table, "GFP_USER", "__GFP_MOVABLE"))
    assert not rule.admits(_value(table, "GFP_KERNEL"))
    assert not rule.admits(_value(table, "__GFP_HIGHMEM"))


@pytest.mark.parametrize("kernel", ["linux-6.1-guest", "linux-6.18-host"])
def test_bit_values_come_from_the_format_file(kernel):
    table = _table(kernel)
    rule = counterfactual.rule_from_table(table)
    assert (rule.movable, rule.highmem) == (
        table.mask_of("__GFP_MOVABLE"),
        table.mask_of("__GFP_HIGHMEM"),
    )


def test_old_table_without_highmem_entry_uses_the_composites():
    # v4.1's show_gfp_flags() has no __GFP_HIGHMEM line: GFP_HIGHUSER minus GFP_USER
    table = _table("linux-4.1-reconstructed")
    assert table.mask_of("__GFP_HIGHMEM") is None
    rule = counterfactual.rule_from_table(table)
    assert rule.highmem == table.mask_of("GFP_HIGHUSER") & ~table.mask_of("GFP_USER")
    assert rule.movable == table.mask_of("GFP_MOVABLE")  # no "__" before v4.5


def test_table_without_the_bits_is_an_error():
    drop = {"__GFP_HIGHMEM", "GFP_HIGHUSER", "GFP_HIGHUSER_MOVABLE"}
    stripped = formats.FlagTable(
        tuple(e for e in _table("linux-6.1-guest").entries if e[1] not in drop)
    )
    with pytest.raises(BadInput, match="__GFP_HIGHMEM"):
        counterfactual.rule_from_table(stripped)
