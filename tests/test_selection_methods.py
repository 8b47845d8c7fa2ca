"""Selection methods against hand-computed cases, and the contract every method keeps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2l.errors import InputError
from s2l.selection import METHODS, make_selector, parse_budget, resolve_budget
from s2l.selection.lp import learning_percentage, proportional_counts
from s2l.selection.s2l import cluster_counts, split_budget
from s2l.trajectories.matrix import Trajectories

EPOCHS_0_TO_2 = [{"epoch": 0.0}, {"epoch": 1.0}, {"epoch": 2.0}]


def table(losses, sources=None, n_tokens=None, snapshots=None, confidence=None, loss_alone=None) -> Trajectories:
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    as_matrix = lambda a: None if a is None else np.asarray(a, dtype=np.float64)  # noqa: E731
    return Trajectories(
        ids=np.asarray([f"e{i}" for i in range(n)], dtype=object), losses=losses,
        n_tokens=np.asarray(n_tokens if n_tokens is not None else [10] * n),
        sources=None if sources is None else np.asarray(sources, dtype=object),
        snapshots=snapshots if snapshots is not None else [{"epoch": float(k)} for k in range(losses.shape[1])],
        confidence=as_matrix(confidence), loss_alone=as_matrix(loss_alone))


# -- budgets ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [("3000", 3000), ("0.1", 0.1), ("10%", 0.1), ("1", 1), ("1.0", 1.0),
                                            (7, 7), (0.5, 0.5)])
def test_budget_parses_counts_and_fractions(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "0.0", "1.5", "150%", "abc", "", "nan"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(InputError):
        parse_budget(text)


def test_fractions_round_to_the_nearest_count_of_usable_examples():
    assert resolve_budget("0.1", 95) == 10  # 9.5 rounds up
    assert resolve_budget("0.3", 96) == 29  # 28.8
    assert resolve_budget("0.001", 96) == 1  # never zero
    assert resolve_budget("1.0", 96) == 96
    with pytest.raises(InputError, match="larger than the 96"):
        resolve_budget("97", 96)
    with pytest.raises(InputError, match="this method can use 90"):
        resolve_budget("95", 96, n_selectable=90)


# -- S2L: the allocation, by hand -----------------------------------------------------------------------------
def test_split_budget_smallest_first_with_remaining_over_left():
    # sizes 2, 10, 10 and 15: the 2-group gives all it has (share 5), then 13 // 2 = 6, then the last 7.
    assert split_budget([10, 2, 10], 15).tolist() == [6, 2, 7]
    # 7 over three groups of 5: 7 // 3 = 2, 5 // 2 = 2, then 3: uneven budgets put the remainder last.
    assert split_budget([5, 5, 5], 7).tolist() == [2, 2, 3]
    # sources smaller than their share roll the rest on: 1 and 2 give all, 3 takes 10 - 3 = 7 capped at... 20.
    assert split_budget([20, 1, 2], 10).tolist() == [7, 1, 2]
    # more budget than the groups hold: every group gives all it has.
    assert split_budget([3, 4], 10).tolist() == [3, 4]
    assert split_budget([], 5).tolist() == []


def test_clusters_of_two_or_fewer_are_used_only_when_budget_is_left():
    rng = np.random.default_rng(0)
    # Large clusters (3, 10, 4) take 9 as 3, 3, 3; the 1- and 2-member clusters get nothing.
    assert cluster_counts([1, 2, 3, 10, 4], 9, rng).tolist() == [0, 0, 3, 3, 3]
    # 18 > 17 members in large clusters: all of them, and the one left over comes from the 3 pooled
    # members of the small clusters.
    counts = cluster_counts([1, 2, 3, 10, 4], 18, rng)
    assert counts[2:].tolist() == [3, 10, 4] and counts[:2].sum() == 1
    # Only small clusters: the budget is drawn from all their members pooled.
    counts = cluster_counts([1, 1, 2], 3, rng)
    assert counts.sum() == 3 and (counts <= [1, 1, 2]).all()
    # More budget than members: every member.
    assert cluster_counts([1, 2, 3], 10, rng).tolist() == [1, 2, 3]


def test_the_leftover_is_drawn_from_the_pooled_small_clusters_as_the_reference_does():
    """cluster_counts([3, 1, 1, 2, 2], 5): the 3-member cluster gives 3; the 2 left come from the 6 members
    of the small clusters pooled, so each singleton is drawn with probability 1 - C(5,2)/C(6,2) = 1/3 and a
    pair member as often. Spreading the rest smallest cluster first (1 // 4 = 0 for each singleton) would
    never draw a singleton: [3, 0, 0, 1, 1]."""
    def reference_rule(sizes, n, rng):  # a port of schedules/s2l.py:122-144, counting per cluster
        labels = np.repeat(np.arange(len(sizes)), sizes)
        order = [c for c in np.argsort(sizes, kind="stable") if sizes[c] > 2]
        taken = []
        for i, c in enumerate(order):
            share = n // (len(order) - i)
            members = np.flatnonzero(labels == c)
            pick = rng.choice(members, share, replace=False) if len(members) > share else members
            taken.append(pick)
            n -= len(pick)
        if n > 0:
            pool = np.flatnonzero(np.isin(labels, [c for c in range(len(sizes)) if sizes[c] <= 2]))
            taken.append(rng.choice(pool, n, replace=False))
        return np.bincount(labels[np.concatenate(taken)], minlength=len(sizes))

    trials = 3000
    ours = np.array([cluster_counts([3, 1, 1, 2, 2], 5, np.random.default_rng(s)) for s in range(trials)])
    theirs = np.array([reference_rule([3, 1, 1, 2, 2], 5, np.random.default_rng(s)) for s in range(trials)])
    assert (ours.sum(axis=1) == 5).all() and (ours[:, 0] == 3).all()
    for counts in (ours, theirs):
        drawn = counts.mean(axis=0) / np.array([3, 1, 1, 2, 2])  # how often each member is drawn
        np.testing.assert_allclose(drawn[1:], 1 / 3, atol=0.03)
    np.testing.assert_allclose(ours.mean(axis=0), theirs.mean(axis=0), atol=0.05)


def test_s2l_splits_sources_then_samples_clusters_evenly():
    rng = np.random.default_rng(0)
    # Source "a": two tight blobs of trajectories, 40 and 8 members; source "b": 6 members.
    blob1 = 1.0 + 0.01 * rng.standard_normal((40, 4))
    blob2 = 5.0 + 0.01 * rng.standard_normal((8, 4))
    small = 3.0 + 0.01 * rng.standard_normal((6, 4))
    losses = np.concatenate([blob1, blob2, small])
    sources = ["a"] * 48 + ["b"] * 6
    sel = make_selector("s2l", n_clusters=2, seed=0).fit(table(losses, sources))
    # The two blobs of "a" are its two clusters.
    labels_a = sel.labels_[:48]
    assert len(set(labels_a[:40])) == 1 and len(set(labels_a[40:])) == 1 and labels_a[0] != labels_a[40]
    ids = sel.select(16)
    # Budget 16 over sources: b (6 members) gets 16 // 2 = 8 capped at 6; a gets 10.
    assert sel.source_quotas_ == {"a": 10, "b": 6}
    chosen = set(ids.tolist())
    from_blob1 = sum(f"e{i}" in chosen for i in range(40))
    from_blob2 = sum(f"e{i}" in chosen for i in range(40, 48))
    # Inside "a", clusters smallest first: 8-blob gets 10 // 2 = 5, the 40-blob the other 5.
    assert (from_blob1, from_blob2) == (5, 5)
    assert all(f"e{i}" in chosen for i in range(48, 54))


def test_s2l_clusters_the_trained_snapshots_not_the_base_model_by_default():
    losses = np.zeros((20, 4))
    losses[:, 0] = np.arange(20)  # the base model's loss alone would split the pool
    losses[10:, 1:] = 3.0  # the trained snapshots split it differently
    sel = make_selector("s2l", n_clusters=2, per_source=False).fit(table(losses))
    assert sel.snapshot_columns_ == [1, 2, 3]
    assert len(set(sel.labels_[:10])) == 1 and len(set(sel.labels_[10:])) == 1 and sel.labels_[0] != sel.labels_[10]
    everything = make_selector("s2l", n_clusters=2, per_source=False, snapshots="all").fit(table(losses))
    assert everything.snapshot_columns_ == [0, 1, 2, 3]


def test_s2l_no_per_source_clusters_the_whole_pool_and_standardize_z_scores_each_column():
    rng = np.random.default_rng(1)
    losses = rng.random((60, 5))
    sources = ["a"] * 50 + ["b"] * 10
    pooled = make_selector("s2l", n_clusters=4, per_source=False).fit(table(losses, sources))
    assert list(pooled.groups_) == [""] and len(pooled.cluster_centers_) == 4
    per_source = make_selector("s2l", n_clusters=4).fit(table(losses, sources))
    assert list(per_source.groups_) == ["a", "b"] and len(per_source.cluster_centers_) == 8

    # Two groups apart in columns 2 and 3 (by about 1), mixed in column 1, which spans 100: raw K-means
    # splits column 1; z-scored, column 1 weighs as much as each of the others and the groups are the clusters.
    rng = np.random.default_rng(0)
    group = rng.permutation(np.repeat([0, 1], 30))
    losses = np.column_stack([rng.random(60), 100 * rng.random(60), group + 0.01 * rng.random(60),
                              group + 0.01 * rng.random(60)])
    losses = np.concatenate([losses, np.full((1, 4), np.nan)])  # no response tokens: not in the mean or std
    raw = make_selector("s2l", n_clusters=2, per_source=False).fit(table(losses))
    z = make_selector("s2l", n_clusters=2, per_source=False, standardize=True).fit(table(losses))

    def same_partition(labels, truth):
        return len(set(zip(labels, truth))) == len(set(labels)) == len(set(truth))

    assert same_partition(z.labels_[:60], group) and not same_partition(raw.labels_[:60], group)
    # The same as clustering columns z-scored by hand (over the examples with a loss).
    by_hand = (losses - np.nanmean(losses, axis=0)) / np.nanstd(losses, axis=0)
    plain = make_selector("s2l", n_clusters=2, per_source=False).fit(table(by_hand))
    assert (z.labels_ == plain.labels_).all()
    np.testing.assert_allclose(z.cluster_centers_, plain.cluster_centers_, rtol=1e-6)


def test_s2l_warns_when_sources_are_too_small_for_the_clusters():
    sel = make_selector("s2l").fit(table(np.random.default_rng(0).random((30, 3)), ["a"] * 30))
    assert len(sel.cluster_centers_) == 30  # K capped at the source's size
    assert any("30 examples for 100 clusters" in w for w in sel.warnings_)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_backends_find_separated_clusters(backend):
    from s2l.selection.clustering import kmeans

    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (50, 3)), rng.normal(10, 0.1, (30, 3))])
    result = kmeans(points, 2, seed=0, backend=backend)
    assert len(set(result.labels[:50])) == 1 and len(set(result.labels[50:])) == 1
    assert result.labels[0] != result.labels[50]


def test_kmeans_trains_on_an_explicit_seeded_sample():
    from s2l.selection.clustering import kmeans, training_sample

    rng = np.random.default_rng(0)
    assert training_sample(100, 2, 256, rng).tolist() == list(range(100))  # fewer points than the sample: all
    a = training_sample(1000, 2, 100, np.random.default_rng(3))
    b = training_sample(1000, 2, 100, np.random.default_rng(3))
    assert len(a) == 200 and (a == b).all()
    points = rng.random((3000, 4))
    assert kmeans(points, 5, sample_per_centroid=100).n_train == 500
    assert kmeans(points, 5, sample_per_centroid=None).n_train == 3000


# -- learning percentage, by hand -----------------------------------------------------------------------------
def lp_table():
    P = np.array([
        [4.0, 2.0, 1.0],  # LP = (4-2)/(4-1) = 2/3; LP_app = (4-2)/4 = 1/2
        [2.0, 3.0, 1.0],  # got worse in epoch 1: LP = (2-3)/(2-1) = -1; LP_app = -1/2
        [4.0, 1.0, 2.0],  # learnt past the end: LP = (4-1)/(4-2) = 3/2; LP_app = 3/4
        [3.0, 2.0, 3.0],  # P_0 == P_n: no LP (excluded); LP_app = 1/3
        [5.0, 4.0, 1.0],  # LP = 1/4; LP_app = 1/5
    ])
    losses = np.log(P)
    losses = np.concatenate([losses, [[np.nan, np.nan, np.nan]]])  # no response tokens
    return table(losses, snapshots=EPOCHS_0_TO_2)


def test_learning_percentage_values_by_hand():
    t = lp_table()
    lp = learning_percentage(t.losses, 0, 1, 2)
    np.testing.assert_allclose(lp[[0, 1, 2, 4]], [2 / 3, -1.0, 1.5, 0.25], rtol=1e-12)
    assert np.isnan(lp[3])
    app = learning_percentage(t.losses, 0, 1, None)
    np.testing.assert_allclose(app[:5], [0.5, -0.5, 0.75, 1 / 3, 0.2], rtol=1e-12)


def test_lp_keeps_the_lowest_and_counts_exclusions():
    sel = make_selector("lp", diversity=False).fit(lp_table())
    assert sel.exclusion_counts() == {"no_response_tokens": 1, "zero_denominator": 1}
    # LP: e1 -1, e4 0.25, e0 0.667, e2 1.5 → the two lowest are e1 and e4 (returned in input order).
    assert sel.select(2).tolist() == ["e1", "e4"]
    with pytest.raises(InputError, match="this method can use 4"):
        sel.select(5)
    app = make_selector("lp-app", diversity=False).fit(lp_table())
    assert app.exclusion_counts() == {"no_response_tokens": 1}
    # LP_app: e1 -0.5, e4 0.2, e3 1/3, e0 0.5, e2 0.75
    assert app.select(3).tolist() == ["e1", "e3", "e4"]


def test_lp_reads_epochs_from_snapshot_positions():
    # Snapshots at epochs 0, 0.5, 1, 1.5, 2: P_1 is column 2 and P_n column 4, not columns 1 and 2.
    P = np.array([[4.0, 3.5, 2.0, 1.5, 1.0]])
    t = table(np.log(np.repeat(P, 3, axis=0)), snapshots=[{"epoch": e} for e in (0, 0.5, 1, 1.5, 2)])
    sel = make_selector("lp", diversity=False).fit(t)
    assert sel.epoch_columns_ == {"p0": 0, "p_epoch": 2, "p_n": 4}
    np.testing.assert_allclose(sel.scores_, 2 / 3)


def test_lp_without_epochs_says_what_it_needs():
    t = table(np.ones((4, 3)), snapshots=[{"epoch": None}] * 3)
    with pytest.raises(InputError, match="needs each snapshot's epoch") as e:
        make_selector("lp", diversity=False).fit(t)
    assert e.value.parameter == "snapshot_epochs"


def test_proportional_counts_deliver_the_exact_budget():
    # exact shares 2.5, 1.5, 1.0: floors 2, 1, 1 and the one left goes to the first of the tied remainders.
    assert proportional_counts([5, 3, 2], 5).tolist() == [3, 1, 1]
    assert proportional_counts([10, 10, 10], 10).tolist() == [4, 3, 3]
    assert proportional_counts([1, 1, 1], 3).tolist() == [1, 1, 1]


def test_lp_diversity_takes_the_lowest_share_inside_each_cluster():
    # Two embedding clusters of 6 and 4; LP rises with the row number inside each.
    lp = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.05, 0.7, 0.8, 0.9])
    P1 = 4.0 - 3.0 * lp  # with P_0 = 4 and P_n = 1, LP = (4 - P_1) / 3
    losses = np.log(np.column_stack([np.full(10, 4.0), P1, np.ones(10)]))
    embeddings = np.zeros((10, 2), np.float32)
    embeddings[6:, 0] = 10.0
    sel = make_selector("lp", diversity_clusters=2).fit(table(losses, snapshots=EPOCHS_0_TO_2), embeddings=embeddings)
    # Budget 5 shared 6:4 → 3 and 2: e0, e1, e2 from the first cluster, e6, e7 from the second, although
    # e3 has a lower LP than e7: diversity over pure rank.
    assert sel.select(5).tolist() == ["e0", "e1", "e2", "e6", "e7"]
    plain = make_selector("lp", diversity=False).fit(table(losses, snapshots=EPOCHS_0_TO_2))
    assert plain.select(5).tolist() == ["e0", "e1", "e2", "e3", "e6"]


def test_lp_diversity_without_texts_or_embeddings_is_an_error():
    with pytest.raises(InputError, match="diversity=False") as e:
        make_selector("lp").fit(lp_table())
    assert e.value.parameter == "diversity"


# -- baselines, on a table small enough to check by eye ---------------------------------------------------------
# loss_0 (base), loss_1, loss_2 (final)
BASE = np.array([
    [3.0, 2.0, 1.0],  # e0: final 1.0, drop 2.0
    [3.0, 2.5, 2.0],  # e1: final 2.0, drop 1.0
    [1.0, 0.6, 0.5],  # e2: final 0.5, drop 0.5
    [4.0, 1.0, 0.2],  # e3: final 0.2, drop 3.8
    [2.0, 3.0, 3.0],  # e4: final 3.0, drop -1.0
])
LENGTHS = [5, 50, 20, 10, 30]
# Mean top-1 probability per snapshot: not a function of the gold tokens' loss (e2, the easiest by loss, is the
# least sure of its own predictions at the end; e4, the hardest, is confidently wrong).
CONFIDENCE = np.array([
    [0.5, 0.6, 0.70],
    [0.5, 0.6, 0.80],
    [0.4, 0.5, 0.30],
    [0.4, 0.7, 0.90],
    [0.6, 0.7, 0.95],
])


@pytest.mark.parametrize("method, budget, expected", [
    ("perplexity-low", 2, ["e2", "e3"]),  # final losses 0.2 (e3), 0.5 (e2)
    ("perplexity-high", 2, ["e1", "e4"]),  # 3.0 (e4), 2.0 (e1)
    ("perplexity-mid", 3, ["e0", "e1", "e2"]),  # sorted e3 e2 e0 e1 e4: the middle three
    ("perplexity-mid", 2, ["e0", "e2"]),  # start (5 - 2) // 2 = 1: e2, e0
    ("least-confidence", 2, ["e0", "e2"]),  # final top-1 probability 0.30 (e2), 0.70 (e0); perplexity-high: e1, e4
    ("learnability", 2, ["e0", "e3"]),  # drops 3.8 (e3), 2.0 (e0)
    ("length-long", 2, ["e1", "e4"]),  # 50, 30 tokens
])
def test_ranking_baselines_by_eye(method, budget, expected):
    sel = make_selector(method).fit(table(BASE, n_tokens=LENGTHS, confidence=CONFIDENCE))
    assert sel.select(budget).tolist() == expected


def test_least_confidence_reads_the_top1_probability_and_refuses_without_it():
    sel = make_selector("least-confidence").fit(table(BASE, confidence=CONFIDENCE))
    np.testing.assert_array_equal(sel.scores_, CONFIDENCE[:, -1])
    assert make_selector("least-confidence", snapshot=0).fit(table(BASE, confidence=CONFIDENCE)).select(2).tolist() \
        == ["e2", "e3"]  # 0.4, 0.4 at the base model (ties to the earlier)
    with pytest.raises(InputError, match="top-1 token probability.*s2l score"):
        make_selector("least-confidence").fit(table(BASE))  # never a silent exp(-loss)
    blank = CONFIDENCE.copy()
    blank[1, -1] = np.nan
    with pytest.raises(InputError, match=r"1 example\(s\) lack"):
        make_selector("least-confidence").fit(table(BASE, confidence=blank))


# IFD = loss with the prompt / loss alone, at snapshot 0 (BASE[:, 0]: 3.0, 3.0, 1.0, 4.0, 2.0).
ALONE = np.array([
    [4.0, 0, 0],  # e0: 0.75
    [3.0, 0, 0],  # e1: 1.0 exactly: excluded
    [2.0, 0, 0],  # e2: 0.5
    [4.2, 0, 0],  # e3: 0.952…
    [1.0, 0, 0],  # e4: 2.0: excluded
])


def test_ifd_keeps_the_highest_below_one_with_the_exact_budget():
    sel = make_selector("ifd").fit(table(BASE, loss_alone=ALONE))
    np.testing.assert_allclose(sel.details_["ifd"], BASE[:, 0] / ALONE[:, 0])
    assert sel.excluded_.tolist() == ["", "ifd_at_least_1", "", "", "ifd_at_least_1"]
    assert sel.exclusion_counts() == {"ifd_at_least_1": 2}
    assert sel.select(1).tolist() == ["e3"]
    assert sel.select(2).tolist() == ["e0", "e3"]
    assert sel.select(3).tolist() == ["e0", "e2", "e3"]
    with pytest.raises(InputError, match="this method can use 3"):
        sel.select(4)
    assert sel.select(0.6).tolist() == ["e0", "e2", "e3"]  # 60% of the 5 usable: 3
    # The ratio of perplexities (Superfiltering's code) excludes the same and ranks by the loss difference:
    # exp(-1) (e0), exp(-1) (e2), exp(-0.2) (e3).
    ppl = make_selector("ifd", ratio="perplexity").fit(table(BASE, loss_alone=ALONE))
    assert ppl.exclusion_counts() == {"ifd_at_least_1": 2} and ppl.select(2).tolist() == ["e0", "e3"]
    np.testing.assert_allclose(ppl.scores_[[0, 2]], np.exp(-1.0))
    # Another snapshot, and an example whose response alone had nothing to score (a one-token response, no BOS).
    alone = ALONE.copy()
    alone[:, -1] = [2.0, 1.0, 0.25, 0.5, 4.0]  # final losses 1.0, 2.0, 0.5, 0.2, 3.0: IFD 0.5, 2, 2, 0.4, 0.75
    alone[0, 0] = np.nan
    tokens = [1, 10, 10, 10, 10]
    final = make_selector("ifd", snapshot=-1).fit(table(BASE, n_tokens=tokens, loss_alone=alone))
    assert final.select(2).tolist() == ["e0", "e4"]
    first = make_selector("ifd").fit(table(BASE, n_tokens=tokens, loss_alone=alone))
    assert first.exclusion_counts() == {"ifd_at_least_1": 2, "ifd_not_finite": 1}
    with pytest.raises(InputError, match="--ifd"):
        make_selector("ifd").fit(table(BASE))
    with pytest.raises(InputError, match="unknown ratio"):
        make_selector("ifd", ratio="odds").fit(table(BASE, loss_alone=ALONE))


def test_cartography_confidence_and_variability_by_hand():
    sel = make_selector("cartography-ambiguous").fit(table(BASE))
    p = np.exp(-BASE[:, 1:])  # the trained snapshots
    np.testing.assert_allclose(sel.details_["confidence"], p.mean(axis=1))
    np.testing.assert_allclose(sel.details_["variability"], p.std(axis=1))
    # variability |e^-a - e^-b| / 2: e3 (e^-1 vs e^-0.2) is the most variable, then e0 (e^-2 vs e^-1).
    assert sel.select(2).tolist() == ["e0", "e3"]
    assert make_selector("cartography-hard").fit(table(BASE)).select(1).tolist() == ["e4"]
    assert make_selector("cartography-easy").fit(table(BASE)).select(1).tolist() == ["e3"]


def test_random_and_source_random():
    t = table(np.ones((30, 3)), sources=["a"] * 20 + ["b"] * 7 + ["c"] * 3)
    a = make_selector("random", seed=1).fit(t).select(10)
    assert (a == make_selector("random", seed=1).fit(t).select(10)).all()
    assert set(a) != set(make_selector("random", seed=2).fit(t).select(10))
    sr = make_selector("source-random", seed=0).fit(t)
    ids = sr.select(12)
    # c (3) gives all 3 of its share 4; then b 9 // 2 = 4; a the last 5.
    counts = {s: sum(t.sources[int(i[1:])] == s for i in ids) for s in "abc"}
    assert counts == {"a": 5, "b": 4, "c": 3}


def test_cluster_random_keeps_s2l_counts_with_its_own_draw():
    rng = np.random.default_rng(0)
    t = table(rng.random((200, 4)), sources=["a"] * 150 + ["b"] * 50)
    s2l = make_selector("s2l", n_clusters=5).fit(t)
    cr = make_selector("cluster-random", n_clusters=5).fit(t)
    assert (s2l.labels_ == cr.labels_).all()
    a, b = s2l.select(40), cr.select(40)
    assert (s2l.cluster_quotas_ == cr.cluster_quotas_).all()
    assert set(a) != set(b)


def test_unknown_method_and_options_are_clear_errors():
    with pytest.raises(InputError, match="unknown method") as e:
        make_selector("nope")
    assert e.value.parameter == "method"
    with pytest.raises(InputError, match="does not take n_clusters") as e:
        make_selector("random", n_clusters=3)
    assert e.value.parameter == "method"


@pytest.mark.parametrize("make, parameter, message", [
    (lambda: parse_budget("abc"), "budget", "neither a count"),
    (lambda: resolve_budget("97", 96), "budget", "larger than the 96"),
    (lambda: make_selector("s2l", n_clusters=0).fit(BASE), "n_clusters", "at least 1"),
    (lambda: make_selector("s2l", snapshots=[1, 9]).fit(BASE), "snapshots", "out of range"),
    (lambda: make_selector("s2l", snapshots="last").fit(BASE), "snapshots", "trained, all or a list"),
    (lambda: make_selector("s2l", backend="nope").fit(BASE), "backend", "unknown K-means backend"),
])
def test_library_errors_name_the_parameter_not_a_flag(make, parameter, message):
    with pytest.raises(InputError, match=message) as e:
        make()
    assert e.value.parameter == parameter and e.value.path is None
    assert "--" not in e.value.problem


def test_selectors_follow_the_estimator_contract():
    sel = make_selector("s2l", n_clusters=7, seed=3)
    assert sel.get_params()["n_clusters"] == 7 and not hasattr(sel, "labels_")
    with pytest.raises(RuntimeError, match="not fitted"):
        sel.select(1)
    assert make_selector("perplexity-mid").get_params() == {"snapshot": -1, "seed": 0}
    assert make_selector("lp-app").get_params()["approx"] is True
    # A plain array works too; ids are the row numbers.
    ids = make_selector("learnability").fit(BASE).select(1)
    assert ids.tolist() == ["3"]


# -- the contract, for every method and budget -----------------------------------------------------------------
@st.composite
def pools(draw):
    n = draw(st.integers(1, 40))
    columns = draw(st.integers(3, 5))
    losses = np.asarray(draw(st.lists(st.lists(st.floats(0.0, 6.0), min_size=columns, max_size=columns),
                                      min_size=n, max_size=n)))
    blanks = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    losses[np.asarray(blanks) & (np.arange(n) > 0)] = np.nan  # some rows without response tokens, never all
    sources = draw(st.one_of(st.none(), st.lists(st.sampled_from("abcd"), min_size=n, max_size=n)))
    lengths = draw(st.lists(st.integers(1, 100), min_size=n, max_size=n))
    measure = lambda low, high: np.asarray(draw(st.lists(st.lists(st.floats(low, high), min_size=columns,  # noqa: E731
                                                                  max_size=columns), min_size=n, max_size=n)))
    return table(losses, sources, lengths, [{"epoch": float(k)} for k in range(columns)],
                 confidence=measure(0.0, 1.0), loss_alone=measure(0.0, 8.0))


@pytest.mark.parametrize("method", list(METHODS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_method_delivers_exactly_the_budget(method, data):
    t = data.draw(pools())
    params = {"diversity": False} if method.startswith("lp") else {}
    if method in ("s2l", "cluster-random"):
        params["n_clusters"] = data.draw(st.integers(1, 6))
    sel = make_selector(method, seed=data.draw(st.integers(0, 3)), **params).fit(t)
    selectable = sel.excluded_ == ""
    if not selectable.any():
        return
    budget = data.draw(st.integers(1, int(selectable.sum())))
    ids = sel.select(budget)
    assert len(ids) == budget and len(set(ids.tolist())) == budget
    usable_ids = set(t.ids[selectable].tolist())
    assert set(ids.tolist()) <= usable_ids
    # Same seed, same answer.
    again = make_selector(method, seed=sel.seed, **params).fit(t).select(budget)
    assert (again == ids).all()


def test_lp_diversity_meets_every_budget_serving_every_cluster_then_in_proportion():
    """The exact budget in the reference's spirit: with at least one per cluster to give, every cluster gives
    one and the rest is shared in proportion to what each has left (largest remainders up); with fewer, the
    clusters whose hardest member is hardest give one each. Inside a cluster, its lowest LPs."""
    rng = np.random.default_rng(0)
    t = table(rng.random((97, 3)), snapshots=EPOCHS_0_TO_2)
    sel = make_selector("lp", diversity_clusters=7).fit(t, embeddings=rng.random((97, 5)))
    assert math.isfinite(float(np.nanmax(sel.scores_)))
    rows = np.flatnonzero(sel.excluded_ == "")
    clusters = np.unique(sel.labels_[rows])
    sizes = np.array([(sel.labels_[rows] == c).sum() for c in clusters])
    hardest = np.array([np.nanmin(sel.scores_[rows[sel.labels_[rows] == c]]) for c in clusters])
    assert len(clusters) == 7 and len(set(sizes.tolist())) > 1  # unequal clusters: shares are not all alike
    for budget in range(1, len(rows) + 1):
        chosen = np.zeros(len(t.ids), bool)
        chosen[[int(i[1:]) for i in sel.select(budget)]] = True
        assert chosen.sum() == budget
        counts = np.array([chosen[rows][sel.labels_[rows] == c].sum() for c in clusters])
        if budget < len(clusters):
            assert set(np.flatnonzero(counts == 1)) == set(np.argsort(hardest)[:budget]) and counts.max() == 1
        else:
            assert (counts >= 1).all(), (budget, counts)
            exact = (sizes - 1) * (budget - len(clusters)) / (sizes - 1).sum()
            extra = counts - 1
            rounded_up = extra == np.floor(exact) + 1
            assert (rounded_up | (extra == np.floor(exact))).all(), (budget, counts, exact)
            remainders = exact - np.floor(exact)
            if rounded_up.any() and not rounded_up.all():
                assert remainders[rounded_up].min() >= remainders[~rounded_up].max(), (budget, counts, exact)
        for c in clusters:
            members = rows[sel.labels_[rows] == c]
            taken, left = sel.scores_[members[chosen[members]]], sel.scores_[members[~chosen[members]]]
            assert not len(taken) or not len(left) or taken.max() < left.min(), (budget, c)


def test_lp_reference_allocation_keeps_the_first_array_split_chunk_and_reports_the_overshoot():
    from s2l.selection.lp import reference_counts

    # Small2Large subset.py:129: np.array_split(cluster, round(100 / percentage))[0] → ceil(size / parts).
    assert reference_counts([6, 4], 5).tolist() == [3, 2]  # parts = round(10 / 5) = 2
    assert reference_counts([50, 30, 20, 1], 1).tolist() == [1, 1, 1, 1]  # 1%: every cluster gives one
    assert reference_counts([50, 30, 20, 1], 10).tolist() == [5, 3, 2, 1]  # parts = 10: 11 for a budget of 10
    lp = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.05, 0.7, 0.8, 0.9])
    losses = np.log(np.column_stack([np.full(10, 4.0), 4.0 - 3.0 * lp, np.ones(10)]))
    embeddings = np.zeros((10, 2), np.float32)
    embeddings[6:, 0] = 10.0
    sel = make_selector("lp", diversity_clusters=2, allocation="reference").fit(
        table(losses, snapshots=EPOCHS_0_TO_2), embeddings=embeddings)
    assert sel.select(1).tolist() == ["e0", "e6"]  # one per cluster: 2 for a budget of 1
    assert sel.delivered_ == 2 and "2 examples for a budget of 1 (+1)" in sel.warnings_[-1]
    exact = make_selector("lp", diversity_clusters=2).fit(table(losses, snapshots=EPOCHS_0_TO_2), embeddings=embeddings)
    assert exact.select(1).tolist() == ["e6"]  # the cluster whose hardest member (LP 0.05) is hardest
    with pytest.raises(InputError) as e:
        make_selector("lp", allocation="roughly", diversity=False).fit(table(losses, snapshots=EPOCHS_0_TO_2))
    assert e.value.parameter == "allocation"


# -- the registry finds methods itself ---------------------------------------------------------------------------
PLUGIN = '''
import numpy as np
from s2l.selection.base import Selector, register


@register("{name}", "First rows first (a test plugin)")
class FirstRows(Selector):
    """Parameters:
        offset               rows to skip
    """

    manifest_attributes = ("offset_used_",)

    def __init__(self, offset: int = 0, seed: int = 0):
        self.offset = offset
        self.seed = seed

    def _select(self, count, rng):
        self.offset_used_ = self.offset
        return self._selectable_rows()[self.offset:self.offset + count]
'''


def _python(code: str, tmp_path, env_path) -> str:
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(env_path)])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_a_new_module_in_the_package_registers_without_an_import_line(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "first_rows.py").write_text(PLUGIN.format(name="first-rows"))
    # A folder added to the package's path stands in for a new file in src/s2l/selection/.
    out = _python(f"import s2l.selection as s; s.__path__.append({str(extra)!r}); "
                  "from s2l.selection import METHODS, make_selector; import numpy as np; "
                  "print('first-rows' in METHODS, make_selector('first-rows', offset=2).fit(np.ones((6, 3))).select(2))",
                  tmp_path, tmp_path)
    assert "True ['2' '3']" in out


def test_entry_points_of_other_packages_register_methods(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_plugin.py").write_text(PLUGIN.format(name="my-method"))
    (site / "broken_plugin.py").write_text("raise RuntimeError('no luck')\n")
    for name, module in (("my_plugin", "my_plugin"), ("broken_plugin", "broken_plugin")):
        info = site / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[s2l.methods]\n{name} = {module}\n")
    out = _python("from typer.testing import CliRunner; from s2l.cli import app; "
                  "r = CliRunner().invoke(app, ['methods', 'my-method']); print(r.output); "
                  "from s2l.selection import METHODS; print(sorted(METHODS)[:2], len(METHODS) > 15)",
                  tmp_path, site)
    assert "my-method  First rows first (a test plugin)" in out and "offset=0  rows to skip" in out
    # The broken plugin is a warning naming it; every other method is still there.
    assert "broken_plugin" in out and "no luck" in out and "True" in out


def test_declared_fit_inputs_and_manifest_attributes():
    assert make_selector("lp").needed_inputs() == ("texts",)
    assert make_selector("lp", diversity=False).needed_inputs() == ()
    assert make_selector("length-long").needed_inputs() == ("lengths",)
    assert make_selector("s2l").needed_inputs() == ()
    with pytest.raises(TypeError, match="takes no fit input texts"):
        make_selector("s2l").fit(BASE, texts=["a"] * 5)
    sel = make_selector("s2l", n_clusters=2).fit(table(BASE))
    sel.select(3)
    assert [k for k in sel.manifest_attributes if hasattr(sel, k)] == ["source_quotas_", "clusters_per_source_",
                                                                        "snapshot_columns_"]


@pytest.mark.parametrize("method, name, text, value", [
    ("s2l", "n_clusters", "50", 50),
    ("s2l", "standardize", "true", True),
    ("s2l", "per_source", "off", False),
    ("s2l", "snapshots", "1,2,3", [1, 2, 3]),
    ("s2l", "snapshots", "all", "all"),
    ("s2l", "sample_per_centroid", "none", None),
    ("lp", "diversity_clusters", "12", 12),
    ("lp", "embedding_model", "./my-model", "./my-model"),
])
def test_parameters_convert_from_text_by_their_type(method, name, text, value):
    assert METHODS[method].parameter(name).convert(text) == value


def test_bad_parameter_text_names_the_parameter():
    with pytest.raises(InputError, match="expected a whole number, got 'many'") as e:
        METHODS["s2l"].parse_params({"n_clusters": "many"})
    assert e.value.parameter == "n_clusters"
    with pytest.raises(InputError, match="expected none or a whole number, got .all."):
        METHODS["s2l"].parameter("sample_per_centroid").convert("all")
    with pytest.raises(InputError, match="does not take clusters"):
        METHODS["s2l"].parse_params({"clusters": "3"})
    with pytest.raises(InputError, match="fixes approx"):
        METHODS["lp-app"].parameter("approx")
