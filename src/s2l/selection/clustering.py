"""K-means for selection: centroids trained on an explicit, seeded sample, then every point assigned.

faiss (the reference implementation's choice) is the default; scikit-learn is the fallback. faiss
silently trains on at most 256 points per centroid, drawn with its own generator; here the training
sample is drawn by us, from the caller's seed, and faiss is told to use all of it. The default sample
size is the same 256 points per centroid, so results follow the reference's behaviour, and
`sample_per_centroid=None` trains on every point. Assignment runs in batches, so memory stays bounded
however many points there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ASSIGN_BATCH = 65536
BACKENDS = ("faiss", "sklearn")


@dataclass
class KMeansResult:
    labels: np.ndarray  # (N,) int64 cluster of every point
    centers: np.ndarray  # (k, d) float32
    n_train: int  # points the centroids were trained on


def training_sample(n: int, k: int, sample_per_centroid: int | None, rng: np.random.Generator) -> np.ndarray:
    """Rows to train centroids on: all of them, or a seeded uniform sample of k * sample_per_centroid."""
    if sample_per_centroid is None or n <= k * sample_per_centroid:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k * sample_per_centroid, replace=False))


def kmeans(points: np.ndarray, k: int, n_iter: int = 20, seed: int = 0, sample_per_centroid: int | None = 256,
           backend: str = "faiss") -> KMeansResult:
    """Lloyd's K-means with L2 distance. `k` is capped at the number of points."""
    x = np.ascontiguousarray(points, dtype=np.float32)
    n = len(x)
    if n == 0:
        return KMeansResult(np.zeros(0, dtype=np.int64), np.zeros((0, x.shape[1]), np.float32), 0)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    train = x[training_sample(n, k, sample_per_centroid, rng)]
    if backend == "faiss":
        centers = _faiss_centers(train, k, n_iter, seed)
    elif backend == "sklearn":
        centers = _sklearn_centers(train, k, n_iter, seed)
    else:
        raise ValueError(f"unknown K-means backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return KMeansResult(assign(x, centers), centers, len(train))


def assign(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """The nearest center of every point (squared L2), computed in batches."""
    labels = np.empty(len(points), dtype=np.int64)
    c = centers.astype(np.float32)
    c_sq = (c * c).sum(axis=1)
    for start in range(0, len(points), ASSIGN_BATCH):
        batch = points[start:start + ASSIGN_BATCH]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every center of a point.
        labels[start:start + len(batch)] = np.argmin(c_sq[None, :] - 2.0 * (batch @ c.T), axis=1)
    return labels


def _faiss_centers(train: np.ndarray, k: int, n_iter: int, seed: int) -> np.ndarray:
    try:
        import faiss
    except ImportError:  # the fallback keeps selection working where faiss has no wheel
        return _sklearn_centers(train, k, n_iter, seed)
    # faiss-gpu trains on every visible GPU (faiss-cpu reports none). Assignment stays ours, in batches.
    on_gpu = {"gpu": True} if getattr(faiss, "get_num_gpus", lambda: 0)() > 0 else {}
    km = faiss.Kmeans(train.shape[1], k, niter=n_iter, seed=seed, verbose=False,
                      max_points_per_centroid=max(1, -(-len(train) // k)), min_points_per_centroid=1, **on_gpu)
    km.train(train)
    return np.asarray(km.centroids, dtype=np.float32)


def _sklearn_centers(train: np.ndarray, k: int, n_iter: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, max_iter=n_iter, n_init=1, init="random", random_state=seed, algorithm="lloyd", tol=0.0)
    km.fit(train)
    return km.cluster_centers_.astype(np.float32)
