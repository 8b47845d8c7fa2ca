"""`s2l experiment` end to end on the tiny model: every cell in the table, and a killed run resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from s2l.cli import app
from s2l.errors import InputError
from s2l.experiment import Experiment, ExperimentConfig

from helpers import make_pool

runner = CliRunner()


def write_config(tmp_path: Path, tiny_model_dir: Path, pool_dir: Path, **changes) -> Path:
    config = {
        "name": "tiny",
        "data": {"pool": str(pool_dir / "pool.jsonl"), "test": str(pool_dir / "test.jsonl")},
        "proxy": {"model": str(tiny_model_dir),
                  "record": {"epochs": 1, "snapshots": 2, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"}},
        "target": {"model": str(tiny_model_dir), "trajectories": True,
                   "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"},
                   "record": {"epochs": 1, "snapshots": 2, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"}},
        "evaluate": {"max_new_tokens": 4, "batch_size": 8},
        "methods": ["full", "random", {"name": "s2l", "params": {"n_clusters": 2}},
                    {"name": "s2l", "label": "s2l-pooled", "params": {"n_clusters": 2, "per_source": False}}],
        "budgets": [0.5],
        "seeds": {"default": [0], "random": [0, 1]},
    }
    config.update(changes)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exp-pool")
    make_pool(folder, 16)
    return folder


def test_experiment_runs_every_cell_and_summarises(tiny_model_dir, pool_dir, tmp_path):
    # Two test sets from one file: loss alone on every row, and generation on one source's rows only.
    source = json.loads(open(pool_dir / "test.jsonl").readline())["source"]
    data = {"pool": str(pool_dir / "pool.jsonl"),
            "tests": {"heldout": {"path": str(pool_dir / "test.jsonl"), "generate": False},
                      "one_source": {"path": str(pool_dir / "test.jsonl"), "sources": [source], "max_new_tokens": 3}}}
    config = write_config(tmp_path, tiny_model_dir, pool_dir, data=data, compare={"s2l": "s2l-pooled"})
    out = tmp_path / "out"
    result = runner.invoke(app, ["experiment", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "results.csv")))
    cells = {("full", "all", "0"), ("random", "0.5", "0"), ("random", "0.5", "1"), ("s2l", "0.5", "0"),
             ("s2l-pooled", "0.5", "0")}
    assert {(r["label"], r["budget"], r["seed"], r["test"]) for r in rows} == {
        (*cell, test) for cell in cells for test in ("all", "heldout", "one_source")}
    n_source = sum(1 for line in open(pool_dir / "test.jsonl") if json.loads(line)["source"] == source)
    for row in rows:
        assert float(row["loss"]) > 0 and int(row["n_train"]) == (16 if row["label"] == "full" else 8)
        assert int(row["n_loss"]) == {"heldout": 5, "one_source": n_source, "all": 5 + n_source}[row["test"]]
        # Accuracy only where the set generates; `all` pools the judged items there are.
        assert (row["accuracy"] == "") == (row["test"] == "heldout")
    summary = list(csv.DictReader(open(out / "summary.csv")))
    s2l = next(s for s in summary if s["label"] == "s2l" and s["test"] == "heldout" and s["metric"] == "loss")
    assert float(s2l["low"]) <= float(s2l["value"]) <= float(s2l["high"])
    assert float(s2l["vs_random_low"]) <= float(s2l["vs_random"]) <= float(s2l["vs_random_high"])
    assert s2l["vs_random_verdict"] in ("win", "loss", "no difference") and s2l["vs_full_verdict"]
    assert s2l["random_equivalent"] != ""  # random at 0.5 and the full pool make a curve
    md = (out / "results.md").read_text()
    assert "## loss: heldout (5 items)" in md and "| random | 0.5 | 2 | 8 |" in md and "## Cost" in md
    assert "## Verdict" in md and "| s2l | 0.5 | " in md.split("Against the full pool")[0]
    assert "Proxy → target rank agreement" in md
    # The pair `compare` names: s2l against its pooled variant, on every test set (accuracy where it generates).
    compared = list(csv.DictReader(open(out / "pairs.csv")))
    assert {(p["label"], p["against"], p["test"], p["metric"]) for p in compared} == {
        ("s2l", "s2l-pooled", test, metric) for test in ("all", "heldout", "one_source") for metric in ("loss", "accuracy")
        if not (test == "heldout" and metric == "accuracy")}
    assert all(float(p["difference_low"]) <= float(p["difference"]) <= float(p["difference_high"]) for p in compared)
    assert "## Selections by source" in md and "| s2l | 0.5 | 1 | " in md.split("## Selections by source")[1]
    assert "## Paired comparisons (`compare`)" in md and "| s2l | s2l-pooled | 0.5 | 1 vs 1 | heldout | " in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    transfer = json.loads((out / "transfer.json").read_text())
    assert transfer["examples"] == 16 and -1.0 <= transfer["final_loss_spearman"] <= 1.0
    low, high = transfer["final_loss_spearman_ci95"]
    assert -1.0 <= low <= high <= 1.0
    # Models are deleted once evaluated; selections, metrics and each set's predictions stay.
    cell = out / "cells" / "s2l" / "b0.5-s0"
    assert (cell / "selection" / "manifest.json").is_file() and (cell / "metrics.json").is_file()
    assert (cell / "eval" / "one_source" / "predictions.jsonl").is_file()
    assert not (cell / "model").exists()
    status = Experiment(ExperimentConfig.load(config, out)).status()
    assert status["finished"] == 5 and {c["state"] for c in status["cells"]} == {"finished"}
    assert status["target_recorded"] and status["transfer"] and status["estimate_seconds"] == 0
    # --analyze rewrites the same results from the finished cells, running nothing.
    before = {name: (out / name).read_bytes() for name in ("results.csv", "summary.csv", "pairs.csv", "results.md")}
    for name in before:
        (out / name).unlink()
    result = runner.invoke(app, ["experiment", str(config), "--out", str(out), "--no-progress", "--analyze"])
    assert result.exit_code == 0, result.output
    assert {name: (out / name).read_bytes() for name in before} == before


def test_cells_run_smallest_budget_first_in_waves_of_seeds(tmp_path, pool_dir):
    config = ExperimentConfig.load(write_config(
        tmp_path, tmp_path / "model", pool_dir, budgets=[0.3, 0.1],
        methods=["full", {"name": "random", "budgets": [0.1, 0.3, 0.5]}, "s2l"],
        seeds={"default": [0], "random": [0, 1], "s2l": [5, 6]}))
    assert [c.key for c in config.cells()] == [
        "full/all-s0", "random/b0.1-s0", "s2l/b0.1-s5", "random/b0.1-s1", "s2l/b0.1-s6",
        "random/b0.3-s0", "s2l/b0.3-s5", "random/b0.3-s1", "s2l/b0.3-s6", "random/b0.5-s0", "random/b0.5-s1"]


def test_a_killed_experiment_finishes_only_the_missing_cells(tiny_model_dir, pool_dir, tmp_path):
    config = write_config(tmp_path, tiny_model_dir, pool_dir, methods=["random"], budgets=[0.25, 0.5], seeds=[0],
                          target={"model": str(tiny_model_dir),
                                  "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"}})
    out = tmp_path / "out"
    command = [sys.executable, "-m", "s2l.cli", "experiment", str(config), "--out", str(out), "--no-progress"]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = out / "cells" / "random" / "b0.25-s0" / "metrics.json"
    deadline = time.time() + 240
    while not first.is_file() and time.time() < deadline and child.poll() is None:
        time.sleep(0.2)
    assert first.is_file(), "the first cell did not finish in time"
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    finished_at = first.stat().st_mtime_ns
    # --status reads the markers the killed run left, and estimates the rest from the finished cell's rates.
    result = runner.invoke(app, ["experiment", str(config), "--out", str(out), "--status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{out}: 1 of 2 cells finished; about ") and "h left" in lines[0]
    assert "random/b0.25-s0  finished (training " in result.output
    assert any(line.split()[:2] in (["random/b0.5-s0", "pending"], ["random/b0.5-s0", "started:"]) for line in lines)
    status = Experiment(ExperimentConfig.load(config, out)).status()
    assert status["proxy_recorded"] and not status["target_asked"] and status["estimate_seconds"] > 0
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert first.stat().st_mtime_ns == finished_at  # not recomputed
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted(r["budget"] for r in rows) == ["0.25", "0.5"]


def test_only_runs_the_matching_cells_and_keeps_the_others_results(tiny_model_dir, pool_dir, tmp_path):
    """`--only full/*` trains the reference alone (no trajectory is recorded for it); a later run does the rest,
    and the results of both runs stand together."""
    config = write_config(tmp_path, tiny_model_dir, pool_dir, methods=["full", "random"], budgets=[0.5], seeds=[0],
                          target={"model": str(tiny_model_dir),
                                  "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "precision": "float32"}})
    out = tmp_path / "out"
    result = runner.invoke(app, ["experiment", str(config), "--out", str(out), "--no-progress", "--only", "full/*"])
    assert result.exit_code == 0, result.output
    assert (out / "cells" / "full" / "all-s0" / "metrics.json").is_file()
    assert not (out / "cells" / "random").exists() and not (out / "proxy-run").exists()
    assert [(r["method"], r["budget"]) for r in csv.DictReader(open(out / "results.csv"))] == [("full", "all")]
    finished_at = (out / "cells" / "full" / "all-s0" / "metrics.json").stat().st_mtime_ns
    result = runner.invoke(app, ["experiment", str(config), "--out", str(out), "--no-progress", "--only", "random/*"])
    assert result.exit_code == 0, result.output
    assert [(r["method"], r["budget"]) for r in csv.DictReader(open(out / "results.csv"))] == [("full", "all"),
                                                                                               ("random", "0.5")]
    assert (out / "cells" / "full" / "all-s0" / "metrics.json").stat().st_mtime_ns == finished_at  # not run again
    result = runner.invoke(app, ["experiment", str(config), "--out", str(out), "--only", "s2l/*"])
    assert result.exit_code == 2
    assert "--only: no cell matches 's2l/*' (the cells: full/all-s0, random/b0.5-s0)" in result.output
    assert "Traceback" not in result.output


def test_bad_configs_are_clear_errors(tmp_path, pool_dir):
    model = tmp_path / "model"  # loading a config reads no model
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        ExperimentConfig.load(bad)
    with pytest.raises(InputError, match="unknown settings"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, colour="blue"))
    with pytest.raises(InputError, match="budgets"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, budgets=[0]))
    with pytest.raises(InputError, match="labels repeat"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, methods=["s2l", "s2l"]))
    with pytest.raises(InputError, match="compare: 'lp' is not a method label"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, compare={"s2l": ["lp"]}))
    with pytest.raises(InputError, match="compared with itself"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, compare={"s2l": "s2l"}))
    with pytest.raises(InputError, match="compare: a mapping"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, compare=["s2l", "random"]))
    with pytest.raises(InputError, match="'full' trains on the whole pool"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, compare={"s2l": "full"}))
    apart = ["random", {"name": "s2l", "budgets": [0.25]}]
    with pytest.raises(InputError, match="'s2l' and 'random' have no budget in common"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, methods=apart, compare={"s2l": "random"}))
    twice = ExperimentConfig.load(write_config(tmp_path, model, pool_dir, compare={"s2l": ["random", "random"]}))
    assert twice.compare == {"s2l": ["random"]}
    with pytest.raises(InputError, match="unknown keys seeds"):
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, methods=[{"name": "s2l", "seeds": [1]}]))
    tests = {"pool": str(pool_dir / "pool.jsonl"), "tests": {"a": {"path": "t.jsonl", "max_new_token": 3}}}
    with pytest.raises(InputError, match="unknown settings max_new_token") as e:
        ExperimentConfig.load(write_config(tmp_path, model, pool_dir, data=tests)).test_sets()
    assert e.value.parameter == "data.tests.a"
    result = runner.invoke(app, ["experiment", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "no such config file" in result.output


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu.yaml"])
def test_the_benchmark_configs_are_valid(name):
    config = ExperimentConfig.load(Path(__file__).parents[1] / "bench" / "quality" / name)
    Experiment(config).check()
    assert config.data["generate"]["script"] and len(config.cells()) >= 20
    labels = {m.label for m in config.methods}
    assert {"full", "random", "source-random", "s2l", "s2l-pooled", "lp", "perplexity-mid", "cluster-random"} <= labels


@pytest.mark.parametrize("host", ["cpu", "gpu"])
def test_the_real_data_benchmark_configs_are_valid(host):
    folder = Path(__file__).parents[1] / "bench" / "quality" / f"real-{host}"
    math = ExperimentConfig.load(folder / f"real-{host}.yaml")
    Experiment(math).check()
    cells = math.cells()
    # The design: full; random at 10/30/50% (3 seeds); s2l (3) and source-random (2) at 10/30%; five more at 10/30%.
    assert len(cells) == 1 + 9 + 6 + 4 + 10 and cells[0].key == "full/all-s0"
    assert all(c.budget == 0.1 for c in cells[1:14]) and {c.seed for c in cells if c.method.name == "random"} == {0, 1, 2}
    assert {"in_domain", "gsm8k", "svamp"} <= {t.name for t in math.test_sets()}
    assert math.score_config("proxy").ifd  # the ifd method reads the response-alone column
    dolly = ExperimentConfig.load(folder / f"dolly-{host}.yaml")
    Experiment(dolly).check()
    assert {c.method.label for c in dolly.cells()} == {"full", "random", "lp", "lp-app", "s2l"}


def test_a_bad_line_in_a_filtered_test_file_names_its_file_and_line(tmp_path, pool_dir):
    test = tmp_path / "test.jsonl"
    test.write_text('{"instruction": "q", "output": "a", "source": "x"}\n{"instruction": "q2", "output": \n')
    data = {"pool": str(pool_dir / "pool.jsonl"), "tests": {"x": {"path": str(test), "sources": ["x"]}}}
    config = ExperimentConfig.load(write_config(tmp_path, tmp_path / "model", pool_dir, data=data), out=tmp_path / "out")
    with pytest.raises(InputError) as e:
        Experiment(config)._write_test_files()
    assert e.value.line == 2 and str(test) in str(e.value)
    assert not (tmp_path / "out" / "tests" / "x.jsonl").exists()  # nothing half-written
