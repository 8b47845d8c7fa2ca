"""A new user's first hour on real data, end to end with the tiny model: record and select on GSM8K's own
train file (its fields mapped, not converted) and on a pool built from the real sets, then evaluate on
GSM8K test and MATH-500 as published, each answer graded by its set's rule. Skipped without the shared data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s2l.cli import app

from helpers import NO_SHARED_DATA, ROOT, SHARED_DATA

MATH = SHARED_DATA / "math"
pytestmark = pytest.mark.skipif(not (MATH / "gsm8k_train.jsonl").is_file(), reason=NO_SHARED_DATA)
runner = CliRunner()
# One epoch, two snapshots, in float32: seconds on the tiny model.
PROXY = ["--epochs", "1", "--snapshots", "2", "--batch-size", "8", "--lr", "1e-3", "--precision", "float32"]


def s2l(*args: str):
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def head(name: str, n: int, out: Path) -> Path:
    """The first `n` lines of a real file, byte for byte."""
    with open(MATH / name, "rb") as f:
        out.write_bytes(b"".join(f.readline() for _ in range(n)))
    return out


def predictions(metrics: Path) -> list[dict]:
    return [json.loads(line) for line in metrics.with_name("predictions.jsonl").read_text().splitlines()]


def test_record_and_select_on_gsm8k_as_published(tiny_model_dir, tmp_path):
    data = head("gsm8k_train.jsonl", 32, tmp_path / "gsm8k_train.jsonl")
    s2l("record", "--data", str(data), "--field", "instruction=question", "--field", "output=answer",
        "--proxy", str(tiny_model_dir), *PROXY, "--out", str(tmp_path / "run"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["n_examples"] == 32 and manifest["complete"]

    # select reads the mapping from the run; the subset is the user's own lines, unconverted.
    s2l("select", "--trajectories", str(tmp_path / "run"), "--data", str(data), "--method", "s2l",
        "--budget", "0.5", "--clusters", "3", "--seed", "0", "--out", str(tmp_path / "s2l-50"))
    selected = (tmp_path / "s2l-50" / "selected.jsonl").read_bytes().splitlines(keepends=True)
    assert len(selected) == 16
    assert set(selected) <= set(data.read_bytes().splitlines(keepends=True))
    assert all(set(json.loads(line)) == {"question", "answer"} for line in selected)


def test_record_and_select_on_the_built_real_pool(tiny_model_dir, tmp_path):
    out = tmp_path / "real"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_real_math_pool.py"), "--source-dir", str(MATH),
                    "--out", str(out), "--size", "60", "--test-per-source", "2", "--ood-limit", "3", "--seed", "0"],
                   check=True, capture_output=True, timeout=120)
    pool = out / "pool.jsonl"
    sources = {json.loads(line)["source"] for line in pool.read_text().splitlines()}
    assert len(sources) >= 6
    s2l("record", "--data", str(pool), "--proxy", str(tiny_model_dir), *PROXY, "--out", str(tmp_path / "run"))
    s2l("select", "--trajectories", str(tmp_path / "run"), "--data", str(pool), "--method", "s2l",
        "--budget", "0.3", "--clusters", "2", "--seed", "0", "--out", str(tmp_path / "s2l-30"))
    selected = [json.loads(line) for line in (tmp_path / "s2l-30" / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 18 and all(row["source"] in sources for row in selected)

    # Its test file grades every row by the rule the builder wrote down.
    metrics = tmp_path / "eval" / "metrics.json"
    s2l("evaluate", "--model", str(tiny_model_dir), "--data", str(out / "test" / "all.jsonl"),
        "--max-new-tokens", "4", "--out", str(metrics))
    rows = {json.loads(line)["instruction"]: json.loads(line)
            for line in (out / "test" / "all.jsonl").read_text().splitlines()}
    graded = predictions(metrics)
    assert {p["scorer"] for p in graded} <= {"gsm8k", "boxed", "choice", "number", "text"}
    assert len(graded) == len(rows)
    result = json.loads(metrics.read_text())
    assert "ood" in result and {"gsm8k", "math500", "svamp"} <= set(result["by_source"])


def test_evaluate_on_gsm8k_test_and_math500_as_published(tiny_model_dir, tmp_path):
    gsm8k = head("gsm8k_test.jsonl", 6, tmp_path / "gsm8k_test.jsonl")
    s2l("evaluate", "--model", str(tiny_model_dir), "--data", str(gsm8k), "--field", "instruction=question",
        "--field", "output=answer", "--max-new-tokens", "8", "--out", str(tmp_path / "gsm8k" / "metrics.json"))
    golds = [json.loads(line)["answer"].rsplit("####", 1)[1].strip().replace(",", "")
             for line in gsm8k.read_text().splitlines()]
    rows = predictions(tmp_path / "gsm8k" / "metrics.json")
    assert [r["scorer"] for r in rows] == ["gsm8k"] * 6
    assert [r["gold"] for r in rows] == golds

    math500 = head("math500.jsonl", 6, tmp_path / "math500.jsonl")
    s2l("evaluate", "--model", str(tiny_model_dir), "--data", str(math500), "--field", "instruction=problem",
        "--field", "output=solution", "--max-new-tokens", "8", "--out", str(tmp_path / "math500" / "metrics.json"))
    rows = predictions(tmp_path / "math500" / "metrics.json")
    assert [r["scorer"] for r in rows] == ["boxed"] * 6
    assert [r["gold"] for r in rows] == [json.loads(line)["answer"] for line in math500.read_text().splitlines()]
    metrics = json.loads((tmp_path / "math500" / "metrics.json").read_text())
    low, high = metrics["overall"]["accuracy_ci95"]
    assert 0 <= low <= metrics["overall"]["accuracy"] <= high <= 1
