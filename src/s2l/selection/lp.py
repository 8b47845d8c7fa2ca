"""Learning percentage (Mekala, Nguyen, Shang; ACL Findings 2024, arXiv 2402.10430).

P_k is the perplexity exp(mean response-token loss) after epoch k, P_0 the untrained base model's.

    LP(1)     = (P_0 - P_1) / (P_0 - P_n)    the share of all learning on an example done in epoch 1
    LP_app(1) =  (P_0 - P_1) / P_0           needs only one epoch

Lower means harder; the method keeps the lowest. Both are computed from losses without forming the
perplexities (P_0 cancels: LP = expm1(l_1 - l_0) / expm1(l_n - l_0)), so large losses cannot overflow.
LP can fall outside [0, 1]; an example whose P_0 equals P_n has no LP and is excluded, as are
examples without response tokens (the reference code gave them perplexity 1, which looks hardest).

Diversity layer (the paper's code always used it): embed each example's request with
all-MiniLM-L6-v2, K-means the embeddings, and take the lowest-LP share inside each cluster. The
shares are proportional to cluster sizes with largest-remainder rounding, so the budget is met
exactly (the reference rounds up in every cluster and overshoots).
"""

from __future__ import annotations

import numpy as np

from s2l.errors import InputError
from s2l.selection.base import RankingSelector, register
from s2l.selection.clustering import kmeans
from s2l.trajectories.matrix import Trajectories

ZERO_DENOMINATOR = "zero_denominator"
EMBEDDING_TEXTS = ("reference", "request")
ALLOCATIONS = ("exact", "reference")
NOT_FINITE = "lp_not_finite"
EXAMPLES_PER_CLUSTER = 50  # the paper: K = 1000 for Alpaca's 52K examples


def epoch_columns(snapshots: list[dict], epoch: int) -> tuple[int, int, int]:
    """Columns of P_0 (base model), P_epoch and P_n (the last whole epoch)."""
    if not snapshots or any(s.get("epoch") is None for s in snapshots):
        raise InputError("learning percentage needs each snapshot's epoch: a run directory knows them; "
                         "for a table give one per loss column (e.g. 0,1,2,3)", parameter="snapshot_epochs")
    epochs = [float(s["epoch"]) for s in snapshots]
    ends = {e: i for i, e in enumerate(epochs) if e == int(e)}  # the last column at each whole epoch
    # An in-training capture has no whole-epoch column inside the run: the loss at the next epoch's visit
    # (nominal epoch k + 0.5) is the loss after k epochs, plus the share of epoch k + 1 trained before it.
    for i, s in enumerate(snapshots):
        if s.get("capture") == "visits" and float(epoch) not in ends and epochs[i] == epoch + 0.5:
            ends[float(epoch)] = i
    if 0.0 not in ends or float(epoch) not in ends:
        raise InputError(f"learning percentage needs snapshots at epoch 0 (the base model) and epoch {epoch}; "
                         f"these are at epochs {epochs}", parameter="snapshot_epochs")
    return ends[0.0], ends[float(epoch)], ends[max(ends)]


def learning_percentage(losses: np.ndarray, first: int, after: int, last: int | None) -> np.ndarray:
    """LP from loss columns; `last=None` gives LP_app. NaN where the denominator is zero."""
    l0, l1 = losses[:, first], losses[:, after]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gained = -np.expm1(l1 - l0)  # (P_0 - P_k) / P_0
        if last is None:
            return gained
        total = -np.expm1(losses[:, last] - l0)  # (P_0 - P_n) / P_0
        return np.where(total != 0, gained / np.where(total != 0, total, 1.0), np.nan)


