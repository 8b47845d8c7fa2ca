"""The training levers of issue 16 (chunked vocabulary loss, bf16 weights with float32 masters, a compiled
body) keep the float32 path's losses within stated tolerances, on the tiny model over a few steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from s2l.config import DataConfig, TrainConfig
from s2l.data import prepare_pool
from s2l.errors import InputError
from s2l.fine_tuning import FineTuning, latest_state
from s2l.trajectories import head_loss

STEPS = 6
# Step losses against the float32 path (the tiny model's losses are about 11 nats): float32 with the chunked
# loss is the same arithmetic regrouped; bf16 rounds every matmul, so a few steps drift by up to this much.
CHUNKED_FP32_TOLERANCE = 1e-5
BF16_TOLERANCE = 0.02  # nats, any step (bf16-mixed, with or without the chunked loss)
BF16_MASTER_TOLERANCE = 0.03  # nats, any step: bf16 activations everywhere, not only in the matmuls


@pytest.fixture(scope="module")
def examples(tiny_model_dir, math_pool):
    _, tokenized = prepare_pool(math_pool, AutoTokenizer.from_pretrained(tiny_model_dir), DataConfig())
    return tokenized[:24]


def step_losses(tiny_model_dir, examples, **settings) -> tuple[np.ndarray, FineTuning]:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = TrainConfig(**{"epochs": 2, "batch_size": 8, "micro_batch_size": 4, "learning_rate": 3e-3,
                            "precision": "float32", "chunked_loss": False, **settings})
    tuning = FineTuning(model, examples, config, "cpu")
    return np.array([tuning.train_step().item() for _ in range(STEPS)]), tuning


@pytest.fixture(scope="module")
def float32_losses(tiny_model_dir, examples) -> np.ndarray:
    losses, _ = step_losses(tiny_model_dir, examples)
    assert losses[-1] < losses[0] - 0.3  # it learns, so the comparison covers changing weights
    return losses


def test_chunked_loss_in_float32_is_the_plain_path(tiny_model_dir, examples, float32_losses, monkeypatch):
    monkeypatch.setattr(head_loss, "HEAD_CHUNK_ELEMENTS", 20 * 49152)  # 20 positions a chunk: many chunks
    losses, _ = step_losses(tiny_model_dir, examples, chunked_loss=True)
    np.testing.assert_allclose(losses, float32_losses, rtol=0, atol=CHUNKED_FP32_TOLERANCE)


@pytest.mark.parametrize("chunked", [False, True])
def test_bf16_mixed_stays_near_float32(tiny_model_dir, examples, float32_losses, chunked):
    losses, _ = step_losses(tiny_model_dir, examples, precision="bf16-mixed", chunked_loss=chunked)
    np.testing.assert_allclose(losses, float32_losses, rtol=0, atol=BF16_TOLERANCE)


def test_bf16_master_stays_near_float32_and_saves_float32(tiny_model_dir, examples, float32_losses, tmp_path):
    losses, tuning = step_losses(tiny_model_dir, examples, precision="bf16-master", chunked_loss=True)
    np.testing.assert_allclose(losses, float32_losses, rtol=0, atol=BF16_MASTER_TOLERANCE)
    assert all(p.dtype == torch.bfloat16 for p in tuning.model.parameters())
    assert all(m.dtype == torch.float32 for _, m in tuning.master.named)
    # The model computes with the masters' bf16 rounding.
    for (_, p, m) in tuning.master.pairs:
        assert torch.equal(p, m.detach().to(torch.bfloat16))
    # The state keeps the float32 masters; a resumed run continues them exactly.
    tuning.save_state(tmp_path)
    saved = load_file(str(latest_state(tmp_path) / "master.safetensors"))
    assert all(saved[name].dtype == torch.float32 for name, _ in tuning.master.named)
    _, again = step_losses(tiny_model_dir, examples[:0] + examples, precision="bf16-master", chunked_loss=True)
    again.load_state(latest_state(tmp_path))
    assert again.step == STEPS
    assert again.train_step().item() == tuning.train_step().item()
    model = tuning.trained_model()
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_master_refuses_fsdp(tiny_model_dir, examples):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with pytest.raises(InputError, match="precision"):
        FineTuning(model, examples, TrainConfig(precision="bf16-master"), "cpu", sharded=True)


def test_compiled_training_stays_near_eager(tiny_model_dir, examples, float32_losses):
    """A compiled body fuses differently: float32 losses agree to rounding."""
    losses, _ = step_losses(tiny_model_dir, examples, compile_training=True)
    np.testing.assert_allclose(losses, float32_losses, rtol=0, atol=1e-4)


def test_the_scoring_copy_is_the_deep_copy_cast_without_a_float32_duplicate(tiny_model_dir):
    import copy

    from s2l.trajectories.record import cast_copy

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    expected, ours = copy.deepcopy(model).to(torch.bfloat16).state_dict(), cast_copy(model, torch.bfloat16)
    assert ours.get_output_embeddings().weight is ours.get_input_embeddings().weight  # still tied
    got = ours.state_dict()
    assert got.keys() == expected.keys()
    for name in got:
        assert got[name].dtype == expected[name].dtype and torch.equal(got[name], expected[name]), name
    assert not {p.data_ptr() for p in ours.parameters()} & {p.data_ptr() for p in model.parameters()}


def test_a_store_recorded_without_the_chunked_loss_names_it_when_resumed_with_the_default(tiny_model_dir, math_pool,
                                                                                        tmp_path):
    """chunked_loss became the default; a store from before has no such key, and resuming it under the new
    default is refused naming the one setting (not all of `training`), so --no-chunked-loss is the fix."""
    from s2l.config import RecordConfig
    from s2l.trajectories.record import record

    settings = dict(epochs=1, snapshots=1, batch_size=8, learning_rate=1e-3, precision="float32")
    assert RecordConfig().chunked_loss is True
    old = record(math_pool, str(tiny_model_dir), tmp_path / "run", RecordConfig(**settings, chunked_loss=False),
                 show_progress=False)
    assert "chunked_loss" not in old.manifest["training"]  # as stores recorded before the option
    with pytest.raises(InputError, match=r"different settings \(training\.chunked_loss\)"):
        record(math_pool, str(tiny_model_dir), tmp_path / "run", RecordConfig(**settings), show_progress=False)


def test_auto_precision_is_resolved_by_the_training_core(tiny_model_dir, examples):
    # A caller that hands FineTuning the default `auto` gets what record and train would choose, not float32.
    from s2l.models import resolve_precision

    _, tuning = step_losses(tiny_model_dir, examples[:8], precision="auto")
    assert tuning.config.precision == resolve_precision("auto", "cpu") != "auto"
    assert tuning._autocast._enabled == (tuning.config.precision == "bf16-mixed")
