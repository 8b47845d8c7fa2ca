"""The baselines every comparison needs (docs/design.md): random draws, single-number rankings, data maps.

Rankings read the proxy's loss at its final snapshot unless said otherwise. With one mean loss per
example and snapshot, the data map's confidence exp(-loss) is the geometric mean of the gold response
tokens' probabilities; least confidence reads the store's other measure, the mean probability of the
proxy's own top-1 token.
"""

from __future__ import annotations

import numpy as np

from s2l.selection.base import RankingSelector, Selector, register
from s2l.selection.s2l import S2L, snapshot_columns, source_groups, source_quotas
from s2l.trajectories.matrix import Trajectories


@register("random", "Uniform random sample of the pool")
class RandomSelector(Selector):
    uses_proxy = False

    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(self._selectable_rows(), size=count, replace=False)


@register("source-random", "Random inside each source, the budget split over sources as S2L's first step does")
class SourceRandom(Selector):
    uses_proxy = False

    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        groups = source_groups(self.sources_, self._selectable_rows())
        quotas = source_quotas(groups, count)
        picks = [rng.choice(rows, size=quotas[name], replace=False) for name, rows in groups.items()]
        return np.concatenate(picks)


@register("cluster-random", "S2L's clusters and per-cluster counts with an independent random draw inside each cluster")
class ClusterRandom(S2L):
    """S2L also draws at random inside a cluster; this keeps S2L's clustering and counts and draws
    from its own random stream, which measures how much S2L's result owes to its particular draw."""

    draw_stream = 1


def one_column(snapshot: int, n_columns: int) -> int:
    """The column of `snapshot` (negative counts from the end: -1 is the final snapshot), checked in range."""
    return snapshot_columns([snapshot + n_columns if snapshot < 0 else snapshot], n_columns)[0]


class _FinalLoss(RankingSelector):
    """Parameters:
        snapshot             the loss column to rank by (-1: the final snapshot)
    """

    def __init__(self, snapshot: int = -1, seed: int = 0):
        self.snapshot = snapshot
        self.seed = seed

    def _fit(self, t: Trajectories) -> None:
        column = snapshot_columns([self.snapshot % t.losses.shape[1]], t.losses.shape[1])[0]
        self.scores_ = np.where(self.excluded_ == "", t.losses[:, column], np.nan)


@register("perplexity-low", "Lowest final-snapshot perplexity first (the easiest for the proxy)")
class PerplexityLow(_FinalLoss):
    ascending = True


@register("perplexity-high", "Highest final-snapshot perplexity first (the hardest for the proxy)")
class PerplexityHigh(_FinalLoss):
    ascending = False


@register("perplexity-mid", "The middle band of final-snapshot perplexity, centred on the median")
class PerplexityMid(_FinalLoss):
    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        ranked = self._ranked_rows()
        start = (len(ranked) - count) // 2
        return ranked[start:start + count]


@register("least-confidence", "Lowest mean top-1 token probability at the final snapshot first (the proxy least sure "
          "of its own predictions)")
class LeastConfidence(RankingSelector):
    """Least confidence (the S2L paper's baseline, after Bhatt et al. 2024): the proxy's confidence in its own
    prediction at a response position is the probability of its most likely next token, whatever the gold
    token is; an example's confidence is the mean over its response positions (the store's `top1_prob`).
    Unlike exp(-loss), this does not rank as perplexity does. A store without the column is refused, saying
    how to make one."""

    ascending = True

    def __init__(self, snapshot: int = -1, seed: int = 0):
        self.snapshot = snapshot
        self.seed = seed

    def _fit(self, t: Trajectories) -> None:
        column = one_column(self.snapshot, t.losses.shape[1])
        usable = self.excluded_ == ""
        self.scores_ = np.where(usable, t.measure("confidence", column, "least-confidence", usable), np.nan)
        self.snapshot_columns_ = [column]


@register("learnability", "Largest loss drop from the base model to the final snapshot first")
class Learnability(RankingSelector):
    ascending = False

    def _fit(self, t: Trajectories) -> None:
        self.scores_ = np.where(self.excluded_ == "", t.losses[:, 0] - t.losses[:, -1], np.nan)


@register("cartography-easy", "Data map: highest mean confidence over snapshots first (easy to learn)", region="easy")
@register("cartography-hard", "Data map: lowest mean confidence over snapshots first (hard to learn)", region="hard")
@register("cartography-ambiguous", "Data map: highest variability of confidence over snapshots first", region="ambiguous")
class Cartography(RankingSelector):
    """Dataset cartography (Swayamdipta et al., 2020) on the proxy's snapshots: confidence is the mean
    of exp(-loss) over the snapshots, variability its standard deviation.

    Parameters:
        region               ambiguous (most variable), hard (least confident) or easy (most confident)
        snapshots            columns to read: "trained" (1…T), "all" (0…T), or a list
    """

    REGIONS = {"ambiguous": ("variability", False), "hard": ("confidence", True), "easy": ("confidence", False)}

    def __init__(self, region: str = "ambiguous", snapshots: str | list[int] = "trained", seed: int = 0):
        self.region = region
        self.snapshots = snapshots
        self.seed = seed

    def _fit(self, t: Trajectories) -> None:
        probability = np.exp(-t.losses[:, snapshot_columns(self.snapshots, t.losses.shape[1])])
        usable = self.excluded_ == ""
        self.details_ = {
            "confidence": np.where(usable, probability.mean(axis=1), np.nan),
            "variability": np.where(usable, probability.std(axis=1), np.nan),
        }
        if self.region not in self.REGIONS:
            raise ValueError(f"unknown cartography region {self.region!r}; choose one of {', '.join(self.REGIONS)}")
        measure, self.ascending = self.REGIONS[self.region]
        self.scores_ = self.details_[measure]


@register("length-long", "Longest responses first (response tokens)")
class LengthLong(RankingSelector):
    """fit(trajectories, lengths=None): lengths default to the trajectories' response-token counts."""

    ascending = False
    uses_proxy = False  # the response lengths are the tokeniser's
    fit_inputs = ("lengths",)
    manifest_attributes = ("length_unit_",)

    def _fit(self, t: Trajectories, lengths=None) -> None:
        lengths = t.n_tokens if lengths is None else np.asarray(lengths)
        self.scores_ = np.where(self.excluded_ == "", lengths.astype(np.float64), np.nan)