def proportional_counts(sizes, budget: int) -> np.ndarray:
    """`budget` shared over groups in proportion to their sizes, largest remainders rounded up
    (ties to the earlier group): sums to exactly `budget` and never exceeds a group's size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    exact = sizes * budget / total if total else np.zeros(len(sizes))
    counts = np.floor(exact).astype(np.int64)
    short = budget - int(counts.sum())
    order = np.lexsort((np.arange(len(sizes)), -(exact - counts)))
    counts[order[:short]] += 1
    return counts


def every_cluster_counts(sizes, budget: int, hardest_rank) -> np.ndarray:
    """The reference's spirit at the exact budget: every non-empty cluster gives at least one when the
    budget allows (the rest shared in proportion to what each has left, `proportional_counts`); with fewer
    than one per cluster, the clusters whose hardest member ranks first give one each."""
    sizes = np.asarray(sizes, dtype=np.int64)
    present = np.flatnonzero(sizes > 0)
    counts = np.zeros(len(sizes), dtype=np.int64)
    if budget < len(present):
        served = present[np.argsort(np.asarray(hardest_rank)[present], kind="stable")[:budget]]
        counts[served] = 1
        return counts
    counts[present] = 1
    return counts + proportional_counts(np.maximum(sizes - 1, 0), budget - len(present))


def reference_counts(sizes, budget: int) -> np.ndarray:
    """The reference's counts (Small2Large `subset.py:129`): the first of `round(N / budget)` np.array_split
    chunks of each cluster, i.e. ceil(size / parts), at least one from every non-empty cluster."""
    sizes = np.asarray(sizes, dtype=np.int64)
    parts = max(1, round(int(sizes.sum()) / budget))
    return -(-sizes // parts)


@register("lp-app", "Approximate learning percentage LP_app(1) = (P0 - P1) / P0: needs one epoch only", approx=True)
@register("lp", "Learning percentage LP(1): the hardest examples (least learnt in epoch 1), inside embedding clusters", approx=False)
class LearningPercentage(RankingSelector):
    """Parameters:
        approx               LP_app(1) instead of LP(1)
        epoch                the k of LP(k) (the paper uses 1)
        diversity            take the lowest-LP share inside each embedding cluster (the paper's code)
        diversity_clusters   K for the embeddings (default: 1000, or one per 50 examples in smaller pools)
        embedding_model      sentence-embedding model (default: the packaged all-MiniLM-L6-v2)
        embedding_text       what is embedded: "reference" (Instruction: … Response: …, the paper's code) or "request"
        allocation           "exact": the budget exactly, every cluster served first (the hardest-led clusters when
                             the budget is smaller than their number); "reference": the first of round(N / budget)
                             chunks of each cluster, as the paper's code (overshoots the budget, reported)
        seed                 K-means initialisation and training sample
    fit(trajectories, sources=None, embeddings=None, texts=None): with diversity on, pass the
    examples' embeddings, or their texts to embed.
    """

    ascending = True
    fit_inputs = ("embeddings", "texts")
    manifest_attributes = ("epoch_columns_", "diversity_clusters_")

    def __init__(self, approx: bool = False, epoch: int = 1, diversity: bool = True,
                 diversity_clusters: int | None = None, embedding_model: str | None = None,
                 embedding_text: str = "reference", allocation: str = "exact", seed: int = 0):
        self.approx = approx
        self.epoch = epoch
        self.diversity = diversity
        self.diversity_clusters = diversity_clusters
        self.embedding_model = embedding_model
        self.embedding_text = embedding_text
        self.allocation = allocation
        self.seed = seed

    def needed_inputs(self) -> tuple[str, ...]:
        return ("texts",) if self.diversity else ()  # `s2l select` supplies texts; embeddings are for the API

    def _fit(self, t: Trajectories, embeddings=None, texts=None) -> None:
        for name, value, choices in (("embedding_text", self.embedding_text, EMBEDDING_TEXTS),
                                     ("allocation", self.allocation, ALLOCATIONS)):
            if value not in choices:
                raise InputError(f"unknown value {value!r}; choose one of {', '.join(choices)}", parameter=name)
        first, after, last = epoch_columns(t.snapshots, self.epoch)
        if not self.approx and last == first:
            raise InputError("LP needs a snapshot after training (P_n); use lp-app for one epoch", parameter="method")
        lp = learning_percentage(t.losses, first, after, None if self.approx else last)
        usable = self.excluded_ == ""
        if not self.approx:
            self.excluded_[usable & (t.losses[:, last] == t.losses[:, first])] = ZERO_DENOMINATOR
        self.excluded_[(self.excluded_ == "") & ~np.isfinite(lp)] = NOT_FINITE
        self.scores_ = np.where(self.excluded_ == "", lp, np.nan)
        self.epoch_columns_ = {"p0": first, "p_epoch": after, "p_n": None if self.approx else last}
        if self.diversity:
            self._fit_diversity(t, embeddings, texts)

    def _fit_diversity(self, t: Trajectories, embeddings, texts) -> None:
        rows = self._selectable_rows()  # only these are clustered (and embedded)
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if len(embeddings) != len(t.ids):
                raise InputError(f"{len(embeddings)} embeddings for {len(t.ids)} examples", parameter="embeddings")
            vectors = embeddings[rows]
        elif texts is not None:
            from s2l.selection.embed import cached_embed_texts

            vectors = cached_embed_texts([texts[i] for i in rows], model=self.embedding_model)
        else:
            raise InputError("the diversity layer needs the examples' texts or embeddings "
                             "(fit(..., texts=...) or embeddings=...); or turn it off (diversity=False)",
                             parameter="diversity")
        k = self.diversity_clusters or min(1000, max(1, len(rows) // EXAMPLES_PER_CLUSTER))
        result = kmeans(vectors, k, seed=self.seed)
        self.diversity_clusters_ = len(result.centers)
        self.labels_[rows] = result.labels
        self.cluster_centers_ = result.centers

    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        ranked = self._ranked_rows()  # selectable rows, lowest LP first
        if not self.diversity:
            return ranked[:count]
        labels = self.labels_[ranked]
        sizes = np.bincount(labels, minlength=len(self.cluster_centers_))
        if self.allocation == "reference":
            quotas = reference_counts(sizes, count)
            self.delivered_ = int(quotas.sum())
            if self.delivered_ != count:
                self.warnings_.append(
                    f"allocation=reference keeps the first of {max(1, round(sizes.sum() / count))} chunks of every "
                    f"cluster, as the reference code: {self.delivered_} examples for a budget of {count} "
                    f"({self.delivered_ - count:+d})")
        else:
            first_position = np.full(len(sizes), len(ranked))  # where each cluster's hardest member ranks
            np.minimum.at(first_position, labels, np.arange(len(ranked)))
            quotas = every_cluster_counts(sizes, count, first_position)
        self.cluster_quotas_ = quotas
        # Position of each row within its cluster's ranking; keep those under the cluster's quota.
        rank_in_cluster = np.empty(len(ranked), dtype=np.int64)
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        rank_in_cluster[order] = np.arange(len(ranked)) - np.repeat(starts, sizes)
        return ranked[rank_in_cluster < quotas[labels]]
