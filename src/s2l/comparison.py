"""Is one method's subset better than another's? Paired bootstrap intervals over test items and seeds.

Every cell of an experiment is evaluated on the same test items, so two methods are compared item by
item: for each test item, the method's value (its response loss, or 1/0 for a right or wrong answer)
averaged over the method's seeds, minus the baseline's averaged over its seeds; the difference is the
mean of that over the items. Its 95% interval is a percentile bootstrap with two parts:

- the test items are resampled (the same draw for both arms: that is the pairing);
- each arm's seed effect is drawn as well (the seed of a cell seeds both its selection and its training,
  so seed k of one method has nothing in common with seed k of another). Its variance is the one between
  seeds less what item noise alone puts there (a two-way analysis of variance of the seeds x items table),
  pooled over the arms that share it, and drawn with that estimate's own uncertainty, so the difference of
  two arms' seed means moves as a Student t with the pooled degrees of freedom: the two-sample t-test's
  pooled variance, inside the bootstrap.

Not a resampling of the seeds: with 2 or 3 of them, drawing seeds with replacement gives the seed mean
(n - 1)/n of its variance and a normal's tails, and intervals meant to hold 95% held 66-79% in simulation
(tests/test_comparison.py). A difference is called a win or a loss only when its interval excludes zero;
otherwise it is "no difference".

The random-equivalent fraction turns a method's held-out loss into the paper's claim in data terms: the
budget at which random selection's curve (its mean loss at each budget, the full pool at 100%) reaches the
method's loss, by linear interpolation between the curve's points; its interval comes from the same
bootstrap replicates. Below the curve's smallest budget it is reported as "< that budget", past the full
pool as "> 100%".

Rank agreement between two models' measures of the same examples (proxy and target: does the small model
order the pool as the large one does?) is Spearman's correlation, with a percentile bootstrap interval that
resamples the examples in pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

LEVEL = 0.95
N_BOOTSTRAP = 2000

# Which way is better, per metric: the loss falls, the accuracy rises.
LOWER_IS_BETTER = {"loss": True, "accuracy": False}
# What values a metric can take: a level's interval is clipped to them (a seed effect drawn as a t can carry
# an accuracy near 0 below it). Differences are not clipped.
METRIC_RANGE = {"loss": (0.0, np.inf), "accuracy": (0.0, 1.0)}


@dataclass(frozen=True)
class Difference:
    """method − baseline, mean over the common test items, with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    n_items: int
    verdict: str  # "win", "loss" or "no difference", from the method's side


def verdict(low: float, high: float, lower_is_better: bool) -> str:
    """A win or a loss only when the interval of (method − baseline) excludes zero."""
    if low > 0:
        return "loss" if lower_is_better else "win"
    if high < 0:
        return "win" if lower_is_better else "loss"
    return "no difference"


@dataclass(frozen=True)
class SeedSpread:
    """How much an arm's value moves with the seed alone: the variance of one seed's effect, and the degrees
    of freedom it was estimated with."""

    variance: float
    df: int


def seed_spread(values: np.ndarray) -> SeedSpread | None:
    """The seed effect's variance in a (seeds, items) arm; None with one seed (or no item).

    The per-seed means' variance also holds each seed's item noise, averaged over the items; that part,
    estimated from the table's seed x item residuals, is taken out, since resampling the items carries it."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n, m = values.shape
    if n < 2 or m == 0:
        return None
    between = float(values.mean(axis=1).var(ddof=1))
    if m > 1:
        residual = values - values.mean(axis=1, keepdims=True) - values.mean(axis=0, keepdims=True) + values.mean()
        between -= float((residual ** 2).sum()) / ((n - 1) * (m - 1)) / m
    return SeedSpread(max(between, 0.0), n - 1)


def pooled_spread(arms: Sequence[np.ndarray]) -> SeedSpread | None:
    """One seed spread from every arm with several seeds, weighted by degrees of freedom: it assumes the seed
    moves each of these arms' results about as much. None when no arm has two seeds."""
    spreads = [s for s in map(seed_spread, arms) if s is not None]
    df = sum(s.df for s in spreads)
    return SeedSpread(sum(s.variance * s.df for s in spreads) / df, df) if df else None


