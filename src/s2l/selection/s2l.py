"""S2L — SmallToLarge (Yang, Mishra, Chiang, Mirzasoleiman; NeurIPS 2024, arXiv 2403.07384).

Examples that a small proxy model learns alike have alike loss trajectories. S2L clusters the
trajectories and samples the clusters evenly, so rare learning behaviours are kept and common ones
are not over-represented:

    1. Split the budget over sources, smallest source first, each taking `remaining // sources_left`
       (a source smaller than its share gives all it has; the rest rolls on to larger ones).
    2. Inside each source, K-means (L2, K = 100, 20 iterations) on the raw trajectories
       [loss(t_1) … loss(t_T)] — the proxy's checkpoints, not the untrained base model.
    3. Visit the source's clusters smallest first, each taking `remaining // clusters_left`, drawn
       uniformly at random without replacement. Clusters of 2 or fewer members are used only if budget
       is left after the larger ones.

The result has exactly the budget.
"""

from __future__ import annotations

import numpy as np

from s2l.errors import InputError
from s2l.selection.base import Selector, register
from s2l.selection.clustering import BACKENDS, kmeans
from s2l.trajectories.matrix import Trajectories

SMALL_CLUSTER = 2  # clusters of this many members or fewer come last


def split_budget(sizes, budget: int, order=None) -> np.ndarray:
    """Share `budget` over groups of `sizes`, smallest first, each taking `remaining // groups_left`
    capped at its size. Sums to `budget` whenever the groups hold that many; `order` breaks size ties."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if order is None:
        order = np.argsort(sizes, kind="stable")
    taken = np.zeros(len(sizes), dtype=np.int64)
    remaining = int(budget)
    for visited, group in enumerate(order):
        share = remaining // (len(order) - visited)
        taken[group] = min(int(sizes[group]), share)
        remaining -= int(taken[group])
    return taken


def cluster_counts(sizes, budget: int, rng: np.random.Generator) -> np.ndarray:
    """How many to draw from each cluster of one source: clusters above SMALL_CLUSTER members share the
    budget first (`split_budget`); what is left is drawn uniformly from the pooled members of all the small
    clusters, as the reference does (`schedules/s2l.py:139-144`), so a singleton is as likely as any other
    small-cluster member. `rng` makes that draw."""
    sizes = np.asarray(sizes, dtype=np.int64)
    large = np.flatnonzero(sizes > SMALL_CLUSTER)
    small = np.flatnonzero(sizes <= SMALL_CLUSTER)
    counts = np.zeros(len(sizes), dtype=np.int64)
    counts[large] = split_budget(sizes[large], budget)
    left = min(budget - int(counts.sum()), int(sizes[small].sum()))
    if left > 0:
        pooled = np.repeat(small, sizes[small])  # one entry per member, naming its cluster
        counts += np.bincount(rng.choice(pooled, size=left, replace=False), minlength=len(sizes))
    return counts


def source_groups(sources: np.ndarray | None, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Selectable rows of each source, sources in name order (the split orders them by size)."""
    if sources is None:
        return {"": rows}
    names = sources[rows].astype(str)
    return {name: rows[names == name] for name in sorted(set(names.tolist()))}


def source_quotas(groups: dict[str, np.ndarray], budget: int) -> dict[str, int]:
    names = list(groups)
    sizes = [len(groups[n]) for n in names]
    taken = split_budget(sizes, budget, order=sorted(range(len(names)), key=lambda i: (sizes[i], names[i])))
    return dict(zip(names, taken.tolist()))


