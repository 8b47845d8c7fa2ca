"""Two CPU processes (gloo) launched by torchrun fill the same store as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from s2l.trajectories import TrajectoryStore

from helpers import FAST

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "s2l.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a small machine


def cells(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "cells").rglob("*.parquet"))}


def test_record_in_two_processes_gives_the_one_process_store(tiny_run, tiny_model_dir, math_pool, tmp_path):
    out = tmp_path / "two"
    result = subprocess.run(TORCHRUN + [
        "record", "--data", str(math_pool), "--proxy", str(tiny_model_dir), "--out", str(out),
        "--epochs", str(FAST["epochs"]), "--snapshots", str(FAST["snapshots"]), "--batch-size", str(FAST["batch_size"]),
        "--lr", str(FAST["learning_rate"]), "--precision", "float32", "--shard-size", "16", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    two, one = TrajectoryStore(out), tiny_run
    assert two.manifest["complete"] and two.manifest["processes"] == 2
    a, b = one.load(), two.load()
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.losses[:, 0], b.losses[:, 0])  # the base model: same cells, same numbers
    # Training sums the gradient over two processes in another order: equal up to float rounding.
    np.testing.assert_allclose(b.losses, a.losses, rtol=0, atol=1e-4)
    assert not list(out.glob("train_state-*"))


def test_score_in_two_processes_gives_the_same_cells(tiny_model_dir, math_pool, tmp_path):
    args = ["score", "--data", str(math_pool), "--checkpoint", str(tiny_model_dir), "--dtype", "float32",
            "--shard-size", "8", "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "s2l.cli"] + args + ["--out", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(TORCHRUN + args + ["--out", str(tmp_path / "two")], env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert cells(tmp_path / "one") == cells(tmp_path / "two") and len(cells(tmp_path / "one")) == 5
    assert TrajectoryStore(tmp_path / "two").manifest["processes"] == 2
    assert two.stdout.count("done:") + two.stderr.count("done:") == 1  # one process reports


def test_record_with_fsdp_killed_and_resumed_gives_the_one_process_store(tiny_model_dir, math_pool, tmp_path):
    """--fsdp: weights, gradients and AdamW state sharded over two processes. Batches of 3 leave a last batch
    of one example, so one process idles through a step; the run is killed after its first saved state and
    resumed from it."""
    from s2l.trajectories.record import RecordConfig, ScoreConfig, record

    settings = {**FAST, "epochs": 1, "snapshots": 2, "batch_size": 3}  # 14 steps, a saved state at step 7
    one = record(math_pool, str(tiny_model_dir), tmp_path / "one", RecordConfig(**settings),
                 score_config=ScoreConfig(shard_size=16), show_progress=False)
    assert one.manifest["training"]["trained_examples"] % 3 == 1
    out = tmp_path / "fsdp"
    command = TORCHRUN + [
        "record", "--data", str(math_pool), "--proxy", str(tiny_model_dir), "--out", str(out), "--fsdp",
        "--epochs", str(settings["epochs"]), "--snapshots", str(settings["snapshots"]), "--batch-size", "3",
        "--lr", str(settings["learning_rate"]), "--precision", "float32", "--shard-size", "16", "--no-progress"]
    killed = subprocess.run(command, env={**ENV, "S2L_FAULT_AFTER": "20"}, capture_output=True, text=True, timeout=600)
    rank0 = "\n".join(line for line in killed.stderr.splitlines() if line.startswith("[rank0]"))
    assert killed.returncode != 0 and list(out.glob("train_state-*/model.pt")), rank0[-3000:]
    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    two = TrajectoryStore(out)
    assert two.manifest["complete"] and two.manifest["training"]["fsdp"] is True
    np.testing.assert_allclose(two.load().losses, one.load().losses, rtol=0, atol=1e-4)
