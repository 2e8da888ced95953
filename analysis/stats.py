"""Significance tests for comparing recordings: per-iteration scalars and percentiles.

Two tests, both from scipy, both deterministic so that a table can be golden-tested:

* :func:`mwu` -- Mann-Whitney U on per-iteration values (one value per recording, e.g.
  pages in ZONE_DMA32 per run), two-sided, with the exact permutation distribution of U
  (``scipy.stats.PermutationMethod``: every split of the pooled values is enumerated, so
  ties are handled exactly and no normal approximation is made at small n). With n1 and
  n2 iterations the smallest two-sided p-value any data can give is 2 / C(n1 + n2, n1);
  when that is above ``alpha`` no test is possible (3 vs 3 iterations: 0.10) and the
  result says so instead of marking.
* :func:`bootstrap_quantile_diff` -- a percentile bootstrap confidence interval of the
  difference of a quantile (e.g. p90 of cma_alloc() latency) between two pooled samples;
  significant when the interval excludes 0. A quantile q is only tested when each side
  has at least :data:`TAIL_MIN` observations beyond it (n * min(q, 1 - q) >= 5): p50
  needs 10 calls per side, p90 50, p99 500. The maximum is never tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Default significance level (two-sided).
ALPHA = 0.05
#: Bootstrap resamples; the seed is fixed so that the same data gives the same table.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20180416
#: Observations needed on each side beyond a quantile before it is tested.
TAIL_MIN = 5


@dataclass(frozen=True)
class TestResult:
    """Outcome of one comparison of a side against the baseline.

    :param test: "mwu", "bootstrap" or "none"
    :param significant: True only when a test ran and rejected equality at ``alpha``
    :param p_value: Mann-Whitney p-value (None for the bootstrap or when no test ran)
    :param ci: bootstrap confidence interval of other - base (None otherwise)
    :param reason: why no test ran ("" when one did)
    """

    test: str
    significant: bool
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    reason: str = ""

    @property
    def tested(self) -> bool:
        return self.test != "none"


def mwu_min_p(n1: int, n2: int) -> float:
    """Smallest two-sided p-value an exact Mann-Whitney U test can reach with n1, n2."""
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def min_iterations(alpha: float = ALPHA) -> int:
    """Iterations per side (equal sizes) needed before an exact MWU can reach ``alpha``."""
    n = 1
    while mwu_min_p(n, n) > alpha:
        n += 1
    return n


def mwu(base: list[float], other: list[float], alpha: float = ALPHA) -> TestResult:
    """Two-sided Mann-Whitney U test of per-iteration values, exact permutation p-value.

    :param base: one value per baseline iteration
    :param other: one value per iteration of the side compared
    """
    a = np.asarray(base, dtype=float)
    b = np.asarray(other, dtype=float)
    if mwu_min_p(len(a), len(b)) > alpha:
        return TestResult(
            "none",
            False,
            reason=f"{len(a)} vs {len(b)} iterations: Mann-Whitney U cannot reach "
            f"p<={alpha:g} (needs {min_iterations(alpha)} per side)",
        )
    if np.array_equal(np.sort(a), np.sort(b)):
        return TestResult("mwu", False, p_value=1.0)
    from scipy import stats  # here, not at the top: `cmaprof report` never needs scipy

    res = stats.mannwhitneyu(
        a, b, alternative="two-sided", method=stats.PermutationMethod(n_resamples=np.inf)
    )
    p = float(res.pvalue)
    return TestResult("mwu", p <= alpha, p_value=p)


def quantile_testable(n: int, q: float) -> bool:
    """Whether a sample of ``n`` has enough observations beyond quantile ``q``."""
    return n * min(q, 1.0 - q) >= TAIL_MIN - 1e-9


def bootstrap_quantile_diff(
    base: np.ndarray | list[float],
    other: np.ndarray | list[float],
    q: float,
    alpha: float = ALPHA,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> TestResult:
    """Percentile bootstrap CI (level 1 - alpha) of quantile_q(other) - quantile_q(base).

    Each side is resampled with replacement independently (``scipy.stats.bootstrap``
    with ``method="percentile"``, fixed seed).
    """
    a = np.asarray(base, dtype=float)
    b = np.asarray(other, dtype=float)
    if not (quantile_testable(len(a), q) and quantile_testable(len(b), q)):
        need = math.ceil(TAIL_MIN / min(q, 1.0 - q) - 1e-9)
        return TestResult(
            "none",
            False,
            reason=f"p{q * 100:g} needs >= {need} samples per side (have {len(a)} and {len(b)})",
        )

    def diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.quantile(y, q, axis=axis) - np.quantile(x, q, axis=axis)

    from scipy import stats

    res = stats.bootstrap(
        (a, b),
        diff,
        vectorized=True,
        paired=False,
        confidence_level=1.0 - alpha,
        n_resamples=resamples,
        method="percentile",
        random_state=np.random.default_rng(BOOTSTRAP_SEED),
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return TestResult("bootstrap", lo > 0 or hi < 0, ci=(lo, hi))
