"""s2l.comparison: paired bootstrap differences, verdicts and the random-equivalent fraction, on cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from s2l.comparison import (Resampler, crossing, format_fraction, paired_difference, random_equivalent, verdict)


def test_a_constant_shift_is_exact_whatever_the_items_spread():
    # Items spread widely, but the method is 0.1 lower on every one: pairing leaves no uncertainty.
    base = np.random.default_rng(0).normal(2.0, 1.0, size=(1, 300))
    d = paired_difference(base - 0.1, base, lower_is_better=True, n_bootstrap=500)
    assert d.estimate == pytest.approx(-0.1)
    assert d.low == pytest.approx(-0.1) and d.high == pytest.approx(-0.1)
    assert d.verdict == "win" and d.n_items == 300
    same = paired_difference(base, base, lower_is_better=True, n_bootstrap=200)
    assert (same.estimate, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "no difference")


def test_two_items_resample_to_the_binomial_by_hand():
    # Per-item differences 1 and 0: a bootstrap mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4.
    r = Resampler(2, n_bootstrap=20000, seed=1)
    means = r.arm(np.array([[1.0, 0.0]]))
    shares = [np.mean(means == v) for v in (0.0, 0.5, 1.0)]
    assert shares == pytest.approx([0.25, 0.5, 0.25], abs=0.015)
    d = paired_difference(np.array([[1.0, 0.0]]), np.zeros((1, 2)), lower_is_better=True, n_bootstrap=20000)
    assert (d.estimate, d.low, d.high, d.verdict) == (0.5, 0.0, 1.0, "no difference")


def test_seeds_are_resampled_too():
    # One item, two seeds of 0 and 1: only the seed draw moves the mean, to 0, 1/2 or 1.
    means = Resampler(1, n_bootstrap=20000, seed=2).arm(np.array([[0.0], [1.0]]))
    assert [np.mean(means == v) for v in (0.0, 0.5, 1.0)] == pytest.approx([0.25, 0.5, 0.25], abs=0.015)


def test_verdicts_follow_the_metrics_direction():
    assert verdict(-0.3, -0.1, lower_is_better=True) == "win"    # loss fell
    assert verdict(-0.3, -0.1, lower_is_better=False) == "loss"  # accuracy fell
    assert verdict(0.1, 0.3, lower_is_better=False) == "win"
    assert verdict(-0.1, 0.3, lower_is_better=True) == "no difference"


def test_items_without_a_value_in_either_arm_are_left_out():
    a = np.array([[1.0, np.nan, 3.0]])
    b = np.array([[0.0, 5.0, np.nan]])
    d = paired_difference(a, b, lower_is_better=True, n_bootstrap=100)
    assert d.n_items == 1 and d.estimate == 1.0
    assert paired_difference(np.array([[np.nan]]), np.array([[1.0]]), True) is None
    with pytest.raises(ValueError, match="different items"):
        paired_difference(np.zeros((1, 3)), np.zeros((1, 4)), True)


def test_the_interval_covers_a_zero_difference_about_95_times_in_100():
    # Two arms of 3 seeds drawn from the same distribution (a seed effect and item noise): the interval over
    # items and seeds should hold the true difference, 0, in about 95% of repeated experiments.
    rng = np.random.default_rng(3)
    covered = 0
    trials = 200
    for trial in range(trials):
        items = rng.normal(1.0, 0.5, size=200)  # each item's difficulty, shared by both arms (the pairing)
        arms = [items + rng.normal(0, 0.03, size=(3, 1)) + rng.normal(0, 0.2, size=(3, 200)) for _ in range(2)]
        d = paired_difference(arms[0], arms[1], lower_is_better=True, n_bootstrap=400, seed=trial)
        covered += d.low <= 0.0 <= d.high
    assert 0.86 <= covered / trials <= 0.995


def test_crossing_interpolates_random_s_curve_by_hand():
    budgets, curve = [0.1, 0.3, 0.5, 1.0], [1.0, 0.8, 0.7, 0.6]
    assert crossing(budgets, curve, 0.9) == pytest.approx(0.2)
    assert crossing(budgets, curve, 0.75) == pytest.approx(0.4)
    assert crossing(budgets, curve, 0.6) == pytest.approx(1.0)
    assert crossing(budgets, curve, 1.1) == float("-inf")  # worse than random at its smallest budget
    assert crossing(budgets, curve, 0.5) == float("inf")   # better than the full pool
    # A curve that rises before it falls is crossed where it first comes down to the value.
    assert crossing([0.1, 0.3, 0.5], [1.0, 1.1, 0.7], 0.9) == pytest.approx(0.4)
    assert format_fraction(float("-inf"), 0.1) == "< 10%" and format_fraction(float("inf"), 0.1) == "> 100%"
    assert format_fraction(0.234, 0.1) == "23%"


def test_random_equivalent_reads_the_curve_with_its_interval():
    n = 50
    curve = {0.1: np.full((3, n), 1.0), 0.3: np.full((3, n), 0.8), 1.0: np.full((1, n), 0.6)}
    eq = random_equivalent(np.full((1, n), 0.9), curve, n_bootstrap=200)
    assert eq.estimate == pytest.approx(0.2) and eq.low == pytest.approx(0.2) and eq.high == pytest.approx(0.2)
    # With noise on the items the interval widens around the estimate.
    rng = np.random.default_rng(4)
    noisy = {b: v + rng.normal(0, 0.3, size=v.shape) for b, v in curve.items()}
    eq = random_equivalent(np.full((1, n), 0.9) + rng.normal(0, 0.3, size=(1, n)), noisy, n_bootstrap=300)
    assert eq.low < eq.estimate < eq.high
    assert random_equivalent(np.ones((1, n)), {0.1: np.ones((1, n))}) is None


def test_rank_agreement_is_spearman_with_an_interval_over_pairs():
    from scipy.stats import spearmanr

    from s2l.comparison import rank_agreement

    rng = np.random.default_rng(3)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)  # related, not perfectly
    b[:20] = np.round(b[:20])  # some ties
    found = rank_agreement(a, b)
    assert found.estimate == pytest.approx(spearmanr(a, b).statistic, abs=1e-12) and found.n == 200
    assert found.low < found.estimate < found.high and found.high - found.low < 0.3
    assert rank_agreement(a, b) == found  # seeded: the same interval again
    # A monotone relation agrees perfectly in every resample; an unrelated one's interval holds zero.
    monotone = rank_agreement(a, np.exp(a))
    assert (monotone.estimate, monotone.low, monotone.high) == pytest.approx((1.0, 1.0, 1.0))
    unrelated = rank_agreement(a, rng.normal(size=200))
    assert unrelated.low < 0 < unrelated.high
    assert rank_agreement(a[:2], b[:2]) is None and rank_agreement(a, np.ones(200)) is None
