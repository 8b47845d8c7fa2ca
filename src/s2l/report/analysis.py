"""The numbers a report shows, computed without drawing anything.

Each function returns plain values (or a reason why it cannot), so the figures and the HTML only
present them, and tests can compare them with the inputs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from s2l.errors import InputError
from s2l.report.inputs import Run, Selection

NO_SOURCE = "(none)"
DEFAULT_MAX_CLUSTERS = 8
EXAMPLES_PER_CLUSTER = 10  # the report's own clustering: about this many examples per cluster at least


# -- snapshots ----------------------------------------------------------------------------------------------
def snapshot_axis(snapshots: list[dict], n_columns: int) -> tuple[np.ndarray, str]:
    """x positions of the trajectory columns: each snapshot's epoch when all are known, else its index."""
    epochs = [s.get("epoch") for s in snapshots] if len(snapshots) == n_columns else [None]
    if all(e is not None for e in epochs):
        return np.asarray(epochs, dtype=float), "epoch"
    return np.arange(n_columns, dtype=float), "snapshot (epochs unknown)"


# -- the pool ------------------------------------------------------------------------------------------------
def source_names(run: Run) -> np.ndarray:
    sources = run.trajectories.sources
    if sources is None:
        return np.full(run.n, NO_SOURCE, dtype=object)
    return np.asarray([NO_SOURCE if s is None else str(s) for s in sources], dtype=object)


def source_counts(run: Run, mask: np.ndarray | None = None) -> dict[str, int]:
    """Examples per source (largest first, then by name); `mask` restricts to some rows."""
    names = source_names(run)
    if mask is not None:
        names = names[mask]
    counts = Counter(names.tolist())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def exclusions(run: Run) -> dict[str, int]:
    """Why examples are left out of the trajectories, and other things the recording flagged."""
    manifest_excluded = run.manifest.get("excluded") or {}
    counts = Counter(r for r in run.excluded.tolist() if r)
    out = {}
    if manifest_excluded.get("duplicate"):
        out["duplicate (kept once, not in the run)"] = int(manifest_excluded["duplicate"])
    for reason, n in sorted(counts.items()):
        out[reason] = int(n)
    return out


@dataclass
class PoolSummary:
    records: int | None  # lines/rows of the input file, duplicates included
    examples: int  # distinct examples in the run
    usable: int  # with a loss at every snapshot
    duplicates: int
    truncated_kept: int  # truncated to the max length, still with response tokens
    sources: dict[str, int] | None  # None when the pool has no source field
    excluded: dict[str, int]
    lengths: np.ndarray  # response tokens of the usable examples
    length_stats: dict[str, float]


def pool_summary(run: Run) -> PoolSummary:
    dataset = run.manifest.get("dataset") or {}
    usable = run.usable
    lengths = np.asarray(run.trajectories.n_tokens)[usable].astype(float)
    stats = describe(lengths)
    has_sources = run.trajectories.sources is not None
    return PoolSummary(
        records=dataset.get("records"),
        examples=run.n,
        usable=int(usable.sum()),
        duplicates=int((run.manifest.get("excluded") or {}).get("duplicate", 0) or 0),
        truncated_kept=int((run.truncated & usable).sum()),
        sources=source_counts(run) if has_sources else None,
        excluded=exclusions(run),
        lengths=lengths,
        length_stats=stats,
    )


def describe(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"n": len(values), "mean": float(values.mean()), "min": q[0], "p10": q[1], "median": q[2], "p90": q[3],
            "max": q[4]}


# -- clusters ------------------------------------------------------------------------------------------------
@dataclass
class Clusters:
    labels: np.ndarray  # (N,) cluster per run row, -1 where none
    groups: dict[str, list[int]]  # panel -> cluster ids, largest first (a source, or "pool")
    sizes: dict[int, int]
    group_of: dict[int, str]
    origin: str  # where the clusters come from, in words
    selection: Selection | None = None  # the selection they come from, if any
    warnings: list[str] = field(default_factory=list)


