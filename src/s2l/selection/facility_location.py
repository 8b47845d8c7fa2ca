"""Facility location, the coverage baseline of the S2L paper: the subset that best represents the pool.

    F(S) = sum over examples i of  max over j in S of  sim(i, j),    sim(i, j) = exp(-|x_i - x_j|^2 / (2 sigma^2))

x is the trajectory S2L clusters (`snapshots`, the trained snapshots 1…T by default; raw losses), sigma the
`bandwidth`: by default the median L2 distance over the pairs of a seeded sample of 1,000 usable examples.
F is monotone submodular, and greedy maximisation (add the example with the largest gain F(S + j) - F(S),
`budget` times) reaches at least 1 - 1/e of the best subset of that size.

    epsilon = 0     the paper's exact greedy: every remaining example is a candidate at every step
                    (budget x N x N similarities: pools of up to a few thousand examples)
    epsilon > 0     stochastic greedy (Mirzasoleiman et al., "Lazier than lazy greedy", AAAI 2015): each step
                    draws ceil(N / budget * ln(1 / epsilon)) candidates from the remaining examples and adds
                    the best of them; 1 - 1/e - epsilon of the optimum in expectation, for N ln(1 / epsilon)
                    gains in all instead of N x budget

Gains are exact and computed blockwise, never as an N x N matrix: the examples are split into blocks of at
most 32 (halving the widest feature), and a candidate reads only the blocks where some member could still
gain, i.e. lies within its reach sqrt(-ln coverage) of the candidate, coverage being max_{j in S} sim(i, j)
(`_Blocks`). The members of the other blocks would add exactly 0, so the gains are those of the full sums;
once most examples are covered, a candidate reads little more than its neighbourhood. Evaluation is lazy
(Minoux): a candidate's last gain bounds its gain now, so one whose bound is below the best gain found in
the step is not recomputed; the pick is the same.

`per_source` splits the budget over sources as S2L does and covers each source on its own. Outputs:
scores_ is each selected example's gain when it was added, labels_ the selected example that covers an
example best (its step in the greedy order), details_["coverage"] that best similarity.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from s2l.errors import InputError
from s2l.selection.base import Selector, register
from s2l.selection.s2l import snapshot_columns, source_groups, source_quotas
from s2l.trajectories.matrix import Trajectories

BANDWIDTH_SAMPLE = 1000  # examples whose pairwise distances give the median bandwidth
BLOCK_SIZE = 32  # examples per block of the gain computation
PAIRS_PER_BATCH = 1 << 20  # (candidate, example) similarities computed at once
BOUNDS_PER_BATCH = 1 << 22  # (candidate, block) bounds computed at once
MARGIN = 1e-6  # reaches are taken at coverage - MARGIN: a skipped member would gain less than -MARGIN


@register("facility-location", "Facility location: greedy coverage of the loss trajectories (RBF similarity), "
          "the S2L paper's submodular baseline")
class FacilityLocation(Selector):
    """Parameters:
        snapshots            trajectory columns, as S2L: "trained" (1…T), "all" (0…T), or a list
        per_source           split the budget over sources as S2L does and cover each source on its own
        epsilon              stochastic greedy: N / budget * ln(1/epsilon) candidates a step; 0 = exact greedy
        bandwidth            RBF sigma; none = median pairwise distance of a seeded sample of 1,000 examples
        seed                 the bandwidth sample and the candidates drawn at each step
    """

    manifest_attributes = ("snapshot_columns_", "bandwidth_", "source_quotas_", "coverage_")

    def __init__(self, snapshots: str | list[int] = "trained", per_source: bool = False, epsilon: float = 0.1,
                 bandwidth: float | None = None, seed: int = 0):
        self.snapshots = snapshots
        self.per_source = per_source
        self.epsilon = epsilon
        self.bandwidth = bandwidth
        self.seed = seed

    def _fit(self, t: Trajectories) -> None:
        if not 0 <= self.epsilon < 1:
            raise InputError(f"epsilon must be in [0, 1) (0: exact greedy), got {self.epsilon}", parameter="epsilon")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise InputError(f"the bandwidth must be positive, got {self.bandwidth}", parameter="bandwidth")
        self.snapshot_columns_ = snapshot_columns(self.snapshots, t.losses.shape[1])
        rows = self._selectable_rows()
        x = t.losses[:, self.snapshot_columns_]
        if self.bandwidth is None:
            self.bandwidth_ = median_distance(x[rows], np.random.default_rng(self.seed))
        else:
            self.bandwidth_ = float(self.bandwidth)
        self._z = np.zeros(x.shape, np.float32)  # scaled so that sim = exp(-|z_i - z_j|^2)
        self._z[rows] = x[rows] / (self.bandwidth_ * math.sqrt(2.0))
        self.groups_ = source_groups(self.sources_ if self.per_source else None, rows)

    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        quotas = source_quotas(self.groups_, count)
        if self.per_source:
            self.source_quotas_ = quotas
        self.scores_ = np.full(len(self.ids_), np.nan)
        self.labels_ = np.full(len(self.ids_), -1, dtype=np.int64)
        coverage = np.full(len(self.ids_), np.nan)
        chosen, steps = [], 0
        for name, members in self.groups_.items():
            if not quotas[name]:
                continue
            with _one_blas_thread():
                picks, gains, cover, facility = greedy(self._z[members], quotas[name], self.epsilon, rng)
            chosen.append(members[picks])
            self.scores_[members[picks]] = gains
            coverage[members] = cover
            self.labels_[members] = np.where(facility >= 0, facility + steps, -1)
            steps += len(picks)
        self.details_ = {"coverage": coverage}
        covered = coverage[np.isfinite(coverage)]
        self.coverage_ = float(covered.mean()) if len(covered) else 0.0  # F(S) / N
        return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def _one_blas_thread():
    """The matrix products here are small: more BLAS threads cost more than they give, and spin on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def median_distance(x: np.ndarray, rng: np.random.Generator, sample: int = BANDWIDTH_SAMPLE) -> float:
    """The median L2 distance between the pairs of a seeded sample of `sample` rows (1.0 if all coincide)."""
    from scipy.spatial.distance import pdist

    rows = np.sort(rng.choice(len(x), size=sample, replace=False)) if len(x) > sample else np.arange(len(x))
    distances = pdist(x[rows]) if len(rows) > 1 else np.zeros(0)
    positive = distances[distances > 0]
    median = float(np.median(distances)) if len(distances) else 0.0
    return median if median > 0 else (float(np.median(positive)) if len(positive) else 1.0)


