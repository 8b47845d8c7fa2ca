"""`record --capture in-training`: losses taken from the training forward pass, checked against the
faithful store of the same training run."""

from __future__ import annotations

import numpy as np
import pytest

from s2l.errors import InputError
from s2l.selection.lp import epoch_columns, learning_percentage
from s2l.trajectories.record import RecordConfig, ScoreConfig, record

from helpers import FAST


@pytest.fixture(scope="module")
def in_training_run(tiny_model_dir, math_pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("capture") / "in-training"
    return record(math_pool, str(tiny_model_dir), out, RecordConfig(**FAST, capture="in-training"),
                  score_config=ScoreConfig(shard_size=16), show_progress=False)


def test_in_training_columns(in_training_run):
    manifest = in_training_run.manifest
    assert manifest["complete"]
    assert [s["label"] for s in manifest["snapshots"]] == ["base", "visits-epoch-1", "visits-epoch-2", "final"]
    assert [s["epoch"] for s in manifest["snapshots"]] == [0.0, 0.5, 1.5, 2.0]
    assert [s["step"] for s in manifest["snapshots"]] == [0, 10, 20, 20]
    assert manifest["training"]["capture"] == "in-training" and "snapshots" not in manifest["training"]
    t = in_training_run.load()
    assert t.shape == (40, 4) and t.usable.all()
    assert not list(in_training_run.root.glob("train_state-*"))
    seconds = manifest["seconds"]  # where the time went: training, keeping visits, the two passes, saving
    assert seconds["training"] > 0 and seconds["capture"] >= 0 and seconds["scoring"] > 0  # (capture: ~1 ms here)


def test_passes_match_the_faithful_run_and_visits_match_the_weights_they_saw(in_training_run, tiny_run):
    """Capturing changes nothing in training: base and final equal the faithful store's first and last
    columns. A visit is the loss at the weights of that moment: the first batch of epoch 1 sees the base
    model, the first batch of epoch 2 the weights at the end of epoch 1 (a faithful snapshot)."""
    cheap, faithful = in_training_run.load(), tiny_run.load()
    np.testing.assert_array_equal(cheap.losses[:, 0], faithful.losses[:, 0])
    np.testing.assert_allclose(cheap.losses[:, 3], faithful.losses[:, -1], rtol=0, atol=1e-6)

    batch = FAST["batch_size"]
    epoch_end = [s["step"] for s in tiny_run.manifest["snapshots"]].index(10)  # the faithful column at epoch 1
    for epoch, column, reference in ((0, 1, 0), (1, 2, epoch_end)):
        order = np.random.default_rng([0, epoch]).permutation(40)  # record's batch order with seed 0
        first, later = order[:batch], order[batch:]
        np.testing.assert_allclose(cheap.losses[first, column], faithful.losses[first, reference], atol=1e-5)
        assert not np.allclose(cheap.losses[later, column], faithful.losses[later, reference], atol=1e-5)


def test_learning_percentage_reads_the_next_epochs_visit(in_training_run):
    snapshots = in_training_run.manifest["snapshots"]
    assert epoch_columns(snapshots, 1) == (0, 2, 3)  # P_0 = base, P_1 = the visit in epoch 2, P_n = final
    lp = learning_percentage(in_training_run.load().losses, *epoch_columns(snapshots, 1))
    assert np.isfinite(lp).all()


def test_unknown_capture_is_refused(tiny_model_dir, math_pool, tmp_path):
    with pytest.raises(InputError, match="in-training"):
        record(math_pool, str(tiny_model_dir), tmp_path / "x", RecordConfig(**FAST, capture="sometimes"),
               show_progress=False)
    assert not (tmp_path / "x").exists()


def test_visit_columns_keep_no_top1_probability(in_training_run):
    """The training pass keeps only the loss: the visit columns have no top-1 probability (NaN), the two passes
    do, and least-confidence reads the final pass or says why it cannot read a visit."""
    from s2l.selection import make_selector

    t = in_training_run.load()
    assert np.isnan(t.confidence[:, 1:3]).all()
    assert np.isfinite(t.confidence[:, [0, 3]]).all() and t.loss_alone is None
    sel = make_selector("least-confidence").fit(t)
    np.testing.assert_array_equal(sel.scores_, t.confidence[:, 3])
    with pytest.raises(InputError, match="in-training visit column"):
        make_selector("least-confidence", snapshot=1).fit(t)
