"""Fault injection: `s2l record` killed with SIGKILL at points spread over a run (between training steps,
mid-cell, with a file written but not renamed into place) resumes to a store identical to an uninterrupted
run's, with no cell missing, duplicated or half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import FAST

# Each trial starts a Python process, so 20 take minutes: `make test` runs one trial per kind of point,
# `make test-faults` runs 21 (S2L_FAULT_TRIALS=21).
TRIALS = int(os.environ.get("S2L_FAULT_TRIALS", "3"))


def record_command(tiny_model_dir: Path, pool: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "s2l.cli", "record", "--data", str(pool), "--proxy", str(tiny_model_dir),
            "--out", str(out), "--epochs", str(FAST["epochs"]), "--snapshots", str(FAST["snapshots"]),
            "--batch-size", str(FAST["batch_size"]), "--lr", str(FAST["learning_rate"]), "--precision", "float32",
            "--shard-size", "16", "--no-progress"]


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store but the manifest (its wall time differs) and the lock."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", ".s2l.lock")}


def test_record_killed_anywhere_resumes_to_the_same_store(tiny_model_dir, math_pool, tmp_path):
    from s2l.trajectories import TrajectoryStore

    reference = tmp_path / "reference"
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "S2L_FAULT_TRACE": str(trace)}
    subprocess.run(record_command(tiny_model_dir, math_pool, reference), env=env, check=True, capture_output=True)
    points = trace.read_text().splitlines()
    expected = store_files(reference)
    kinds = Counter(p.split(":")[0] for p in points)
    assert {"training step", "scoring batch", "written, not renamed"} <= set(kinds), kinds

    # Trials spread evenly over each kind of point in turn, so every kind is hit.
    by_kind = {kind: [i + 1 for i, p in enumerate(points) if p.split(":")[0] == kind] for kind in sorted(kinds)}
    chosen = []
    for k, (kind, positions) in enumerate(by_kind.items()):
        share = TRIALS // len(by_kind) + (k < TRIALS % len(by_kind))
        chosen += [positions[int(i)] for i in np.linspace(0, len(positions) - 1, share).round()] if share else []
    killed_at = Counter()
    for trial, n in enumerate(chosen):
        out = tmp_path / f"trial-{trial}"
        env = {**os.environ, "S2L_FAULT_AFTER": str(n)}
        killed = subprocess.run(record_command(tiny_model_dir, math_pool, out), env=env, capture_output=True, text=True)
        assert killed.returncode == -9, (n, points[n - 1], killed.stderr[-500:])
        killed_at[points[n - 1].split(":")[0]] += 1
        resumed = subprocess.run(record_command(tiny_model_dir, math_pool, out), capture_output=True, text=True)
        assert resumed.returncode == 0, (n, points[n - 1], resumed.stderr[-500:])
        assert store_files(out) == expected, f"killed at point {n} ({points[n - 1]})"
        assert TrajectoryStore(out).manifest["complete"] is True
    assert len(killed_at) == min(3, TRIALS), killed_at  # every kind of point was hit
