"""What a ZONE_CMA kernel would refuse, computed from a stock recording.

On a stock kernel, CMA pageblocks sit inside DMA32/Normal (or Movable) and serve every
MIGRATE_MOVABLE request. ZONE_CMA (and CMA inside ZONE_MOVABLE) admits only requests whose
``gfp_zone()`` is ZONE_MOVABLE: ``__GFP_MOVABLE`` *and* ``__GFP_HIGHMEM`` (include/linux/
gfp.h, ``GFP_ZONE_TABLE``: ``__GFP_MOVABLE`` alone maps to ZONE_NORMAL, or DMA32 where
there is no Normal). So the pages of a stock recording that landed in CMA with a GFP lacking
either bit (``sb_bread()`` buffer heads: ``GFP_NOFS|__GFP_MOVABLE``, migration targets from
``alloc_migration_target()`` for DMA32/Normal pages: ``GFP_USER|__GFP_MOVABLE``) are the
ones such a kernel keeps out.

The bit values are taken from the recording's own ``mm_page_alloc`` format file (the
``__print_flags`` table, entries ``__GFP_MOVABLE`` and ``__GFP_HIGHMEM``), never from a
table here. "Utilisation" is measured in allocations: pages placed in CMA over the
recording (the cube counts allocations, not residency); the predicted loss is the refused
share of those placements.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pandas as pd

from cmaprof.analysis.loaded import Recording
from cmaprof.errors import BadInput
from cmaprof.kernel.formats import FlagTable

#: A zone of this name (the ZONE_CMA patches) holds only CMA memory.
CMA_ZONE = "CMA"

COLUMNS = ["gfp", "pages", "allocs", "cma_share", "refused"]


@dataclass(frozen=True)
class ZoneCmaRule:
    """The two GFP bits of ``gfp_zone()`` that decide admission, as the kernel defines them.

    :param movable: value of ``__GFP_MOVABLE`` on the traced kernel
    :param highmem: value of ``__GFP_HIGHMEM`` on the traced kernel
    """

    movable: int
    highmem: int

    def admits(self, gfp_flags: int) -> bool:
        """Whether ``gfp_zone(gfp_flags)`` is ZONE_MOVABLE (allowed into ZONE_CMA)."""
        both = self.movable | self.highmem
        return (int(gfp_flags) & both) == both


def rule_from_table(table: FlagTable, where: str = "the GFP table") -> ZoneCmaRule:
    """The admission rule from a decoded ``__print_flags`` GFP table.

    :raises BadInput: the table lacks ``__GFP_MOVABLE`` or ``__GFP_HIGHMEM``
    """
    # Before v4.5 the table printed single bits without the underscores ("GFP_MOVABLE").
    movable = table.mask_of("__GFP_MOVABLE") or table.mask_of("GFP_MOVABLE")
    highmem = table.mask_of("__GFP_HIGHMEM") or table.mask_of("GFP_HIGHMEM")
    # Older tables (v4.1) list no __GFP_HIGHMEM entry: take the bits from the composites
    # the kernel defines with them (GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM,
    # GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE), still from the same table.
    user, hu, hum = (table.mask_of(n) for n in ("GFP_USER", "GFP_HIGHUSER", "GFP_HIGHUSER_MOVABLE"))
    if not highmem and user and hu and (hu & ~user):
        highmem = hu & ~user
    if not movable and hu and hum and (hum & ~hu):
        movable = hum & ~hu
    if not movable or not highmem:
        missing = [n for n, v in (("__GFP_MOVABLE", movable), ("__GFP_HIGHMEM", highmem)) if not v]
        raise BadInput(
            f"{where}: no {' or '.join(missing)} entry in the GFP table; "
            f"cannot apply the ZONE_CMA rule"
        )
    return ZoneCmaRule(movable, highmem)


def rule_of(rec: Recording) -> ZoneCmaRule:
    """The admission rule with the bit values from ``rec``'s mm_page_alloc format file."""
    return rule_from_table(rec.gfp_table, str(rec.path / "formats/kmem/mm_page_alloc/format"))


