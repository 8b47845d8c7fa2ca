"""bench/quality/state.py: a finished cell saved to the repository resumes on a machine without the run's folder."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from s2l.cli import app
from s2l.experiment import Experiment, ExperimentConfig

from test_experiment import pool_dir, write_config  # noqa: F401  (pool_dir: the fixture)

_spec = importlib.util.spec_from_file_location(
    "bench_state", Path(__file__).resolve().parents[1] / "bench" / "quality" / "state.py")
bench_state = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_state)


def state_command(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["state.py", *args])
    return bench_state.main()


def test_a_saved_state_resumes_without_redoing_finished_work(tiny_model_dir, pool_dir, tmp_path, monkeypatch,  # noqa: F811
                                                             capsys):
    out = tmp_path / "out"
    source = json.loads(open(pool_dir / "test.jsonl").readline())["source"]
    data = {"pool": str(pool_dir / "pool.jsonl"),
            "tests": {"one_source": {"path": str(pool_dir / "test.jsonl"), "sources": [source], "max_new_tokens": 3}}}
    config = write_config(tmp_path, tiny_model_dir, pool_dir, data=data, out=str(out), methods=["random"],
                          budgets=[0.5], seeds=[0],
                          target={"model": str(tiny_model_dir),
                                  "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"}})
    experiment = ["experiment", str(config), "--no-progress"]
    done = CliRunner().invoke(app, experiment)
    assert done.exit_code == 0, done.output
    results = (out / "results.csv").read_bytes()
    assert state_command(monkeypatch, "save", str(config)) == 0
    state = tmp_path / "state" / "experiment"
    saved = {str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()}
    assert {"cells/random/b0.5-s0/metrics.json", "cells/random/b0.5-s0/selection/manifest.json",
            "cells/random/b0.5-s0/eval/one_source/predictions.jsonl", "proxy-run/manifest.json", "state.json"} <= saved
    assert not any("/model/" in name or name.startswith(("tests/", ".")) for name in saved)
    assert list(json.loads((state / "state.json").read_text())["inputs"]) == ["tests/one_source.jsonl"]

    # watch: saves and commits the state folder alone when something new finished, and not again until then.
    for key, value in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                       "GIT_COMMITTER_EMAIL": "t@t"}.items():
        monkeypatch.setenv(key, value)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "unrelated.txt").write_text("staged, not the watcher's to commit\n")
    subprocess.run(["git", "add", "unrelated.txt"], cwd=tmp_path, check=True)
    loaded = Experiment(ExperimentConfig.load(config))
    monkeypatch.chdir(tmp_path)  # the state folder named relative to where the command runs, as state.py names it
    assert bench_state.watch(loaded, Path("state/experiment"), every=0, commit=True, rounds=2) == 1
    log = subprocess.run(["git", "log", "--format=%s", "--name-only"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert log.startswith("tiny: state saved, 1 cells finished") and "state/experiment/state.json" in log
    assert "unrelated.txt" not in log

    # A new machine: no run folder. The restored run finds every cell finished and writes the same results.
    shutil.rmtree(out)
    assert state_command(monkeypatch, "restore", str(config)) == 0
    status = Experiment(ExperimentConfig.load(config)).status()
    assert status["proxy_recorded"] and status["finished"] == 1
    (out / "results.csv").unlink(missing_ok=True)
    done = CliRunner().invoke(app, experiment)
    assert done.exit_code == 0, done.output
    assert (out / "results.csv").read_bytes() == results
    assert not (out / "cells" / "random" / "b0.5-s0" / "model").exists()  # nothing was trained again

    # Saved work made from other data is refused, with the file named.
    record = json.loads((state / "state.json").read_text())
    record["inputs"]["tests/one_source.jsonl"] = "0" * 64
    (state / "state.json").write_text(json.dumps(record))
    shutil.rmtree(out)
    capsys.readouterr()
    assert state_command(monkeypatch, "restore", str(config)) == 1
    error = capsys.readouterr().err
    assert "one_source.jsonl" in error and "differs" in error
