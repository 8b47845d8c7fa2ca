"""Examples with an empty answer or request (the original Alpaca holds some) through every command: kept in place
with their reason and no loss, never trained on or selected, counted by check-data, record, select, train and the
report; `--strict` refuses them with FILE:LINE and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import FAST
from s2l.cli import app
from s2l.config import DataConfig, RecordConfig, ScoreConfig, TrainConfig
from s2l.data import load_pool
from s2l.trajectories.record import record
from s2l.training import MANIFEST, train

runner = CliRunner()

GOOD = [{"instruction": f"Add {i} and {i + 2}.", "output": f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}",
         "source": "add" if i % 3 else "sum"} for i in range(12)]
# Line numbers in the file, and why each is left out.
EMPTY = {3: ("empty_response", {"instruction": "Name a colour.", "output": "", "source": "add"}),
         7: ("empty_response", {"instruction": "Say nothing.", "output": "  \n ", "source": "sum"}),
         11: ("empty_prompt", {"instruction": " ", "input": "", "output": "Blue", "source": "add"})}
EXPECTED = {"empty_prompt": 1, "empty_response": 2}


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    rows, good = [], iter(GOOD)
    for line in range(1, len(GOOD) + len(EMPTY) + 1):
        rows.append(EMPTY[line][1] if line in EMPTY else next(good))
    path = tmp_path_factory.mktemp("empty") / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run(pool, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    return record(pool, str(tiny_model_dir), out, RecordConfig(**FAST), score_config=ScoreConfig(shard_size=8),
                  show_progress=False)


def empty_rows(pool: Path) -> np.ndarray:
    return np.array([e.line in EMPTY for e in load_pool(pool).examples])


def test_record_keeps_them_listed_with_their_reason_and_no_loss(run, pool):
    manifest = run.manifest
    assert manifest["excluded"] == {"duplicate": 0, "no_response_tokens": 0, "truncated_kept": 0, **EXPECTED}
    assert manifest["dataset"]["excluded"] == EXPECTED
    assert manifest["training"]["trained_examples"] == len(GOOD)  # never trained on
    examples = run.read_examples().to_pylist()
    assert [r["example_id"] for r in examples] == load_pool(pool).ids  # every example, in input order
    assert {r["line"]: r["excluded"] for r in examples if r["excluded"]} == {k: v[0] for k, v in EMPTY.items()}
    assert all(r["n_tokens"] == 0 and r["n_input_tokens"] > 0 for r in examples if r["excluded"])
    assert all(r["n_tokens"] > 0 for r in examples if not r["excluded"])
    t = run.load()
    empty = empty_rows(pool)
    assert np.isnan(t.losses[empty]).all() and np.isfinite(t.losses[~empty]).all()
    info = runner.invoke(app, ["info", str(run.root)])
    assert info.exit_code == 0 and json.loads(info.output)["excluded"]["empty_response"] == 2


def test_strict_refuses_them_on_every_command_that_reads_data(run, pool, tiny_model_dir, tmp_path):
    for command in (["record", "--proxy", str(tiny_model_dir)], ["score", "--checkpoint", str(tiny_model_dir)],
                    ["train", "--model", str(tiny_model_dir)]):
        out = tmp_path / command[0]
        result = runner.invoke(app, [*command, "--data", str(pool), "--out", str(out), "--strict", "--no-progress"])
        assert result.exit_code == 2, result.output
        assert f"{pool}:3: field 'output' is empty" in result.output and not out.exists()
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model_dir), "--data", str(pool), "--out",
                                 str(tmp_path / "metrics.json"), "--strict", "--no-progress"])
    assert result.exit_code == 2 and f"{pool}:3:" in result.output and not (tmp_path / "metrics.json").exists()


def test_select_never_selects_them_and_counts_them(run, pool, tmp_path):
    empty_ids = {e.example_id for e in load_pool(pool).examples if e.line in EMPTY}
    for method, extra in (("random", []), ("s2l", ["--clusters", "2"]), ("perplexity-low", [])):
        out = tmp_path / method
        result = runner.invoke(app, ["select", "--trajectories", str(run.root), "--method", method, "--budget", "1.0",
                                     "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["excluded"] == EXPECTED, method
        assert manifest["budget"] == {"asked": "1.0", "delivered": len(GOOD), "usable": len(GOOD)}
        assert "1 empty prompt, 2 empty response" in result.output
        chosen = set((out / "selected_ids.txt").read_text().split())
        assert len(chosen) == len(GOOD) and not chosen & empty_ids
        scores = pq.read_table(out / "scores.parquet").to_pylist()
        assert {r["example_id"]: r["excluded"] for r in scores if r["excluded"]} == {
            e.example_id: EMPTY[e.line][0] for e in load_pool(pool).examples if e.line in EMPTY}


def test_select_from_a_table_leaves_them_out_even_with_losses(pool, tmp_path):
    """Losses computed elsewhere may give an empty answer a number: it is still never selected."""
    ids = load_pool(pool).ids
    table = pa.table({"example_id": ids, "loss_0": [2.0] * len(ids), "loss_1": list(np.linspace(0.1, 1.0, len(ids)))})
    pq.write_table(table, tmp_path / "t.parquet")
    out = tmp_path / "sel"
    result = runner.invoke(app, ["select", "--trajectories", str(tmp_path / "t.parquet"), "--data", str(pool),
                                 "--method", "perplexity-low", "--budget", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["excluded"] == EXPECTED and manifest["budget"]["usable"] == len(GOOD)
    # The lowest final losses belong to the first rows; the empty one on line 3 is passed over.
    empty = empty_rows(pool)
    assert (out / "selected_ids.txt").read_text().split() == [i for i, e in zip(ids, empty) if not e][:3]


def test_train_leaves_them_out_and_counts_them(pool, tiny_model_dir, tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3, precision="float32", data=DataConfig(max_length=64))
    out = train(pool, str(tiny_model_dir), tmp_path / "out", config, show_progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["n_examples"] == len(GOOD) + len(EMPTY) and manifest["n_trained"] == len(GOOD)
    assert manifest["excluded"] == {"duplicate": 0, "no_response_tokens": 0, **EXPECTED}
    ids = {e.line: e.example_id for e in load_pool(pool).examples}
    assert manifest["excluded_ids"] == {"no_response_tokens": [], "empty_prompt": [ids[11]],
                                        "empty_response": [ids[3], ids[7]]}


def test_the_report_shows_them(run, tmp_path):
    from test_report import Parsed

    from s2l.report import build_report

    path = build_report(run.root, [], tmp_path / "report")
    html = Parsed(Path(path).read_text())
    assert {r[0]: int(r[1]) for r in html.rows("pool-excluded")} == EXPECTED
    assert all(r[2] for r in html.rows("pool-excluded"))  # each reason says what it means
    assert html.keys["lp-excluded"] == "3"  # no LP(1) for them, under their own reasons
    facts = {k: v for k, v in html.tables["lp-summary"]}
    assert (facts["excluded: empty_prompt"], facts["excluded: empty_response"]) == ("1", "2")
