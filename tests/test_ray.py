"""`s2l score --executor ray` on a local 2-worker Ray cluster: the same cells as one process, and a worker
killed mid-run costs only its cells."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from s2l.trajectories import TrajectoryStore  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}


def score_args(checkpoints, pool, out: Path, shard_size: int) -> list[str]:
    return ([sys.executable, "-m", "s2l.cli", "score", "--data", str(pool), "--out", str(out), "--dtype", "float32",
             "--shard-size", str(shard_size), "--no-progress"]
            + [arg for c in checkpoints for arg in ("--checkpoint", str(c))])


def cells(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "cells").rglob("*.parquet"))}


def ray_workers() -> list:
    return [p for p in psutil.process_iter(["cmdline"]) if "CellScorer" in " ".join(p.info["cmdline"] or [])]


@pytest.fixture(scope="module")
def local_store(tiny_checkpoints, math_pool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "local"
    subprocess.run(score_args(tiny_checkpoints, math_pool, out, 2), env=ENV, check=True, capture_output=True)
    return out


def test_ray_with_a_worker_killed_mid_run_gives_the_same_store(tiny_checkpoints, math_pool, local_store, tmp_path):
    out = tmp_path / "ray"
    command = score_args(tiny_checkpoints, math_pool, out, 2) + ["--executor", "ray", "--workers", "2"]
    job = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, deadline = None, time.time() + 300
    while job.poll() is None and time.time() < deadline and killed is None:
        done = len(list(out.glob("cells/*/*.done")))
        workers = ray_workers()
        if done >= 3 and workers:  # scoring is under way: take one worker down
            killed = workers[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-3000:]
    assert killed is not None, "the job finished before a worker could be killed"
    store = TrajectoryStore(out)
    assert store.manifest["complete"] and store.manifest["executor"] == "ray"
    assert cells(out) == cells(local_store) and len(cells(out)) == 3 * 20
