"""solve_memmap: the memory map's base and sizeof(struct page) from exact pairs."""

import pytest

from cmaprof.collectors.page_alloc import CalibrationMismatch, solve_memmap

BASE = 0xFFFFEA0000000000


def _pairs(pfns, size=64, base=BASE):
    return [(pfn, base + pfn * size) for pfn in pfns]


def test_exact_pairs_give_base_and_size():
    assert solve_memmap(_pairs([0x12345, 0x1, 0x9FFFF, 0x12346])) == (BASE, 64)
    assert solve_memmap(_pairs([10, 3, 7], size=56)) == (BASE, 56)


def test_repeated_pfn_at_same_address_is_fine():
    assert solve_memmap(_pairs([5, 5, 9])) == (BASE, 64)


@pytest.mark.parametrize(
    ("pairs", "words"),
    [
        (_pairs([5]), "only 1 usable"),
        ([], "only 0 usable"),
        (_pairs([5, 5, 5]), "same pfn"),
        (_pairs([5, 9]) + [(13, BASE + 5 * 64 + 8 * 128)], "different sizeof"),
        (_pairs([5]) + [(7, BASE + 5 * 64 + 65)], "whole number"),
        ([(5, BASE), (5, BASE + 64)], "two struct page addresses"),
        (_pairs([5, 6], size=4)[:1] + [(6, BASE + 5 * 4 + 8000)], "implausible"),
    ],
)
def test_inconsistent_pairs_are_refused(pairs, words):
    with pytest.raises(CalibrationMismatch, match=words):
        solve_memmap(pairs)
