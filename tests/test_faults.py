"""Fault injection: `s2l record`, `s2l score` and `s2l experiment` killed with SIGKILL at points spread over
a run (between training steps, mid-cell, mid-generation, with a file written but not renamed into place)
resume to the outputs of an uninterrupted run, with no cell missing, duplicated or half-written."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from helpers import FAST, make_pool

# Each trial starts two Python processes, so 20 take minutes: `make test` runs one trial per
# command, `make test-faults` runs 21 of each (S2L_FAULT_TRIALS=21).
TRIALS = int(os.environ["S2L_FAULT_TRIALS"]) if os.environ.get("S2L_FAULT_TRIALS") else None
S2L = [sys.executable, "-m", "s2l.cli"]


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store but the manifest (its wall time differs) and the lock."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", ".s2l.lock")}


def trial_points(points: list[str], trials: int) -> list[int]:
    """1-based positions of `trials` fault points, spread evenly over each kind of point in turn."""
    kinds = sorted({p.split(":")[0] for p in points})
    by_kind = {kind: [i + 1 for i, p in enumerate(points) if p.split(":")[0] == kind] for kind in kinds}
    chosen = []
    for k, (kind, positions) in enumerate(by_kind.items()):
        share = trials // len(by_kind) + (k < trials % len(by_kind))
        if share == 1:  # one point of this kind: the middle one
            chosen.append(positions[len(positions) // 2])
        elif share:
            chosen += [positions[int(i)] for i in np.linspace(0, len(positions) - 1, share).round()]
    return chosen


def kill_and_resume(command: Callable[[Path], list[str]], outputs: Callable[[Path], dict], tmp_path: Path,
                    must_hit: set[str], trials: int) -> None:
    """Run once to trace the fault points, then for each trial kill a fresh run at one point, run the same
    command again, and compare what it leaves with the uninterrupted run's outputs."""
    reference = tmp_path / "reference"
    trace = tmp_path / "trace.txt"
    subprocess.run(command(reference), env={**os.environ, "S2L_FAULT_TRACE": str(trace)}, check=True,
                   capture_output=True)
    points = trace.read_text().splitlines()
    kinds = Counter(p.split(":")[0] for p in points)
    assert must_hit <= set(kinds), kinds
    expected = outputs(reference)

    trials = TRIALS or trials
    killed_at = Counter()
    for trial, n in enumerate(trial_points(points, trials)):
        out = tmp_path / f"trial-{trial}"
        killed = subprocess.run(command(out), env={**os.environ, "S2L_FAULT_AFTER": str(n)}, capture_output=True,
                                text=True)
        assert killed.returncode == -9, (n, points[n - 1], killed.stderr[-500:])
        killed_at[points[n - 1].split(":")[0]] += 1
        resumed = subprocess.run(command(out), capture_output=True, text=True)
        assert resumed.returncode == 0, (n, points[n - 1], resumed.stderr[-500:])
        assert outputs(out) == expected, f"killed at point {n} ({points[n - 1]})"
    assert len(killed_at) == min(len(kinds), trials), killed_at  # every kind of point was hit


def complete_store(out: Path) -> dict[str, bytes]:
    from s2l.trajectories import TrajectoryStore

    assert TrajectoryStore(out).manifest["complete"] is True
    return store_files(out)


def test_record_killed_anywhere_resumes_to_the_same_store(tiny_model_dir, math_pool, tmp_path):
    def command(out: Path) -> list[str]:
        return S2L + ["record", "--data", str(math_pool), "--proxy", str(tiny_model_dir), "--out", str(out),
                      "--epochs", str(FAST["epochs"]), "--snapshots", str(FAST["snapshots"]),
                      "--batch-size", str(FAST["batch_size"]), "--lr", str(FAST["learning_rate"]),
                      "--precision", "float32", "--shard-size", "16", "--no-progress"]

    kill_and_resume(command, complete_store, tmp_path, {"training step", "scoring batch", "written, not renamed"}, 1)


def test_in_training_capture_killed_anywhere_resumes_to_the_same_store(tiny_model_dir, math_pool, tmp_path):
    def command(out: Path) -> list[str]:
        return S2L + ["record", "--data", str(math_pool), "--proxy", str(tiny_model_dir), "--out", str(out),
                      "--capture", "in-training", "--epochs", str(FAST["epochs"]),
                      "--batch-size", str(FAST["batch_size"]), "--lr", str(FAST["learning_rate"]),
                      "--precision", "float32", "--shard-size", "16", "--no-progress"]

    kill_and_resume(command, complete_store, tmp_path, {"training step", "scoring batch", "written, not renamed"}, 1)


def test_score_killed_anywhere_resumes_to_the_same_store(tiny_checkpoints, math_pool, tmp_path):
    def command(out: Path) -> list[str]:
        return (S2L + ["score", "--data", str(math_pool), "--out", str(out), "--dtype", "float32",
                       "--shard-size", "16", "--no-progress"]
                + [arg for c in tiny_checkpoints for arg in ("--checkpoint", str(c))])

    kill_and_resume(command, complete_store, tmp_path, {"scoring batch", "written, not renamed"}, 1)


# What changes from run to run in an experiment's folder: timings, and the manifests that carry them.
def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def experiment_outputs(out: Path) -> dict:
    """Every file an experiment leaves, timings aside: results, each cell's selection, metrics and
    predictions, and the proxy's store."""
    files = {}
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(out))
        if not path.is_file() or path.name in ("manifest.json", ".s2l.lock"):
            continue
        text = path.read_text(errors="replace").replace(str(out), "OUT")  # metrics name the model folder
        if path.suffix == ".json":
            files[name] = _without_timings(json.loads(text))
        elif path.name == "results.md":  # its cost section is timings
            files[name] = re.sub(r"## Cost\n.*?(?=\n## |\Z)", "", text, flags=re.S)
        elif path.name == "results.csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            files[name] = [_without_timings(r) for r in rows]
        else:
            files[name] = path.read_bytes()
    assert "results.csv" in files and any(n.endswith("predictions.jsonl") for n in files)
    return files


def test_experiment_killed_anywhere_finishes_with_the_same_results(tiny_model_dir, tmp_path):
    pool_dir = tmp_path / "pool"
    make_pool(pool_dir, 16)
    config = {
        "name": "faults",
        "data": {"pool": str(pool_dir / "pool.jsonl"), "test": str(pool_dir / "test.jsonl")},
        "proxy": {"model": str(tiny_model_dir),
                  "record": {"epochs": 1, "snapshots": 2, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"},
                  "score": {"shard_size": 8}},
        "target": {"model": str(tiny_model_dir),
                   "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"}},
        "evaluate": {"max_new_tokens": 4, "batch_size": 2},
        "methods": ["random", {"name": "s2l", "params": {"n_clusters": 2}}],
        "budgets": [0.5],
        "seeds": [0],
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))

    def command(out: Path) -> list[str]:
        return S2L + ["experiment", str(path), "--out", str(out), "--no-progress"]

    kill_and_resume(command, experiment_outputs, tmp_path,
                    {"training step", "scoring batch", "target training step", "generation batch",
                     "written, not renamed"}, 1)