def greedy(z: np.ndarray, k: int, epsilon: float, rng: np.random.Generator):
    """Maximise F(S) = sum_i max_{j in S} exp(-|z_i - z_j|^2) over |S| = k: exact greedy for epsilon = 0, else
    stochastic greedy. Returns the picks in greedy order (rows of z), their gains, every row's coverage
    max_{j in S} sim and its best facility (a position in the picks; -1 where the similarity underflows).
    Ties go to the earlier row (exact) or the earlier draw (stochastic)."""
    n = len(z)
    blocks = _Blocks(z)
    cover = np.zeros(n, np.float32)  # in block order, as everything below
    facility = np.full(n, -1, dtype=np.int64)
    chosen = np.zeros(n, dtype=bool)
    remaining, left = blocks.position[np.arange(n)], n  # candidates, in row order; the first `left` remain
    size = n if epsilon == 0 else math.ceil(n / k * math.log(1.0 / epsilon))
    picks, gains = np.empty(k, dtype=np.int64), np.empty(k)
    bound = np.full(n, np.inf)  # each position's last gain: submodularity keeps its gain now below it
    for step in range(k):
        if size >= left:
            drawn = None
            candidates = blocks.position[np.flatnonzero(~chosen)]  # every remaining one, in row order
        else:
            drawn = rng.choice(left, size=size, replace=False)
            candidates = remaining[drawn]
        # Lazy evaluation: the fresh candidates and the one with the highest bound first, then only those whose
        # bound reaches the best gain found; the others cannot be the argmax, so the pick is the same.
        first = np.isinf(bound[candidates])
        if not first.all():
            first[np.argmax(np.where(first, -np.inf, bound[candidates]))] = True
        g = np.full(len(candidates), -np.inf)
        g[first] = blocks.gains(candidates[first], cover)
        again = ~first & (bound[candidates] >= g.max())
        if again.any():
            g[again] = blocks.gains(candidates[again], cover)
        bound[candidates[first | again]] = g[first | again]
        best = int(np.argmax(g))
        j = int(candidates[best])
        blocks.add(j, cover, facility, step)
        picks[step], gains[step] = blocks.order[j], g[best]
        chosen[blocks.order[j]] = True
        at = int(np.flatnonzero(remaining[:left] == j)[0]) if drawn is None else int(drawn[best])
        remaining[at], remaining[left - 1] = remaining[left - 1], remaining[at]
        left -= 1
    inverse = blocks.position  # back to row order
    return picks, gains, cover[inverse].astype(np.float64), facility[inverse]


