"""Recording and scoring into the trajectory store, resuming, exporting: end to end on a tiny model."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from s2l.cli import app
from s2l.data import load_pool, tokenize_examples
from s2l.errors import InputError
from s2l.trajectories import TrajectoryStore
from s2l.trajectories.record import DataConfig, RecordConfig, ScoreConfig, record, score
from s2l.trajectories.scoring import score_examples

from helpers import FAST

runner = CliRunner()


def test_record_writes_the_store_contract(tiny_run, math_pool):
    manifest = tiny_run.manifest
    assert manifest["complete"] and manifest["kind"] == "record"
    # 40 examples, batch 4: 10 steps per epoch, 20 in all; 4 even snapshots + epoch ends + the base model.
    assert [s["step"] for s in manifest["snapshots"]] == [0, 5, 10, 15, 20]
    assert [s["epoch_end"] for s in manifest["snapshots"]] == [True, False, True, False, True]
    assert manifest["training"]["total_steps"] == 20 and manifest["training"]["warmup_steps"] == 1
    assert manifest["n_shards"] == 3  # 40 examples in shards of 16
    for key in ("dataset_fingerprint", "model_revision", "tokenizer", "template", "max_length", "dtype", "s2l_version"):
        assert manifest[key]
    for k in range(5):
        for s in range(3):
            assert tiny_run.is_complete(k, s)
            marker = json.loads(tiny_run.marker_path(k, s).read_text())
            assert marker["rows"] == pq.read_table(tiny_run.cell_path(k, s)).num_rows
    assert not list(tiny_run.root.glob("train_state-*")), "the resume state is removed when the run completes"

    t = tiny_run.load()
    assert t.shape == (40, 5) and t.usable.all()
    assert list(t.ids) == load_pool(math_pool).ids
    assert set(t.sources) == {"chain_sum", "basic_arithmetic", "simple_equations", "products", "leg_counting"}
    # Training at this learning rate lowers the loss of the examples it trains on.
    means = t.losses.mean(axis=0)
    assert (np.diff(means) < 0).all() and means[-1] < means[0] - 0.3, means


def test_snapshot_zero_is_the_untrained_model(tiny_run, tiny_model_dir, math_pool):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tokenized = tokenize_examples(AutoTokenizer.from_pretrained(tiny_model_dir), load_pool(math_pool).examples)
    base, _ = score_examples(model, tokenized)
    np.testing.assert_allclose(tiny_run.load().losses[:, 0], base, atol=1e-5)


def test_same_settings_give_the_same_numbers(tiny_run, tiny_model_dir, math_pool, tmp_path):
    again = record(math_pool, str(tiny_model_dir), tmp_path / "again", RecordConfig(**FAST),
                   score_config=ScoreConfig(shard_size=16), show_progress=False)
    np.testing.assert_array_equal(again.load().losses, tiny_run.load().losses)
    # Byte for byte: every cell, its marker and the examples table; the manifest differs only in wall time.
    files = sorted(p.relative_to(tiny_run.root) for p in tiny_run.root.rglob("*") if p.is_file() and p.name != ".s2l.lock")
    assert files == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file() and p.name != ".s2l.lock")
    for name in files:
        if name.name != "manifest.json":
            assert (tiny_run.root / name).read_bytes() == (again.root / name).read_bytes(), name
    first, second = tiny_run.manifest, again.manifest
    for manifest in (first, second):
        manifest.pop("wall_seconds"), manifest.pop("process_wall_seconds"), manifest.pop("seconds")
    assert first == second
    assert first["environment"]["torch_threads"] >= 1


def test_killed_record_resumes_to_the_same_numbers(tiny_run, tiny_model_dir, math_pool, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "s2l.cli", "record", "--data", str(math_pool), "--proxy", str(tiny_model_dir),
               "--out", str(out), "--epochs", "2", "--snapshots", "4", "--batch-size", "4", "--lr", "1e-3",
               "--precision", "float32", "--shard-size", "16", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = TrajectoryStore(out)
    deadline = time.time() + 120
    while not store.is_complete(2, 0) and time.time() < deadline:  # mid-run: snapshot 2 has started
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.is_complete(2, 0)
    assert not store.manifest["complete"], "killed before the end"
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    np.testing.assert_array_equal(store.load().losses, tiny_run.load().losses)
    # The killed process's time, up to the state the run resumed from, is counted with the second's.
    manifest = store.manifest
    assert manifest["wall_seconds"] > manifest["process_wall_seconds"] > 0


def test_complete_cells_are_not_recomputed_and_missing_ones_are(tiny_model_dir, math_pool, tmp_path):
    out = tmp_path / "scored"
    scored = score(math_pool, [str(tiny_model_dir)], out, score_config=ScoreConfig(shard_size=16), show_progress=False)
    before = scored.load().losses
    kept = scored.cell_path(0, 1).stat().st_mtime_ns
    scored.marker_path(0, 2).unlink()  # as if killed between the cell and its marker
    scored.cell_path(0, 2).write_bytes(b"half-written")
    score(math_pool, [str(tiny_model_dir)], out, score_config=ScoreConfig(shard_size=16), show_progress=False)
    assert scored.cell_path(0, 1).stat().st_mtime_ns == kept
    np.testing.assert_array_equal(scored.load().losses, before)


def test_score_orders_checkpoints_by_step(tiny_model_dir, math_pool, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    folders = {}
    for step, scale in ((500, 0.5), (1000, 0.0)):
        folder = tmp_path / f"checkpoint-{step}"
        with torch.no_grad():
            changed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
            for p in changed.parameters():
                p.mul_(1 + scale)
        changed.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 500}))
        folders[step] = folder
    # Given as a shell glob would: checkpoint-1000 before checkpoint-500; the base model first.
    store = score(math_pool, [str(tiny_model_dir), str(folders[1000]), str(folders[500])], tmp_path / "run",
                  show_progress=False)
    snapshots = store.manifest["snapshots"]
    assert [s["step"] for s in snapshots] == [None, 500, 1000]
    assert [s["epoch_end"] for s in snapshots] == [False, True, True]
    tokenized = tokenize_examples(tokenizer, load_pool(math_pool).examples)
    expected_500, _ = score_examples(AutoModelForCausalLM.from_pretrained(folders[500]), tokenized)
    expected_base, _ = score_examples(model, tokenized)
    t = store.load()
    np.testing.assert_allclose(t.losses[:, 1], expected_500, atol=1e-5)
    np.testing.assert_allclose(t.losses[:, 0], expected_base, atol=1e-5)


def test_a_run_directory_refuses_other_settings(tiny_run, tiny_model_dir, math_pool):
    with pytest.raises(InputError, match="max_length"):
        record(math_pool, str(tiny_model_dir), tiny_run.root, RecordConfig(**FAST),
               data_config=DataConfig(max_length=64), score_config=ScoreConfig(shard_size=16), show_progress=False)


def test_the_boundary_rule_is_part_of_a_store_and_old_stores_keep_theirs(tiny_run, tiny_model_dir, math_pool, tmp_path):
    """A store records its boundary rule; one recorded before the option (no key) masked by characters, and
    resumes under that rule only."""
    assert tiny_run.manifest["boundary"] == "reference"
    settings = dict(config=RecordConfig(**FAST), score_config=ScoreConfig(shard_size=16), show_progress=False)
    with pytest.raises(InputError, match=r"different settings \(boundary\)"):
        record(math_pool, str(tiny_model_dir), tiny_run.root, data_config=DataConfig(boundary="characters"), **settings)
    old = tmp_path / "old"
    shutil.copytree(tiny_run.root, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["boundary"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert record(math_pool, str(tiny_model_dir), old, data_config=DataConfig(boundary="characters"),
                  **settings).manifest["complete"]
    for rule in ("reference", "separate"):
        with pytest.raises(InputError, match=r"different settings \(boundary\)"):
            record(math_pool, str(tiny_model_dir), old, data_config=DataConfig(boundary=rule), **settings)


def test_chat_stores_record_the_chat_rule_whatever_the_option(math_pool):
    from s2l.trajectories.record import boundary_used

    assert [boundary_used("chat", DataConfig(boundary=rule)) for rule in ("reference", "separate")] == ["characters"] * 2
    assert boundary_used("alpaca", DataConfig(boundary="separate")) == "separate"


def test_export_writes_the_trajectory_table(tiny_run, tmp_path):
    t = tiny_run.load()
    for name in ("t.parquet", "t.csv"):
        result = runner.invoke(app, ["export", str(tiny_run.root), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "t.parquet").to_pandas()
    assert list(table.columns) == (["example_id", "source", "n_tokens"] + [f"loss_{k}" for k in range(5)]
                                   + [f"top1_prob_{k}" for k in range(5)])  # the measure the run's cells hold
    assert list(table["example_id"]) == list(t.ids)
    np.testing.assert_array_equal(table[[f"loss_{k}" for k in range(5)]].to_numpy(), t.losses)
    np.testing.assert_array_equal(table[[f"top1_prob_{k}" for k in range(5)]].to_numpy(), t.confidence)
    import pandas as pd

    from_csv = pd.read_csv(tmp_path / "t.csv")
    np.testing.assert_allclose(from_csv[[f"loss_{k}" for k in range(5)]].to_numpy(), t.losses, rtol=1e-12)
    bad = runner.invoke(app, ["export", str(tiny_run.root), "--out", str(tmp_path / "t.txt")])
    assert bad.exit_code == 2 and not (tmp_path / "t.txt").exists()


def test_cli_record_info_and_bad_input(tiny_model_dir, math_pool, tmp_path):
    out = tmp_path / "cli"
    result = runner.invoke(app, ["record", "--data", str(math_pool), "--proxy", str(tiny_model_dir), "--out", str(out),
                                 "--epochs", "1", "--snapshots", "2", "--batch-size", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["info", str(out)]).stdout)
    assert info["snapshots_complete"] == "3/3" and info["complete"] is True
    assert info["dataset"]["examples"] == 40

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": 3}\n')
    result = runner.invoke(app, ["record", "--data", str(bad), "--proxy", str(tiny_model_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert f"{bad}:2:" in result.output and "'output' must be a string" in result.output
    assert not (tmp_path / "x").exists()


def test_record_rejects_a_missing_model_directory(math_pool, tmp_path):
    result = runner.invoke(app, ["record", "--data", str(math_pool), "--proxy", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no such model directory" in result.output


def test_kept_checkpoints_reproduce_the_in_process_scores(tiny_model_dir, math_pool, tmp_path):
    store = record(math_pool, str(tiny_model_dir), tmp_path / "kept", RecordConfig(**{**FAST, "keep_checkpoints": True}),
                   show_progress=False)
    folders = sorted((store.root / "checkpoints").iterdir())
    assert [f.name for f in folders] == [f"snapshot-{k:03d}" for k in range(5)]
    tokenized = tokenize_examples(AutoTokenizer.from_pretrained(folders[2]), load_pool(math_pool).examples)
    rescored, _ = score_examples(AutoModelForCausalLM.from_pretrained(folders[2], dtype=torch.float32), tokenized)
    np.testing.assert_allclose(store.load().losses[:, 2], rescored, atol=1e-5)


def test_compiled_scorer_compiles_once_and_follows_every_snapshot(tiny_run, tiny_model_dir, math_pool, tmp_path,
                                                                 monkeypatch):
    """--compile: one compiled copy refreshed in place at each snapshot gives the eager run's columns (a stale
    copy would repeat the base model's), and the setting is part of the run's identity."""
    from torch._dynamo.utils import counters

    compiles, frames_at_each_cell = [], []  # torch.compile calls; frames dynamo has compiled, as each cell is written
    real_compile, real_write_cell = torch.compile, TrajectoryStore.write_cell

    def counting_compile(*args, **kwargs):
        compiles.append(args)
        return real_compile(*args, **kwargs)

    def noting_write_cell(self, *args, **kwargs):
        frames_at_each_cell.append(counters["frames"]["total"])
        return real_write_cell(self, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", counting_compile)  # nn.Module.compile calls it too
    monkeypatch.setattr(TrajectoryStore, "write_cell", noting_write_cell)
    before = counters["frames"]["total"]
    config = ScoreConfig(shard_size=16, compile=True)
    store = record(math_pool, str(tiny_model_dir), tmp_path / "compiled", RecordConfig(**FAST), score_config=config,
                   show_progress=False)
    # Compiled once, for the first cell; none of the 5 snapshots x 3 shards after it compiled anything.
    assert len(compiles) == 1
    assert len(frames_at_each_cell) == 15 and frames_at_each_cell[0] > before
    assert frames_at_each_cell[-1] == frames_at_each_cell[0], frames_at_each_cell
    assert store.manifest["compiled"] is True and tiny_run.manifest["compiled"] is False
    np.testing.assert_allclose(store.load().losses, tiny_run.load().losses, atol=1e-4)
    with pytest.raises(InputError, match="compiled"):
        record(math_pool, str(tiny_model_dir), tiny_run.root, RecordConfig(**FAST), score_config=config,
               show_progress=False)


def adamw_steps(monkeypatch) -> Counter:
    """Counts the optimizer steps each of torch's AdamW implementations runs, wherever the optimizer is built:
    `_fused_adam` (one kernel), `_single_tensor_adam` (a loop over the tensors), `_multi_tensor_adam` (foreach)."""
    import torch.optim.adam as adam

    steps = Counter()
    for name in ("_fused_adam", "_single_tensor_adam", "_multi_tensor_adam"):
        def counted(*args, _real=getattr(adam, name), _name=name, **kwargs):
            steps[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(adam, name, counted)
    return steps


def test_fused_and_looped_adamw_give_the_same_run_up_to_rounding(tiny_model_dir, math_pool, tmp_path, monkeypatch):
    """The default fused AdamW is the same update as the loop over tensors that earlier stores used; those
    stores (no `optim` in their manifest) still resume with --optim adamw_torch."""
    steps = adamw_steps(monkeypatch)
    fused = record(math_pool, str(tiny_model_dir), tmp_path / "fused", RecordConfig(**FAST),
                   score_config=ScoreConfig(shard_size=16), show_progress=False)
    total_steps = fused.manifest["training"]["total_steps"]
    assert fused.manifest["training"]["optim"] == "adamw_torch_fused"
    assert set(steps) == {"_fused_adam"} and steps["_fused_adam"] >= total_steps, steps
    steps.clear()
    looped = record(math_pool, str(tiny_model_dir), tmp_path / "looped", RecordConfig(**FAST, optim="adamw_torch"),
                    score_config=ScoreConfig(shard_size=16), show_progress=False)
    assert "_fused_adam" not in steps and sum(steps.values()) >= total_steps, steps
    assert "optim" not in looped.manifest["training"]
    np.testing.assert_allclose(looped.load().losses, fused.load().losses, rtol=0, atol=1e-4)
    with pytest.raises(InputError, match="optim: unknown value 'sgd'"):
        record(math_pool, str(tiny_model_dir), tmp_path / "bad", RecordConfig(**FAST, optim="sgd"), show_progress=False)
    assert not (tmp_path / "bad").exists()
