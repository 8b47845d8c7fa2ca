"""Shared fixtures: the real packaged SmolLM2 (prepared once into the user's cache), a tiny randomly
initialised Llama that uses SmolLM2's real tokenizer (seconds to train), and a small math pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FAST, make_pool

# A test that needs one of these (directly or through a fixture built on them) runs a model: marked `model`.
MODEL_FIXTURES = {"smollm2_dir", "tiny_model_dir"}


def pytest_collection_modifyitems(config, items):
    """Mark `model` every test whose fixtures include a model, and every slow one: `make test-fast`
    (pytest -m "not model") runs the rest."""
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from s2l.models import prepare

    return prepare("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def math_pool(tmp_path_factory) -> Path:
    """40 math problems from 5 sources of unequal size."""
    return make_pool(tmp_path_factory.mktemp("pool"), 40)


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, math_pool, tmp_path_factory):
    """A trajectory run of the tiny model over the math pool (seconds)."""
    from s2l.trajectories.record import RecordConfig, ScoreConfig, record

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return record(math_pool, str(tiny_model_dir), out, RecordConfig(**FAST), score_config=ScoreConfig(shard_size=16),
                  show_progress=False)


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_model_dir, math_pool, tmp_path_factory) -> list[Path]:
    """The tiny model and two fine-tuned snapshots of it, as Hugging Face folders (for `s2l score`)."""
    from s2l.trajectories.record import RecordConfig, record

    out = tmp_path_factory.mktemp("ckpt") / "run"
    record(math_pool, str(tiny_model_dir), out, RecordConfig(**{**FAST, "snapshots": 2}, keep_checkpoints=True),
           show_progress=False)
    return [tiny_model_dir] + sorted((out / "checkpoints").glob("snapshot-*"))[1:]
