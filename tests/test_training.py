"""Fine-tuning a target: the loop and loss are record's, the output folder is finished or absent,
the same inputs give the same weights, LoRA saves an adapter and a merged model. On the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from s2l.config import DataConfig, RecordConfig, TrainConfig
from s2l.data import prepare_pool
from s2l.errors import InputError
from s2l.fine_tuning import FineTuning
from s2l.trajectories.record import record
from s2l.trajectories.scoring import pad_batch, score_examples, token_losses
from s2l.training import MANIFEST, saved_step, train

# 40 examples in batches of 8: 5 steps an epoch, 10 in all.
FAST = dict(epochs=2, batch_size=8, learning_rate=1e-3, precision="float32", logging_steps=5)


def load(folder) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def pool_losses(model, tiny_model_dir, data) -> np.ndarray:
    _, tokenized = prepare_pool(data, AutoTokenizer.from_pretrained(tiny_model_dir), DataConfig())
    losses, _ = score_examples(model, tokenized)
    return losses


@pytest.fixture(scope="module")
def trained(tiny_model_dir, math_pool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "target"
    return train(math_pool, str(tiny_model_dir), out, TrainConfig(**FAST), show_progress=False)


def test_train_saves_a_loadable_model_that_learned(trained, tiny_model_dir, math_pool):
    assert (trained / "model.safetensors").is_file() and (trained / "tokenizer.json").is_file()
    assert not list(trained.parent.glob(".*")), "no temporary folder is left beside the output"
    assert not (trained / "trainer").exists()
    manifest = json.loads((trained / MANIFEST).read_text())
    assert manifest["kind"] == "train" and manifest["saved"] == "full"
    assert manifest["n_examples"] == manifest["n_trained"] == 40
    assert manifest["excluded"] == {"duplicate": 0, "no_response_tokens": 0}
    assert manifest["steps"] == 10 and manifest["steps_per_epoch"] == 5 and manifest["warmup_steps"] == 1
    assert manifest["config"]["learning_rate"] == 1e-3 and manifest["config"]["data"]["max_length"] == 512
    assert manifest["data"] == str(math_pool) and len(manifest["dataset_fingerprint"]) == 64
    assert manifest["model"] == str(tiny_model_dir) and manifest["model_revision"].startswith("local:")
    assert manifest["s2l_version"] and manifest["wall_seconds"] > 0
    assert len(manifest["epoch_mean_loss"]) == 2 and manifest["final_train_loss"] == manifest["epoch_mean_loss"][-1]
    log = [json.loads(line) for line in (trained / MANIFEST.replace(".json", "_log.jsonl")).read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 11))

    model = load(trained)
    assert model.config.use_cache, "use_cache is off only while training"
    before = pool_losses(load(tiny_model_dir), tiny_model_dir, math_pool)
    after = pool_losses(model, tiny_model_dir, math_pool)
    assert after.mean() < before.mean() - 0.2, (before.mean(), after.mean())


def test_a_step_minimises_the_response_loss_and_accumulation_is_one_batch(tiny_model_dir, math_pool):
    """A step's loss is `token_losses(...).mean()`, which is transformers' own loss with the prompt masked;
    two accumulated micro-batches give the loss and the update of the one batch they make."""
    _, tokenized = prepare_pool(math_pool, AutoTokenizer.from_pretrained(tiny_model_dir), DataConfig())
    examples = tokenized[:6]
    model = load(tiny_model_dir)
    input_ids, attention, loss_mask = pad_batch(examples, "cpu")
    ours = token_losses(model, input_ids, attention, loss_mask)[0].mean()
    labels = input_ids.masked_fill(~loss_mask, -100)
    transformers_loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    assert ours.item() == pytest.approx(transformers_loss.item(), abs=1e-5)

    config = TrainConfig(epochs=1, batch_size=6, learning_rate=1e-3, precision="float32")
    one = FineTuning(load(tiny_model_dir), examples, config, "cpu")
    assert one.micro_batches(0)[0].tolist() == np.random.default_rng([0, 0]).permutation(6).tolist()
    assert one.train_step().item() == pytest.approx(ours.item(), abs=1e-6)
    halves = TrainConfig(epochs=1, batch_size=6, micro_batch_size=3, learning_rate=1e-3, precision="float32")
    two = FineTuning(load(tiny_model_dir), examples, halves, "cpu")
    assert [len(m) for m in two.micro_batches(0)] == [3, 3] and two.total_steps == 1
    assert two.train_step().item() == pytest.approx(ours.item(), abs=1e-6)
    for (name, a), b in zip(one.model.named_parameters(), two.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_train_is_record_training(trained, tiny_model_dir, math_pool, tmp_path):
    """The same data, seed and settings give record's final weights: one code path for the proxy's run
    and the target's (batch order, loss, optimizer, schedule, clipping)."""
    config = RecordConfig(**{k: v for k, v in FAST.items() if k != "logging_steps"}, snapshots=1,
                          epoch_snapshots=False, resume_state=False)
    store = record(math_pool, str(tiny_model_dir), tmp_path / "run", config, show_progress=False)
    np.testing.assert_allclose(pool_losses(load(trained), tiny_model_dir, math_pool), store.load().losses[:, -1], atol=1e-5)


