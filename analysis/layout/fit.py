"""Where ``cma_alloc(count, align)`` can place a request: alignment arithmetic on pfns
(positions aligned to ``2**align`` pages relative to pfn 0, as mm/cma.c tries them)."""

from __future__ import annotations

#: Largest alignment order considered (2**30 pages = 4 TiB of 4 KiB pages).
MAX_ORDER_CONSIDERED = 30


def align_up(pfn: int, order: int) -> int:
    """``ALIGN(pfn, 1 << order)``: the first pfn >= ``pfn`` aligned to ``2**order``."""
    mask = (1 << order) - 1
    return (pfn + mask) & ~mask


def base_align_order(base_pfn: int) -> int:
    """The largest order ``k`` with ``base_pfn`` a multiple of ``2**k`` (capped at
    :data:`MAX_ORDER_CONSIDERED`; pfn 0 is aligned to every order)."""
    if base_pfn == 0:
        return MAX_ORDER_CONSIDERED
    return min((base_pfn & -base_pfn).bit_length() - 1, MAX_ORDER_CONSIDERED)


def max_fit_pages(base_pfn: int, count: int, align_order: int) -> int:
    """The largest request (pages) a CMA area ``[base_pfn, base_pfn + count)`` can ever
    serve with alignment order ``align_order``, all of it free: 0 when no aligned
    position lies inside the area."""
    return max(0, base_pfn + count - align_up(base_pfn, align_order))


def can_ever_fit(base_pfn: int, count: int, pages: int, align_order: int) -> bool:
    """Whether a ``cma_alloc(pages, align_order)`` can succeed in this area at all."""
    return 0 < pages <= max_fit_pages(base_pfn, count, align_order)


def fit_table(base_pfn: int, count: int) -> list[tuple[int, int]]:
    """``(align_order, largest request in pages)`` from order 0 up to the first order at
    which nothing fits (that order included, with 0)."""
    out = []
    for order in range(MAX_ORDER_CONSIDERED + 1):
        pages = max_fit_pages(base_pfn, count, order)
        out.append((order, pages))
        if pages == 0:
            break
    return out