def default_clusters(n_usable: int) -> int:
    return max(1, min(DEFAULT_MAX_CLUSTERS, n_usable // EXAMPLES_PER_CLUSTER))


def find_clusters(run: Run, selections: list[Selection], clusters: int | None, seed: int) -> Clusters | str:
    """The S2L clusters to draw: an s2l (or cluster-random) selection's, unless `clusters` is given;
    else S2L's K-means fitted here, pooled over sources. A string says why there are none."""
    t = run.trajectories
    usable = run.usable
    if t.losses.shape[1] < 2:
        return "the run has a single snapshot: an example's trajectory is one number, so there are no curves to draw"
    if usable.sum() == 0:
        return "no example has a loss at every snapshot"
    names = source_names(run)
    if clusters is None:
        for selection in selections:
            if selection.method in ("s2l", "cluster-random") and selection.clusters is not None:
                labels = np.where(usable, selection.clusters, -1)
                per_source = bool((selection.manifest.get("params") or {}).get("per_source", True))
                per_source = per_source and t.sources is not None
                params = selection.manifest.get("params") or {}
                origin = (f"the clusters of the selection {selection.name} ({selection.method}, K = "
                          f"{params.get('n_clusters', '?')}{' per source' if per_source else ''}, seed "
                          f"{selection.manifest.get('seed', '?')}), read from its scores.parquet")
                return _group(labels, names if per_source else None, origin, selection)
    from s2l.selection import make_selector

    k = clusters if clusters is not None else default_clusters(int(usable.sum()))
    if k < 1:
        raise InputError(f"the number of clusters must be at least 1, got {k}", "clusters")
    selector = make_selector("s2l", n_clusters=int(k), per_source=False, seed=seed).fit(t)
    origin = (f"S2L's K-means fitted for this report on the trained snapshots, pooled over sources: K = "
              f"{len(selector.cluster_centers_)}, seed {seed}"
              + ("" if clusters is not None else " (K = min(8, usable examples / 10); a report's `clusters` option "
                                                 "sets it)"))
    result = _group(selector.labels_, None, origin, None)
    result.warnings = list(selector.warnings_)
    return result


def _group(labels: np.ndarray, names: np.ndarray | None, origin: str, selection: Selection | None) -> Clusters:
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    sizes = {int(c): int(n) for c, n in zip(ids, counts)}
    group_of = {}
    for c in sizes:
        if names is None:
            group_of[c] = "pool"
        else:
            members = names[labels == c]
            group_of[c] = Counter(members.tolist()).most_common(1)[0][0]
    groups: dict[str, list[int]] = {}
    for c in sorted(sizes, key=lambda c: (-sizes[c], c)):
        groups.setdefault(group_of[c], []).append(c)
    groups = dict(sorted(groups.items(), key=lambda kv: (-sum(sizes[c] for c in kv[1]), kv[0])))
    return Clusters(labels, groups, sizes, group_of, origin, selection)


# -- learning percentage ---------------------------------------------------------------------------------
@dataclass
class LP:
    values: np.ndarray  # (N,) LP(1), NaN where excluded
    excluded: dict[str, int]  # reason -> count
    below: int  # LP < 0
    within: int  # 0 <= LP <= 1
    above: int  # LP > 1
    columns: dict[str, int]
    stats: dict[str, float]


def learning_percentage(run: Run) -> LP | str:
    """LP(1) of every example, as the lp selector computes it; a string says why it cannot be."""
    from s2l.selection import make_selector
    from s2l.selection.lp import epoch_columns

    t = run.trajectories
    try:
        first, after, last = epoch_columns(t.snapshots, 1)
    except InputError as e:
        return e.problem
    if last == after:
        return ("the run ends at epoch 1, so LP(1) = (P0 - P1) / (P0 - Pn) is 1 for every example; "
                "it needs snapshots at epochs 0, 1 and a later one")
    selector = make_selector("lp", diversity=False).fit(t)
    values = selector.scores_
    finite = np.isfinite(values)
    # Rows without a loss are excluded for the reason the recording gave (an empty response, ...).
    reasons = np.where((selector.excluded_ == "no_response_tokens") & (run.excluded != ""), run.excluded,
                       selector.excluded_)
    excluded = dict(sorted(Counter(r for r in reasons if r).items()))
    return LP(values=values, excluded=excluded, below=int((values[finite] < 0).sum()),
              within=int(((values[finite] >= 0) & (values[finite] <= 1)).sum()),
              above=int((values[finite] > 1).sum()), columns=dict(selector.epoch_columns_), stats=describe(values))


# -- data map ---------------------------------------------------------------------------------------------
@dataclass
class DataMap:
    confidence: np.ndarray  # (N,) NaN where excluded
    variability: np.ndarray
    columns: list[int]


def data_map(run: Run) -> DataMap | str:
    from s2l.selection import make_selector

    t = run.trajectories
    if t.losses.shape[1] < 3:
        return (f"the run has {t.losses.shape[1]} snapshot(s); a data map needs at least two trained snapshots "
                "(besides the base model) for an example's variability to mean anything")
    if run.usable.sum() == 0:
        return "no example has a loss at every snapshot"
    selector = make_selector("cartography-ambiguous").fit(t)
    return DataMap(selector.details_["confidence"], selector.details_["variability"],
                   list(range(1, t.losses.shape[1])))


# -- selections -------------------------------------------------------------------------------------------
def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def overlap_matrix(selections: list[Selection]) -> tuple[np.ndarray, np.ndarray]:
    """(Jaccard, intersection sizes), selections x selections."""
    n = len(selections)
    jac = np.ones((n, n))
    inter = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            inter[i, j] = int((selections[i].selected & selections[j].selected).sum())
            jac[i, j] = jaccard(selections[i].selected, selections[j].selected)
    return jac, inter


def final_losses(run: Run) -> np.ndarray:
    losses = run.trajectories.losses[:, -1]
    return np.where(run.usable, losses, np.nan)


# -- proxy -> target -------------------------------------------------------------------------------------
def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (scipy's, ties averaged); NaN with fewer than 3 pairs or no spread."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


@dataclass
class Agreement:
    n_common: int  # examples in both runs
    loss_pairs: tuple[np.ndarray, np.ndarray]  # final losses (proxy, target) on examples both can score
    loss_rho: float
    lp_pairs: tuple[np.ndarray, np.ndarray] | None
    lp_rho: float | None
    lp_missing: str | None  # why LP cannot be compared
    notes: list[str]


def agreement(run: Run, target: Run, proxy_lp: LP | str) -> Agreement:
    position = {example_id: i for i, example_id in enumerate(target.ids)}
    rows = np.fromiter((position.get(i, -1) for i in run.ids), dtype=np.int64, count=run.n)
    common = rows >= 0
    proxy_rows = np.flatnonzero(common)
    target_rows = rows[common]
    notes = []
    if run.data_fingerprint != target.data_fingerprint:
        notes.append("the target run recorded a different data file (its fingerprint differs); the two are compared "
                     "on the examples both hold")
    both = run.usable[proxy_rows] & target.usable[target_rows]
    pl = final_losses(run)[proxy_rows[both]]
    tl = final_losses(target)[target_rows[both]]
    target_lp = learning_percentage(target)
    lp_pairs = lp_rho = lp_missing = None
    if isinstance(proxy_lp, str):
        lp_missing = "the proxy run has no LP(1): " + proxy_lp
    elif isinstance(target_lp, str):
        lp_missing = "the target run has no LP(1): " + target_lp
    else:
        a, b = proxy_lp.values[proxy_rows], target_lp.values[target_rows]
        ok = np.isfinite(a) & np.isfinite(b)
        lp_pairs = (a[ok], b[ok])
        lp_rho = spearman(*lp_pairs)
    return Agreement(int(common.sum()), (pl, tl), spearman(pl, tl), lp_pairs, lp_rho, lp_missing, notes)