@register("s2l", "S2L: K-means on loss trajectories inside each source, then every cluster sampled evenly (the paper's method)")
class S2L(Selector):
    """Parameters (defaults from the paper):
        n_clusters           K per source (capped at the source's size)
        per_source           split the budget over sources first (when the data has sources)
        snapshots            columns to cluster: "trained" (1…T, the paper's), "all" (0…T), or a list
        standardize          z-score each snapshot column before clustering (not the paper's)
        n_iter               K-means iterations
        sample_per_centroid  points per centroid in the seeded K-means training sample; None = all
        backend              "faiss" or "sklearn"
        seed                 K-means initialisation, training sample and the draws inside clusters
    """

    manifest_attributes = ("source_quotas_", "clusters_per_source_", "snapshot_columns_")

    def __init__(self, n_clusters: int = 100, per_source: bool = True, snapshots: str | list[int] = "trained",
                 standardize: bool = False, n_iter: int = 20, sample_per_centroid: int | None = 256,
                 backend: str = "faiss", seed: int = 0):
        self.n_clusters = n_clusters
        self.per_source = per_source
        self.snapshots = snapshots
        self.standardize = standardize
        self.n_iter = n_iter
        self.sample_per_centroid = sample_per_centroid
        self.backend = backend
        self.seed = seed

    def _fit(self, t: Trajectories) -> None:
        if self.n_clusters < 1:
            raise InputError(f"the number of clusters must be at least 1, got {self.n_clusters}", parameter="n_clusters")
        if self.backend not in BACKENDS:
            raise InputError(f"unknown K-means backend {self.backend!r}; choose one of {', '.join(BACKENDS)}",
                             parameter="backend")
        columns = snapshot_columns(self.snapshots, t.losses.shape[1])
        features = t.losses[:, columns]
        rows = self._selectable_rows()
        if self.standardize and len(rows):
            mean, std = features[rows].mean(axis=0), features[rows].std(axis=0)
            features = (features - mean) / np.where(std > 0, std, 1.0)
        self.snapshot_columns_ = columns
        self.groups_ = source_groups(self.sources_ if self.per_source else None, rows)
        centers, self.clusters_per_source_ = [], {}
        for g, (name, members) in enumerate(self.groups_.items()):
            if len(members) < 2 * self.n_clusters:  # most clusters would have 1-2 members
                self.warnings_.append(
                    f"{'source ' + repr(name) if name else 'the pool'} has {len(members)} examples for {self.n_clusters} "
                    f"clusters: with clusters of 2 or fewer members S2L is close to random sampling; "
                    f"n_clusters={max(1, len(members) // 20)} would give about 20 per cluster")
            # One seed stream per source, so adding a source does not change the others' clusters.
            result = kmeans(features[members], self.n_clusters, n_iter=self.n_iter, seed=self.seed + g,
                            sample_per_centroid=self.sample_per_centroid, backend=self.backend)
            self.labels_[members] = result.labels + sum(len(c) for c in centers)
            centers.append(result.centers)
            self.clusters_per_source_[name] = len(result.centers)
        self.cluster_centers_ = np.concatenate(centers) if centers else np.zeros((0, len(columns)), np.float32)

    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        chosen = []
        self.source_quotas_ = source_quotas(self.groups_, count)
        self.cluster_quotas_ = np.zeros(len(self.cluster_centers_), dtype=np.int64)
        for g, (name, members) in enumerate(self.groups_.items()):
            # The small clusters' shares come from the seed alone, so cluster-random (another draw stream)
            # keeps S2L's counts exactly.
            counts_rng = np.random.default_rng([self.seed, 2, g])
            chosen.append(self._sample_clusters(members, self.source_quotas_[name], rng, counts_rng))
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)

    def _sample_clusters(self, members: np.ndarray, quota: int, rng: np.random.Generator,
                         counts_rng: np.random.Generator) -> np.ndarray:
        labels = self.labels_[members]
        clusters, sizes = np.unique(labels, return_counts=True)
        counts = cluster_counts(sizes, quota, counts_rng)
        self.cluster_quotas_[clusters] = counts
        picks = [rng.choice(members[labels == c], size=n, replace=False) for c, n in zip(clusters, counts) if n]
        return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def snapshot_columns(snapshots, n_columns: int) -> list[int]:
    """Which trajectory columns a method reads: "trained" = 1…T (0 is the untrained base model),
    "all" = 0…T, or explicit column numbers."""
    if snapshots == "trained":
        columns = list(range(1, n_columns)) or [0]
    elif snapshots == "all":
        columns = list(range(n_columns))
    else:
        try:
            if isinstance(snapshots, str):
                raise ValueError(snapshots)
            columns = [int(c) for c in snapshots]
        except (TypeError, ValueError):
            raise InputError(f"snapshots must be trained, all or a list of column numbers, got {snapshots!r}",
                             parameter="snapshots") from None
        bad = [c for c in columns if not 0 <= c < n_columns]
        if bad or not columns:
            raise InputError(f"snapshot columns {bad or columns} are out of range 0…{n_columns - 1}",
                             parameter="snapshots")
    return columns