class _Blocks:
    """The rows of z in blocks of at most BLOCK_SIZE (each split halves a block along its widest feature).

    A candidate c raises member i's coverage only if |z_c - z_i| < reach_i = sqrt(-ln cover_i), hence only if
    c is nearer the block's centre than the block's limit, max over its members of |z_i - centre| + reach_i;
    the members of the other blocks would add exactly 0 to c's gain and are not read. Reaches are taken at
    cover_i - MARGIN, a little wider than exact, which also absorbs the rounding of the distances."""

    def __init__(self, z: np.ndarray):
        n = len(z)
        order = np.arange(n)
        starts, stack = [], [(0, n)]
        while stack:
            lo, hi = stack.pop()
            if hi - lo <= BLOCK_SIZE:
                starts.append(lo)
                continue
            part = z[order[lo:hi]]
            widest = int(np.argmax(part.max(axis=0) - part.min(axis=0)))
            half = (hi - lo) // 2
            order[lo:hi] = order[lo:hi][np.argpartition(part[:, widest], half)]
            stack += [(lo + half, hi), (lo, lo + half)]  # the lower half first: blocks in position order
        self.order = order  # position -> row
        self.position = np.empty(n, dtype=np.int64)
        self.position[order] = np.arange(n)  # row -> position
        self.z = np.ascontiguousarray(z[order], dtype=np.float32)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.sizes = np.diff(np.append(self.starts, n))
        z64 = self.z.astype(np.float64)
        self.centers = np.add.reduceat(z64, self.starts, axis=0) / self.sizes[:, None]
        # Each member's distance to its block's centre, rounded up.
        spread = np.sqrt(((z64 - np.repeat(self.centers, self.sizes, axis=0)) ** 2).sum(axis=1))
        self.spread = spread * (1 + 1e-9) + 1e-9
        self.center_norms = (self.centers ** 2).sum(axis=1)
        self.centers_x2 = -2.0 * self.centers
        self.limit = np.full(len(self.starts), np.inf)  # squared; nothing is covered yet
        self._last: dict = {}

    def gains(self, candidates: np.ndarray, cover: np.ndarray) -> np.ndarray:
        """F(S + c) - F(S) for each candidate position c: sum_i max(sim(i, c) - cover_i, 0)."""
        out = np.empty(len(candidates))
        per_bounds = max(1, BOUNDS_PER_BATCH // len(self.starts))
        for a in range(0, len(candidates), per_bounds):
            part = candidates[a:a + per_bounds]
            need = self._need(part)
            if len(part) == len(candidates):
                self._last.update(zip(part.tolist(), need))  # for add(), which follows with the same limits
            counts = need @ self.sizes
            ends = np.cumsum(counts)
            b = 0
            while b < len(part):
                e = max(b + 1, int(np.searchsorted(ends, (ends[b - 1] if b else 0) + PAIRS_PER_BATCH, "right")))
                _, blocks = np.nonzero(need[b:e])
                index = self._members(blocks)
                diff = self.z[index]
                at = 0
                for c, count in zip(part[b:e].tolist(), counts[b:e].tolist()):  # each candidate's members in a run
                    diff[at:at + count] -= self.z[c]
                    at += count
                gain = np.exp(-np.einsum("ij,ij->i", diff, diff))
                gain -= cover[index]
                np.maximum(gain, 0, out=gain)
                out[a + b:a + e] = np.add.reduceat(gain.astype(np.float64), np.append(0, np.cumsum(counts[b:e - 1])))
                b = e
        return out

    def add(self, j: int, cover: np.ndarray, facility: np.ndarray, step: int) -> None:
        """Position j joins S: raise the coverage of the members it covers best, then their blocks' limits."""
        need = self._last.get(j)
        self._last = {}
        blocks = np.flatnonzero(self._need(np.asarray([j]))[0] if need is None else need)
        index = self._members(blocks)
        diff = self.z[index] - self.z[j]
        sim = np.exp(-np.einsum("ij,ij->i", diff, diff))
        better = sim > cover[index]
        cover[index[better]] = sim[better]
        facility[index[better]] = step
        covered = cover[index].astype(np.float64) - MARGIN
        reach = np.full(len(index), np.inf)
        reach[covered > 0] = np.sqrt(-np.log(covered[covered > 0]))
        self.limit[blocks] = np.maximum.reduceat(self.spread[index] + reach, np.cumsum(self.sizes[blocks])
                                                 - self.sizes[blocks]) ** 2

    def _need(self, candidates: np.ndarray) -> np.ndarray:
        """(candidate, block): is the candidate nearer the block's centre than the block's limit?"""
        c = self.z[candidates].astype(np.float64)
        d2 = c @ self.centers_x2.T  # -2 c.m
        d2 += self.center_norms
        d2 += (c * c).sum(axis=1)[:, None]
        return d2 < self.limit

    def _members(self, blocks: np.ndarray) -> np.ndarray:
        """The member positions of `blocks`, concatenated."""
        counts = self.sizes[blocks]
        return np.repeat(self.starts[blocks] - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))