class Resampler:
    """One set of bootstrap replicates for a test set: the item weights every arm shares (the pairing), and
    seed effects drawn per arm. `seed` fixes them, so a rerun gives the same intervals."""

    def __init__(self, n_items: int, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0):
        if n_items < 1:
            raise ValueError("n_items must be at least 1")
        self.n_items = n_items
        self.n_bootstrap = n_bootstrap
        self._rng = np.random.default_rng(seed)
        # Row b: how often each item is drawn in replicate b, over the number of items.
        self.item_weights = self._rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_bootstrap) / n_items
        self._uncertainty: dict[SeedSpread, np.ndarray] = {}

    def arm(self, values: np.ndarray, spread: SeedSpread | None = None) -> np.ndarray:
        """Per-replicate means of one arm, `values` (seeds, items): the items resampled, and the mean over the
        arm's n seeds moved by sqrt(variance / n) times a normal draw, times one draw of the spread's own
        uncertainty, sqrt(df / chi-square(df)), that every arm with this spread shares (a t, as the pooled
        two-sample test has it). No spread: the items alone."""
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        replicates = self.item_weights @ values.mean(axis=0)
        if spread is None or spread.variance == 0:
            return replicates
        if spread not in self._uncertainty:
            self._uncertainty[spread] = np.sqrt(spread.df / self._rng.chisquare(spread.df, size=self.n_bootstrap))
        noise = self._rng.standard_normal(self.n_bootstrap) * self._uncertainty[spread]
        return replicates + np.sqrt(spread.variance / values.shape[0]) * noise


def point(values: np.ndarray) -> float:
    """An arm's estimate: the mean over items of the mean over seeds."""
    return float(np.atleast_2d(values).mean(axis=0).mean())


