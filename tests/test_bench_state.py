"""bench/quality/state.py: a finished cell saved to the repository resumes on a machine without the run's folder."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from s2l.experiment import Experiment, ExperimentConfig

from test_experiment import pool_dir, write_config  # noqa: F401  (pool_dir: the fixture)

STATE = Path(__file__).resolve().parents[1] / "bench" / "quality" / "state.py"


def test_a_saved_state_resumes_without_redoing_finished_work(tiny_model_dir, pool_dir, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    source = json.loads(open(pool_dir / "test.jsonl").readline())["source"]
    data = {"pool": str(pool_dir / "pool.jsonl"),
            "tests": {"one_source": {"path": str(pool_dir / "test.jsonl"), "sources": [source], "max_new_tokens": 3}}}
    config = write_config(tmp_path, tiny_model_dir, pool_dir, data=data, out=str(out), methods=["random"],
                          budgets=[0.5], seeds=[0],
                          target={"model": str(tiny_model_dir),
                                  "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"}})
    experiment = [sys.executable, "-m", "s2l.cli", "experiment", str(config), "--no-progress"]
    done = subprocess.run(experiment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = (out / "results.csv").read_bytes()
    done = subprocess.run([sys.executable, str(STATE), "save", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    state = tmp_path / "state" / "experiment"
    saved = {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()}
    assert {"cells/random/b0.5-s0/metrics.json", "cells/random/b0.5-s0/selection/manifest.json",
            "cells/random/b0.5-s0/eval/one_source/predictions.jsonl", "proxy-run/manifest.json", "state.json"} <= saved
    assert not any("/model/" in name or name.startswith(("tests/", ".")) for name in saved)
    assert list(json.loads((state / "state.json").read_text())["inputs"]) == ["tests/one_source.jsonl"]

    # A new machine: no run folder. The restored run finds every cell finished and writes the same results.
    shutil.rmtree(out)
    done = subprocess.run([sys.executable, str(STATE), "restore", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    status = Experiment(ExperimentConfig.load(config)).status()
    assert status["proxy_recorded"] and status["finished"] == 1
    (out / "results.csv").unlink(missing_ok=True)
    done = subprocess.run(experiment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "results.csv").read_bytes() == results
    assert not (out / "cells" / "random" / "b0.5-s0" / "model").exists()  # nothing was trained again

    # Saved work made from other data is refused, with the file named.
    record = json.loads((state / "state.json").read_text())
    record["inputs"]["tests/one_source.jsonl"] = "0" * 64
    (state / "state.json").write_text(json.dumps(record))
    shutil.rmtree(out)
    done = subprocess.run([sys.executable, str(STATE), "restore", str(config)], capture_output=True, text=True)
    assert done.returncode == 1 and "one_source.jsonl" in done.stderr and "differs" in done.stderr
    assert "Traceback" not in done.stderr
