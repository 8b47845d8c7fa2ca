"""End to end on the real packaged SmolLM2-135M proxy, on a pool of a few dozen examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from s2l.data import load_pool, tokenize_examples
from s2l.trajectories.record import RecordConfig, ScoreConfig, record

from helpers import reference_losses


@pytest.mark.slow
def test_record_with_smollm2(smollm2_dir, tmp_path):
    from helpers import make_pool

    # 12 examples, 3 steps of 4: the real 135M model costs seconds a step on a CPU.
    pool = make_pool(tmp_path / "data", 12, seed=3)
    store = record(pool, "smollm2-135m-instruct", tmp_path / "run",
                   RecordConfig(epochs=1, snapshots=1, batch_size=4, learning_rate=1e-4),
                   score_config=ScoreConfig(dtype="float32"), show_progress=False)
    t = store.load()
    assert t.shape == (12, 2) and t.usable.all()
    manifest = store.manifest
    assert manifest["model"] == "smollm2-135m-instruct" and manifest["model_revision"].startswith("gguf-sha256:")
    assert [s["epoch_end"] for s in manifest["snapshots"]] == [True, True]

    # Snapshot 0 equals transformers' own loss, one example at a time, in float32.
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    tokenized = tokenize_examples(AutoTokenizer.from_pretrained(smollm2_dir), load_pool(pool).examples, 512)
    assert np.abs(t.losses[:, 0] - reference_losses(model, tokenized)).max() < 1e-4
    # A pretrained instruct model learns these short worked answers within one epoch.
    assert t.losses[:, -1].mean() < t.losses[:, 0].mean()