def test_same_inputs_give_the_same_weights(trained, tiny_model_dir, math_pool, tmp_path):
    again = train(math_pool, str(tiny_model_dir), tmp_path / "again", TrainConfig(**FAST), show_progress=False)
    first, second = load(trained).state_dict(), load(again).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)


def test_gradient_accumulation_is_one_larger_batch(trained, tiny_model_dir, math_pool, tmp_path):
    """Two micro-batches of 4 per step: the loss is the mean over all their response tokens, as for
    the batch of 8 they make, so the weights come out the same; a micro-batch that does not divide the
    batch (3: micro-batches of 3, 3, 2) too."""
    config = TrainConfig(**{**FAST, "micro_batch_size": 4})
    out = train(math_pool, str(tiny_model_dir), tmp_path / "accumulated", config, show_progress=False)
    assert json.loads((out / MANIFEST).read_text())["steps"] == 10
    first, second = load(trained).state_dict(), load(out).state_dict()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-5, msg=name)
    uneven = train(math_pool, str(tiny_model_dir), tmp_path / "uneven", TrainConfig(**{**FAST, "micro_batch_size": 3}),
                   show_progress=False)
    third = load(uneven).state_dict()
    for name in first:
        torch.testing.assert_close(first[name], third[name], rtol=0, atol=1e-5, msg=name)


def test_out_is_refused_unless_finished_or_overwrite(trained, tiny_model_dir, math_pool, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite"):
        train(math_pool, str(tiny_model_dir), busy, TrainConfig(**FAST), show_progress=False)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["busy"]

    # A finished training of the same job is left alone; of another job, refused.
    weights = trained / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert train(math_pool, str(tiny_model_dir), trained, TrainConfig(**FAST), show_progress=False) == trained
    assert weights.stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="other data, model or settings"):
        train(math_pool, str(tiny_model_dir), trained, TrainConfig(**{**FAST, "seed": 1}), show_progress=False)
    assert weights.stat().st_mtime_ns == stamp and not list(trained.parent.glob(".*"))


