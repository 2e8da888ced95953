"""Significance tests of cmaprof compare: exact Mann-Whitney U and percentile bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from cmaprof.analysis import stats


def test_min_p_is_the_exact_distributions_smallest_two_sided_p():
    # one order of the pooled ranks out of C(n1+n2, n1), doubled for two sides
    assert stats.mwu_min_p(3, 3) == pytest.approx(2 / 20)
    assert stats.mwu_min_p(4, 4) == pytest.approx(2 / 70)
    assert stats.mwu_min_p(3, 5) == pytest.approx(2 / 56)
    assert stats.min_iterations(0.05) == 4
    assert stats.min_iterations(0.10) == 3


def test_three_against_three_is_no_test_not_a_mark():
    res = stats.mwu([1, 2, 3], [100, 200, 300])
    assert not res.tested and not res.significant
    assert "3 vs 3" in res.reason and "needs 4" in res.reason


def test_complete_separation_with_four_iterations_is_significant():
    res = stats.mwu([1, 2, 3, 4], [10, 11, 12, 13])
    assert res.test == "mwu" and res.significant
    assert res.p_value == pytest.approx(2 / 70)


def test_agrees_with_scipy_exact_when_there_are_no_ties():
    a, b = [3.1, 5.2, 1.7, 4.4, 9.0], [6.3, 7.1, 8.8, 2.2, 10.5]
    want = sps.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue
    assert stats.mwu(a, b).p_value == pytest.approx(want)


def test_ties_are_exact_not_asymptotic():
    # all-equal sides: the normal approximation would say p~0.02; the permutation
    # distribution of U with these ties gives the same 2/70 as complete separation
    res = stats.mwu([0, 0, 0, 0], [5, 5, 5, 5])
    assert res.p_value == pytest.approx(2 / 70)
    assert stats.mwu([7, 7, 7, 7], [7, 7, 7, 7]).p_value == 1.0


def test_identical_sides_never_significant():
    vals = [10.0, 12.0, 9.0, 11.0, 30.0]
    assert not stats.mwu(vals, list(reversed(vals))).significant
    lat = np.random.default_rng(3).lognormal(10, 1, 200)
    for q in (0.5, 0.9):
        res = stats.bootstrap_quantile_diff(lat, lat.copy(), q)
        assert res.tested and not res.significant
        assert res.ci[0] <= 0 <= res.ci[1]


def test_bootstrap_marks_a_clear_shift_and_is_deterministic():
    rng = np.random.default_rng(7)
    a, b = rng.normal(10, 1, 100), rng.normal(14, 1, 100)
    r1 = stats.bootstrap_quantile_diff(a, b, 0.5)
    r2 = stats.bootstrap_quantile_diff(a, b, 0.5)
    assert r1.significant and r1.ci == r2.ci
    assert 3 < r1.ci[0] < r1.ci[1] < 5


def test_tail_quantiles_need_enough_samples():
    a = np.arange(80.0)
    assert stats.bootstrap_quantile_diff(a, a + 1000, 0.9).tested  # 80 * 0.1 >= 5
    res = stats.bootstrap_quantile_diff(a, a + 1000, 0.99)
    assert not res.tested and "500" in res.reason
    assert not stats.bootstrap_quantile_diff(a[:9], a[:9] + 100, 0.5).tested
    assert math.ceil(stats.TAIL_MIN / 0.5) == 10
