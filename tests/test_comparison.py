"""s2l.comparison: paired bootstrap differences, verdicts and the random-equivalent fraction, on cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from s2l.comparison import (Resampler, SeedSpread, crossing, format_fraction, paired_difference, pooled_spread,
                            random_equivalent, seed_spread, verdict)


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


def test_seed_spread_is_the_seeds_variance_less_their_item_noise_by_hand():
    # Seeds 1 apart on every item: per-seed means 2 and 3 (variance 0.5), no seed x item residual.
    assert seed_spread(np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])) == SeedSpread(0.5, 1)
    # Equal seed means, residuals of ±0.5: item noise alone, no seed effect (clipped at zero).
    assert seed_spread(np.array([[0.0, 1.0], [1.0, 0.0]])) == SeedSpread(0.0, 1)
    # Means 1 and 3 (variance 2); residuals ±0.5, so (1 / (1 x 1)) / 2 items = 0.5 of it is item noise.
    assert seed_spread(np.array([[0.0, 2.0], [3.0, 3.0]])) == SeedSpread(1.5, 1)
    assert seed_spread(np.array([[1.0, 2.0]])) is None
    # Pooled over the arms with two seeds or more, weighted by degrees of freedom; the one-seed arm adds nothing.
    arms = [np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]), np.array([[0.0, 2.0], [3.0, 3.0]]), np.array([[5.0, 9.0]])]
    assert pooled_spread(arms) == SeedSpread(1.0, 2)
    assert pooled_spread(arms[2:]) is None


def test_the_seed_mean_moves_as_a_scaled_t():
    # One item, one seed at 0.5, a spread of variance 0.5 with 1 degree of freedom: the mean moves by
    # sqrt(0.5 / 1) t(1), whose quartiles are ±1.
    spread = SeedSpread(0.5, 1)
    means = Resampler(1, n_bootstrap=20000, seed=2).arm(np.array([[0.5]]), spread)
    assert np.quantile(means, [0.25, 0.5, 0.75]) == pytest.approx([0.5 - 0.5 ** 0.5, 0.5, 0.5 + 0.5 ** 0.5], abs=0.04)
    # Two seeds halve the variance; no spread, nothing but the items moves it.
    two = Resampler(1, n_bootstrap=20000, seed=2).arm(np.array([[0.0], [1.0]]), spread)
    assert np.quantile(two, [0.25, 0.75]) == pytest.approx([0.0, 1.0], abs=0.04)
    assert (Resampler(1, n_bootstrap=100).arm(np.array([[0.0], [1.0]])) == 0.5).all()
    # Arms with the same spread share its uncertainty: their difference is a t too, sqrt(0.5 (1 + 1)) t(1).
    r = Resampler(1, n_bootstrap=20000, seed=3)
    difference = r.arm(np.array([[0.0]]), spread) - r.arm(np.array([[0.0]]), spread)
    assert np.quantile(difference, [0.25, 0.75]) == pytest.approx([-1.0, 1.0], abs=0.05)


def _naive_seed_resampling(arms: list[np.ndarray], rng) -> np.ndarray:
    # What this module did before: the items drawn as now (shared), the seeds drawn with replacement (which gives
    # the seed mean (n - 1)/n of its variance and a normal's tails).
    n_items = arms[0].shape[1]
    item_weights = rng.multinomial(n_items, np.full(n_items, 1 / n_items), size=300) / n_items
    means = []
    for values in arms:
        seed_weights = rng.multinomial(len(values), np.full(len(values), 1 / len(values)), size=300) / len(values)
        means.append(((item_weights @ values.T) * seed_weights).sum(axis=1))
    return means[0] - means[1]


@pytest.mark.parametrize("seeds", [2, 3])
def test_few_seeds_still_get_a_95_percent_interval(seeds):
    # The seed effect dominates (0.05 between seeds against 0.01 of item noise over 200 items): resampling 2 or 3
    # seeds covered the true difference, 0, in about 66% and 79% of experiments; the pooled t-drawn seed effect in 95%.
    rng = np.random.default_rng(seeds)
    covered = naive = 0
    trials = 200
    for trial in range(trials):
        items = rng.normal(1.0, 0.5, size=200)
        arms = [items + rng.normal(0, 0.05, size=(seeds, 1)) + rng.normal(0, 0.01, size=(seeds, 200)) for _ in range(2)]
        d = paired_difference(arms[0], arms[1], lower_is_better=True, n_bootstrap=300, seed=trial)
        covered += d.low <= 0.0 <= d.high
        low, high = np.quantile(_naive_seed_resampling(arms, rng), [0.025, 0.975])
        naive += low <= 0.0 <= high
    assert 0.92 <= covered / trials <= 0.99
    assert naive / trials <= 0.85


def test_arms_with_one_seed_borrow_the_pooled_spread():
    # Two one-seed methods, the seed spread pooled from two others with 3 seeds each: about 95% again; without
    # it the interval holds items alone and misses the seeds' part.
    rng = np.random.default_rng(7)
    covered = alone = 0
    trials = 200
    for trial in range(trials):
        items = rng.normal(1.0, 0.5, size=200)
        draw = lambda n: items + rng.normal(0, 0.05, size=(n, 1)) + rng.normal(0, 0.01, size=(n, 200))
        a, b, pooled = draw(1), draw(1), pooled_spread([draw(3), draw(3)])
        d = paired_difference(a, b, lower_is_better=True, n_bootstrap=300, seed=trial, spreads=(pooled, pooled))
        covered += d.low <= 0.0 <= d.high
        d = paired_difference(a, b, lower_is_better=True, n_bootstrap=300, seed=trial)
        alone += d.low <= 0.0 <= d.high
    assert 0.9 <= covered / trials <= 0.995
    assert alone / trials <= 0.5


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