def interval(replicates: np.ndarray, level: float = LEVEL,
             bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float]:
    """The percentile interval of `replicates`, clipped to `bounds` (the values the quantity can take)."""
    low, high = np.clip(np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf"), *bounds)
    return float(low), float(high)


def common_items(arms: Sequence[np.ndarray]) -> np.ndarray:
    """Items every seed of every arm has a value for (a loss is missing where truncation left no token)."""
    keep = np.ones(np.atleast_2d(arms[0]).shape[1], dtype=bool)
    for values in arms:
        keep &= np.isfinite(np.atleast_2d(values)).all(axis=0)
    return keep


def paired_difference(method: np.ndarray, baseline: np.ndarray, lower_is_better: bool,
                      n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, level: float = LEVEL,
                      spreads: tuple[SeedSpread | None, SeedSpread | None] | None = None) -> Difference | None:
    """method − baseline over their common items; each is (seeds, items) on the same test items in the same order.
    `spreads`: the method's and the baseline's seed spreads (`Resampler.arm`); by default one pooled from the two
    arms' own seeds. None when no item has a value in both."""
    method, baseline = np.atleast_2d(method), np.atleast_2d(baseline)
    if method.shape[1] != baseline.shape[1]:
        raise ValueError(f"the arms are on different items ({method.shape[1]} and {baseline.shape[1]})")
    keep = common_items([method, baseline])
    if not keep.any():
        return None
    method, baseline = method[:, keep], baseline[:, keep]
    if spreads is None:
        spreads = (pooled_spread([method, baseline]),) * 2
    resampler = Resampler(int(keep.sum()), n_bootstrap, seed)
    low, high = interval(resampler.arm(method, spreads[0]) - resampler.arm(baseline, spreads[1]), level)
    return Difference(point(method) - point(baseline), low, high, int(keep.sum()), verdict(low, high, lower_is_better))


def crossing(budgets: Sequence[float], curve: Sequence[float], value: float) -> float:
    """The budget at which a curve (one value per budget, budgets ascending) first reaches `value`, by linear
    interpolation; -inf when `value` is worse than the curve at its first budget, +inf when it is better than
    the curve anywhere. The curve is read as falling (a loss); pass negated values for a rising one."""
    budgets, curve = list(budgets), list(curve)
    if value > curve[0]:
        return float("-inf")
    for (b0, c0), (b1, c1) in zip(zip(budgets, curve), zip(budgets[1:], curve[1:])):
        if c1 <= value <= c0:
            return b0 if c0 == c1 else b0 + (c0 - value) / (c0 - c1) * (b1 - b0)
    # From curve[0] >= value the curve only misses `value` by staying above it, so value is below all of it.
    return float("inf")


@dataclass(frozen=True)
class Equivalent:
    """The random budget worth a method's loss, with its bootstrap interval (±inf: off the curve's ends)."""

    estimate: float
    low: float
    high: float


def random_equivalent(method: np.ndarray, curve: Mapping[float, np.ndarray], n_bootstrap: int = N_BOOTSTRAP,
                      seed: int = 0, level: float = LEVEL, spread: SeedSpread | None = None,
                      curve_spreads: Mapping[float, SeedSpread | None] | None = None) -> Equivalent | None:
    """Where random's loss curve (budget → (seeds, items)) reaches the method's mean loss, as a fraction of the
    pool. All arms are resampled on the same items (those every arm has), so the curve and the method move together.
    `spread` and `curve_spreads` (by budget) are the arms' seed spreads; by default one pooled over every arm."""
    budgets = sorted(curve)
    if len(budgets) < 2:
        return None
    arms = [np.atleast_2d(curve[b]) for b in budgets]
    keep = common_items([np.atleast_2d(method), *arms])
    if not keep.any():
        return None
    method = np.atleast_2d(method)[:, keep]
    arms = [a[:, keep] for a in arms]
    if curve_spreads is None:
        spread = pooled_spread([method, *arms])
        curve_spreads = dict.fromkeys(budgets, spread)
    estimate = crossing(budgets, [point(a) for a in arms], point(method))
    resampler = Resampler(int(keep.sum()), n_bootstrap, seed)
    method_b = resampler.arm(method, spread)
    curve_b = np.stack([resampler.arm(a, curve_spreads.get(b)) for b, a in zip(budgets, arms)], axis=1)
    replicates = np.array([crossing(budgets, curve_b[i], method_b[i]) for i in range(len(method_b))])
    low, high = interval(replicates, level)
    return Equivalent(estimate, low, high)


def format_fraction(value: float, smallest: float) -> str:
    if value == float("-inf"):
        return f"< {smallest:.0%}"
    if value == float("inf"):
        return "> 100%"
    return f"{value:.0%}"


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation over `n` paired examples, with its bootstrap interval."""

    estimate: float
    low: float
    high: float
    n: int


def rank_agreement(a: np.ndarray, b: np.ndarray, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0,
                   level: float = LEVEL) -> Correlation | None:
    """Spearman's correlation of `a` and `b` (tied values share their mean rank), its interval from resampling
    the (a, b) pairs; None where it is undefined (fewer than 3 pairs, or a constant side)."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None

    def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # row-wise, over the last axis
        rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
        rx -= rx.mean(axis=-1, keepdims=True)
        ry -= ry.mean(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):  # a constant resample: NaN, left out below
            return (rx * ry).sum(axis=-1) / np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))

    rng = np.random.default_rng(seed)
    chunk = max(1, 10_000_000 // len(a))  # replicates at a time: bounded memory for a large pool
    replicates = []
    for start in range(0, n_bootstrap, chunk):
        draws = rng.integers(0, len(a), size=(min(chunk, n_bootstrap - start), len(a)))
        replicates.append(spearman(a[draws], b[draws]))
    replicates = np.concatenate(replicates)
    low, high = interval(replicates[np.isfinite(replicates)], level)
    return Correlation(float(spearman(a, b)), low, high, len(a))
