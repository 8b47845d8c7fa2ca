"""The scorer against transformers' own loss, batching, and the snapshot plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from s2l.data import load_pool, tokenize_examples
from s2l.trajectories.record import snapshot_plan
from s2l.trajectories.scoring import score_examples, token_budget_batches

from helpers import reference_losses


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, math_pool):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenized = tokenize_examples(tokenizer, load_pool(math_pool).examples, 512)
    return model, tokenizer, tokenized


def test_losses_match_transformers_one_example_at_a_time(tiny):
    model, _, tokenized = tiny
    losses, n_tokens = score_examples(model, tokenized, max_batch_tokens=4096)
    assert np.abs(losses - reference_losses(model, tokenized)).max() < 1e-4
    assert (n_tokens == [t.n_tokens for t in tokenized]).all() and (n_tokens > 0).all()


def test_batch_size_does_not_change_losses(tiny):
    model, _, tokenized = tiny
    small, _ = score_examples(model, tokenized, max_batch_tokens=64, max_batch_size=2)
    large, _ = score_examples(model, tokenized, max_batch_tokens=100_000, max_batch_size=64)
    np.testing.assert_allclose(small, large, atol=1e-5)


def test_chat_example_losses_match_transformers(tiny, tmp_path):
    model, tokenizer, _ = tiny
    path = tmp_path / "chat.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, '
                    '{"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6, since 3+3=6."}]}\n')
    tokenized = tokenize_examples(tokenizer, load_pool(path).examples, 512)
    losses, _ = score_examples(model, tokenized)
    assert abs(losses[0] - reference_losses(model, tokenized)[0]) < 1e-4


def test_example_without_response_tokens_gets_no_number(tiny, tmp_path):
    model, tokenizer, _ = tiny
    path = tmp_path / "long.jsonl"
    path.write_text('{"instruction": "' + "word " * 200 + '", "output": "answer"}\n{"instruction": "hi", "output": "ok"}\n')
    tokenized = tokenize_examples(tokenizer, load_pool(path).examples, max_length=32)
    losses, n_tokens = score_examples(model, tokenized)
    assert n_tokens[0] == 0 and np.isnan(losses[0])
    assert n_tokens[1] > 0 and np.isfinite(losses[1])


def test_token_budget_batches_cover_every_example_once_within_budget():
    lengths = [5, 50, 7, 33, 12, 12, 90, 1]
    batches = token_budget_batches(lengths, max_tokens=100, max_size=3)
    members = np.concatenate(batches)
    assert sorted(members.tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) * max(lengths[i] for i in batch) <= 100
    assert batches[0][0] == 6  # longest first


def test_snapshot_plan_spreads_evenly_and_adds_epoch_ends():
    plan = snapshot_plan(total_steps=30, steps_per_epoch=10, snapshots=4, epoch_snapshots=True)
    # 30 * k / 4 = 7.5, 15, 22.5, 30 (rounded half to even: 8, 15, 22, 30), plus epoch ends 10 and 20.
    assert [s["step"] for s in plan] == [0, 8, 10, 15, 20, 22, 30]
    assert [s["epoch_end"] for s in plan] == [True, False, True, False, True, False, True]
    assert plan[0]["label"] == "base" and plan[2]["epoch"] == 1.0 and plan[1]["epoch"] == 0.8
    plain = snapshot_plan(total_steps=30, steps_per_epoch=10, snapshots=4, epoch_snapshots=False)
    assert [s["step"] for s in plain] == [0, 8, 15, 22, 30]
    # 12 snapshots over 3 epochs put every epoch end among the evenly spaced ones (the papers' setting).
    assert len(snapshot_plan(120, 40, 12, True)) == 13
