"""facility-location: the greedy of the definition on a case small enough to enumerate, exact budgets,
seeds, the per-source split, and the method reaching `s2l methods` and `s2l select` from its file alone."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from s2l.cli import app
from s2l.data import load_pool
from s2l.errors import InputError
from s2l.selection import METHODS, make_selector
from s2l.selection.s2l import source_groups, source_quotas
from s2l.trajectories.matrix import Trajectories


def table(losses, sources=None) -> Trajectories:
    losses = np.asarray(losses, dtype=np.float64)
    n = len(losses)
    return Trajectories(ids=np.asarray([f"e{i}" for i in range(n)], dtype=object), losses=losses,
                        n_tokens=np.full(n, 10), sources=None if sources is None else np.asarray(sources, dtype=object),
                        snapshots=[{"epoch": float(k)} for k in range(losses.shape[1])])


def F(x: np.ndarray, chosen: list[int], sigma: float) -> float:
    """The facility-location function as defined: sum_i max_{j in S} exp(-|x_i - x_j|^2 / (2 sigma^2))."""
    if not chosen:
        return 0.0
    d2 = ((x[:, None, :] - x[None, chosen, :]) ** 2).sum(axis=2)
    return float(np.exp(-d2 / (2 * sigma ** 2)).max(axis=1).sum())


def brute_force_greedy(x: np.ndarray, k: int, sigma: float) -> tuple[list[int], list[float]]:
    chosen, gains = [], []
    for _ in range(k):
        base = F(x, chosen, sigma)
        gain = {j: F(x, chosen + [j], sigma) - base for j in range(len(x)) if j not in chosen}
        best = max(gain, key=lambda j: (gain[j], -j))  # the largest gain, ties to the earlier row
        ordered = sorted(gain.values())
        assert len(ordered) < 2 or ordered[-1] - ordered[-2] > 1e-4  # no near-tie: the case tests something
        chosen.append(best)
        gains.append(gain[best])
    return chosen, gains


EIGHT = np.random.default_rng(1).random((8, 4)) * [3.0, 2.0, 1.0, 0.5]  # 8 trajectories, base model + 3 snapshots


def test_exact_greedy_picks_what_the_definition_picks():
    x = EIGHT[:, 1:]  # the trained snapshots, as S2L
    sel = make_selector("facility-location", epsilon=0).fit(table(EIGHT))
    pairs = [np.linalg.norm(x[i] - x[j]) for i, j in itertools.combinations(range(8), 2)]
    assert sel.bandwidth_ == pytest.approx(np.median(pairs))  # the median rule: every pair of a small pool
    for k in range(1, 8):
        expected, gains = brute_force_greedy(x, k, sel.bandwidth_)
        ids = sel.select(k)
        assert sorted(ids.tolist()) == sorted(f"e{i}" for i in expected)
        order = np.argsort(-sel.scores_[sel.selected_], kind="stable")  # gains fall along the greedy order
        assert [int(sel.ids_[sel.selected_][i][1:]) for i in order] == expected
        np.testing.assert_allclose(sorted(sel.scores_[sel.selected_], reverse=True), gains, rtol=1e-5)
        assert sel.coverage_ == pytest.approx(F(x, expected, sel.bandwidth_) / 8, rel=1e-5)
        # Every example's coverage is its best similarity to the subset; the subset covers itself fully.
        np.testing.assert_allclose(sel.details_["coverage"][sel.selected_], 1.0)
    # Greedy keeps at least 1 - 1/e of the best subset, found here by enumeration.
    best = max(F(x, list(s), sel.bandwidth_) for s in itertools.combinations(range(8), 3))
    assert F(x, expected[:3], sel.bandwidth_) >= (1 - 1 / math.e) * best


def test_labels_name_the_covering_pick():
    sel = make_selector("facility-location", epsilon=0, bandwidth=0.5).fit(table(EIGHT))
    sel.select(3)
    picks = sel.selected_[np.argsort(-sel.scores_[sel.selected_], kind="stable")]  # greedy order
    x = EIGHT[:, 1:]
    sims = np.exp(-((x[:, None] - x[None, picks]) ** 2).sum(axis=2) / (2 * 0.5 ** 2))
    assert (sel.labels_ == sims.argmax(axis=1)).all()
    np.testing.assert_allclose(sel.details_["coverage"], sims.max(axis=1), rtol=1e-5)


def test_stochastic_greedy_with_every_candidate_is_the_exact_greedy():
    rng = np.random.default_rng(0)
    t = table(rng.random((40, 5)))
    exact = make_selector("facility-location", epsilon=0).fit(t).select(5)
    # 40 / 5 * ln(1 / 1e-9) > 40 candidates a step: all of them.
    assert (make_selector("facility-location", epsilon=1e-9).fit(t).select(5) == exact).all()


def test_exact_budget_and_determinism_by_seed():
    rng = np.random.default_rng(1)
    losses = rng.random((300, 6))
    losses[::17] = np.nan  # examples without response tokens are never chosen
    t = table(losses)
    for budget in (1, 7, 30, 150, int(np.isfinite(losses).all(axis=1).sum())):
        sel = make_selector("facility-location", seed=2).fit(t)
        ids = sel.select(budget)
        assert len(ids) == budget == len(set(ids.tolist()))
        assert not set(ids.tolist()) & set(t.ids[::17].tolist())
        assert (make_selector("facility-location", seed=2).fit(t).select(budget) == ids).all()
    a = make_selector("facility-location", seed=0).fit(t).select(20)
    b = make_selector("facility-location", seed=1).fit(t).select(20)
    assert set(a.tolist()) != set(b.tolist())  # another seed draws other candidates


def test_per_source_splits_the_budget_as_s2l():
    rng = np.random.default_rng(2)
    sources = ["a"] * 20 + ["b"] * 7 + ["c"] * 3
    t = table(rng.random((30, 4)), sources)
    sel = make_selector("facility-location", per_source=True).fit(t)
    ids = sel.select(12)
    counts = {s: sum(t.sources[int(i[1:])] == s for i in ids) for s in "abc"}
    expected = source_quotas(source_groups(t.sources, np.arange(30)), 12)
    assert counts == expected == {"a": 5, "b": 4, "c": 3}  # c gives all 3, then b 9 // 2 = 4, a the last 5
    assert sel.source_quotas_ == expected
    # Inside a source it is the exact greedy of that source alone.
    b_rows = np.flatnonzero(t.sources == "b")
    alone = make_selector("facility-location", epsilon=0, bandwidth=sel.bandwidth_).fit(table(t.losses[b_rows]))
    exact = make_selector("facility-location", epsilon=0, per_source=True).fit(t)
    chosen_b = [i for i in exact.select(12) if t.sources[int(i[1:])] == "b"]
    assert chosen_b == [f"e{b_rows[int(i[1:])]}" for i in alone.select(4)]
    # Without per_source the pool is covered as one.
    assert not hasattr(make_selector("facility-location").fit(t), "source_quotas_")


@pytest.mark.parametrize("params, parameter", [({"epsilon": 1.0}, "epsilon"), ({"epsilon": -0.1}, "epsilon"),
                                               ({"bandwidth": 0.0}, "bandwidth"), ({"snapshots": [7]}, "snapshots")])
def test_bad_parameters_name_the_parameter(params, parameter):
    with pytest.raises(InputError) as e:
        make_selector("facility-location", **params).fit(table(EIGHT))
    assert e.value.parameter == parameter


def test_one_file_reaches_methods_and_select(math_pool, tmp_path):
    assert "facility-location" in METHODS
    runner = CliRunner()
    listed = runner.invoke(app, ["methods", "facility-location"])
    assert listed.exit_code == 0 and "epsilon=0.1" in listed.output and "bandwidth=none" in listed.output
    pool = load_pool(math_pool)
    rng = np.random.default_rng(0)
    rows = ["example_id,source,loss_0,loss_1,loss_2"] + [
        f"{e.example_id},{e.source}," + ",".join(f"{v:.4f}" for v in rng.random(3)) for e in pool.examples]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "sel"
    result = runner.invoke(app, ["select", "--trajectories", str(tmp_path / "t.csv"), "--data", str(math_pool),
                                 "--method", "facility-location", "--param", "epsilon=0", "--param", "per_source=true",
                                 "--budget", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"] == {"snapshots": "trained", "per_source": True, "epsilon": 0.0, "bandwidth": None,
                                  "seed": 0}
    assert manifest["budget"]["delivered"] == 8 and len((out / "selected_ids.txt").read_text().split()) == 8
    assert set(manifest["learned"]) == {"snapshot_columns_", "bandwidth_", "source_quotas_", "coverage_"}
    assert manifest["learned"]["snapshot_columns_"] == [1, 2]