def has_cma(rec: Recording) -> bool:
    """Whether the recording can say what landed in CMA (areas with ranges, or a CMA zone)."""
    return bool(rec.meta.cma_areas) or CMA_ZONE in rec.zone_names.values()


def in_logical_cma(df: pd.DataFrame) -> pd.Series:
    """Rows of a decoded page_alloc frame that landed in CMA memory: a CMA pageblock of
    any zone (``cma_area`` set from the pfn) or a zone named CMA."""
    return df["cma_area"].notna() | (df["zone"].astype(str) == CMA_ZONE)


def df_counterfactual(rec: Recording) -> pd.DataFrame:
    """Per GFP class that landed in CMA: pages, allocs, share of the CMA pages, and
    ``refused`` (True when a ZONE_CMA kernel would not let it into the zone)."""
    df = rec.df_page_alloc()
    if df.empty or not has_cma(rec):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    rule = rule_of(rec)
    cma = df[in_logical_cma(df)]
    if cma.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})
    g = cma.groupby(["gfp_flags", "gfp"], observed=True)[["pages", "allocs"]].sum().reset_index()
    g["refused"] = [not rule.admits(v) for v in g["gfp_flags"]]
    total = g["pages"].sum()
    g["cma_share"] = g["pages"] / total if total else 0.0
    g["pages"] = g["pages"].astype("int64")
    g["allocs"] = g["allocs"].astype("int64")
    return g.sort_values("pages", ascending=False, ignore_index=True)[COLUMNS]


def summary(rec: Recording) -> dict[str, float] | None:
    """``cma_pages``, ``refused_pages``, ``refused_pct`` (predicted loss of CMA placements,
    percent) and ``kept_pages``; None when the recording cannot say what landed in CMA."""
    if not has_cma(rec) or rec.table("page_alloc").num_rows == 0:
        return None
    df = df_counterfactual(rec)
    total = int(df["pages"].sum()) if not df.empty else 0
    refused = int(df.loc[df["refused"].astype(bool), "pages"].sum()) if not df.empty else 0
    return {
        "cma_pages": total,
        "refused_pages": refused,
        "kept_pages": total - refused,
        "refused_pct": refused / total * 100 if total else 0.0,
    }


def table_counterfactual(rec: Recording, top: int = 8, wide: bool = False) -> str:
    """Text: the GFP classes in CMA a ZONE_CMA kernel would refuse, and the predicted loss.

    :param wide: GFP strings unwrapped, on the line of their numbers
    """
    s = summary(rec)
    if s is None:
        return ""
    page_mib = int(rec.meta.page_size or 4096) / (1 << 20)
    out = [
        "ZONE_CMA counterfactual: pages placed in CMA whose GFP a ZONE_CMA kernel",
        "refuses (gfp_zone() not ZONE_MOVABLE: __GFP_MOVABLE without __GFP_HIGHMEM)",
        (
            f"placed in CMA {s['cma_pages']} pages ({s['cma_pages'] * page_mib:.1f} MiB); "
            f"refused {s['refused_pages']} ({s['refused_pct']:.1f}%)"
        ),
        "(the refused share is the predicted loss of CMA placements)",
    ]
    df = df_counterfactual(rec)
    refused = df[df["refused"].astype(bool)].head(top)
    if len(refused):
        out.append(f"{'pages':>10} {'share':>6}  GFP class refused (share of CMA pages)")
    for r in refused.itertuples(index=False):
        out.extend(
            textwrap.wrap(
                f"{r.pages:>10} {r.cma_share:>6.1%}  {r.gfp.replace('|', '| ')}",
                10**6 if wide else 80,
                subsequent_indent=" " * 19,
                break_on_hyphens=False,
            )
        )
    return "\n".join(line.replace("| ", "|") for line in out)