def test_examples_without_response_tokens_are_excluded_and_counted(tiny_model_dir, tmp_path):
    short = [{"instruction": f"Add {i} and {i + 1}.", "output": f"{i} + {i + 1} = {2 * i + 1}"} for i in range(5)]
    long = [{"instruction": f"Question {i}: " + "count the words in this sentence please " * 20, "output": "many"}
            for i in range(2)]
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in short + long + short[:1]))  # the last is a duplicate
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, precision="float32",
                         data=DataConfig(max_length=64))
    out = train(data, str(tiny_model_dir), tmp_path / "out", config, show_progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["n_examples"] == 7 and manifest["n_trained"] == 5
    assert manifest["excluded"] == {"duplicate": 1, "no_response_tokens": 2}
    assert len(manifest["excluded_ids"]["no_response_tokens"]) == 2

    nothing = TrainConfig(epochs=1, precision="float32", data=DataConfig(max_length=8))
    with pytest.raises(InputError, match="no example has a response token"):
        train(data, str(tiny_model_dir), tmp_path / "none", nothing, show_progress=False)
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none*"))


def test_the_job_holds_the_boundary_rule_as_trainings_before_the_option_did():
    from s2l.training import _job_config

    assert _job_config(TrainConfig(), "alpaca")["data"]["boundary"] == "reference"
    # characters is what trainings made before the option used, and chat always masks by characters: no key,
    # as in their jobs. --strict trains the same weights or none, so it is never part of the job.
    for config, format in ((TrainConfig(data=DataConfig(boundary="characters")), "alpaca"), (TrainConfig(), "chat")):
        assert set(_job_config(config, format)["data"]) == {"format", "template", "id_column", "split", "max_length"}
    assert "strict" not in _job_config(TrainConfig(data=DataConfig(strict=True)), "alpaca")["data"]


def test_lora_saves_the_adapter_and_a_merged_model(tiny_model_dir, math_pool, tmp_path):
    pytest.importorskip("peft")
    config = TrainConfig(**{**FAST, "epochs": 1}, lora=True, lora_target_modules="all-linear")
    out = train(math_pool, str(tiny_model_dir), tmp_path / "lora", config, show_progress=False)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    targets = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert adapter["r"] == 16 and targets >= {"q_proj", "v_proj", "down_proj"} and "lm_head" not in targets
    assert json.loads((out / MANIFEST).read_text())["saved"] == "merged"

    merged, base = load(out).state_dict(), load(tiny_model_dir).state_dict()
    assert merged.keys() == base.keys(), "the merged model is a plain model, no LoRA layers left"
    changed = [name for name in base if not torch.equal(merged[name], base[name])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed
    assert "model.embed_tokens.weight" not in changed, "LoRA leaves the embeddings alone"


def test_interrupted_train_resumes_to_the_same_weights(trained, tiny_model_dir, math_pool, tmp_path, monkeypatch):
    train_step = FineTuning.train_step

    def interrupted_at_step_7(self, *args, **kwargs):
        if self.step == 6:
            raise KeyboardInterrupt
        return train_step(self, *args, **kwargs)

    out, config = tmp_path / "resumed", TrainConfig(**FAST, resume=True, save_steps=3)
    monkeypatch.setattr(FineTuning, "train_step", interrupted_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(math_pool, str(tiny_model_dir), out, config, show_progress=False)
    assert not out.exists(), "an interrupted training leaves nothing that looks finished"
    assert saved_step(out) == 6  # what `s2l experiment --status` reports
    monkeypatch.setattr(FineTuning, "train_step", train_step)
    train(math_pool, str(tiny_model_dir), out, config, show_progress=False)

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["resumed_from_step"] == 6
    # The times are the whole training's: the interrupted process's, up to its state, are carried over.
    assert manifest["wall_seconds"] > manifest["process_wall_seconds"] > 0
    first, second = load(trained).state_dict(), load(out).state_dict()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)
    assert not list(tmp_path.glob(".*")), "the state goes once the training is finished"
    assert saved_step(out) is None
    assert not list(out.glob("train_state-*"))
    # The losses of the steps before the interruption were kept with the state.
    log = [json.loads(line) for line in (out / MANIFEST.replace(".json", "_log.jsonl")).read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, 11))
    assert manifest["epoch_mean_loss"] == json.loads((trained / MANIFEST).read_text())["epoch_mean_loss"]


def test_a_pool_too_small_for_the_batch_is_told_so_with_a_batch_that_fits():
    from s2l.fine_tuning import few_steps_note

    note = few_steps_note(96, TrainConfig())  # the papers' 128: 1 step an epoch
    assert note.startswith("96 examples in batches of 128 give only 3 optimizer step(s) over 3 epoch(s)")
    assert "--batch-size 4 would give 72" in note
    assert few_steps_note(96, TrainConfig(batch_size=4)) is None
    assert few_steps_note(262_040, TrainConfig()) is None  # MathInstruct: 6,141 steps
