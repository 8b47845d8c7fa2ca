"""`s2l select`: from a run directory or a table to the four output files; bad input leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from s2l.cli import app
from s2l.data import load_pool

runner = CliRunner()


def select(*args: str):
    return runner.invoke(app, ["select", *args])


@pytest.fixture(scope="module")
def loss_table(math_pool, tmp_path_factory) -> Path:
    """A csv of made-up losses over the math pool's real ids: 4 snapshots (epochs 0, 1, 2, 3)."""
    pool = load_pool(math_pool)
    rng = np.random.default_rng(0)
    n = len(pool.examples)
    base = 1.0 + rng.random(n)
    losses = np.column_stack([base, base * 0.6, base * 0.4, base * 0.3]) + 0.05 * rng.random((n, 4))
    rows = ["example_id,source," + ",".join(f"loss_{k}" for k in range(4))]
    for e, row in zip(pool.examples, losses):
        rows.append(f"{e.example_id},{e.source}," + ",".join(f"{v:.6f}" for v in row))
    path = tmp_path_factory.mktemp("table") / "losses.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_select_from_a_table_writes_the_contract(loss_table, math_pool, tmp_path):
    out = tmp_path / "sel"
    result = select("--trajectories", str(loss_table), "--data", str(math_pool), "--method", "s2l", "--budget", "0.3",
                    "--clusters", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = math_pool.read_bytes().splitlines(keepends=True)
    pool = load_pool(math_pool)
    ids = (out / "selected_ids.txt").read_text().split()
    assert len(ids) == 12  # 30% of 40
    # The chosen records byte-for-byte, in input order.
    position = {e.example_id: e.index for e in pool.examples}
    expected = b"".join(lines[i] for i in sorted(position[x] for x in ids))
    assert (out / "selected.jsonl").read_bytes() == expected
    assert ids == sorted(ids, key=position.get)
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    assert [r["example_id"] for r in scores] == [e.example_id for e in pool.examples]
    assert sum(r["selected"] for r in scores) == 12
    assert {r["example_id"] for r in scores if r["selected"]} == set(ids)
    assert all(r["cluster"] is not None for r in scores) and all(r["excluded"] is None for r in scores)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "s2l" and manifest["params"]["n_clusters"] == 2 and manifest["seed"] == 0
    assert manifest["budget"] == {"asked": "0.3", "delivered": 12, "usable": 40}
    assert manifest["data"]["fingerprint"] == pool.fingerprint
    assert manifest["trajectories"]["kind"] == "table" and len(manifest["trajectories"]["fingerprint"]) == 64
    assert sum(s["selected"] for s in manifest["sources"].values()) == 12
    # The source mix is printed.
    assert "source" in result.output and "subset" in result.output


def test_same_seed_gives_byte_identical_outputs_and_another_seed_another_draw(loss_table, math_pool, tmp_path):
    def run(seed, name):
        out = tmp_path / name
        r = select("--trajectories", str(loss_table), "--data", str(math_pool), "--method", "s2l", "--budget", "10",
                   "--clusters", "3", "--seed", str(seed), "--out", str(out))
        assert r.exit_code == 0, r.output
        return {f: (out / f).read_bytes() for f in ("selected.jsonl", "selected_ids.txt", "scores.parquet", "manifest.json")}

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert a == b
    assert a["selected_ids.txt"] != c["selected_ids.txt"]


def test_select_from_a_run_directory(tiny_run, math_pool, tmp_path):
    for method in ("s2l", "lp", "learnability"):
        out = tmp_path / method
        # --data defaults to the pool the run recorded.
        result = select("--trajectories", str(tiny_run.root), "--method", method, "--budget", "8", "--out", str(out),
                        "--clusters" if method == "s2l" else "--seed", "2" if method == "s2l" else "0")
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["budget"]["delivered"] == 8 and manifest["trajectories"]["kind"] == "run"
        assert manifest["trajectories"]["model"] == tiny_run.manifest["model"]
        assert len((out / "selected_ids.txt").read_text().split()) == 8
    # lp took each snapshot's epoch from the run's manifest and clustered instruction embeddings.
    lp = json.loads((tmp_path / "lp" / "manifest.json").read_text())
    assert lp["params"]["diversity"] is True and lp["learned"]["epoch_columns_"]["p0"] == 0
    scores = pq.read_table(tmp_path / "lp" / "scores.parquet").to_pandas()
    assert scores["cluster"].notna().all() and scores["score"].notna().all()


def test_exported_table_keeps_the_epochs_for_lp(tiny_run, math_pool, tmp_path):
    table = tmp_path / "t.parquet"
    tiny_run.load().write_table(table)
    out = tmp_path / "lp"
    result = select("--trajectories", str(table), "--data", str(math_pool), "--method", "lp", "--no-diversity",
                    "--budget", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    from_run = tmp_path / "lp-run"
    select("--trajectories", str(tiny_run.root), "--method", "lp", "--no-diversity", "--budget", "5", "--out", str(from_run))
    assert (out / "selected_ids.txt").read_bytes() == (from_run / "selected_ids.txt").read_bytes()


def test_examples_without_response_tokens_are_excluded_and_counted(math_pool, tmp_path):
    pool = load_pool(math_pool)
    ids = [e.example_id for e in pool.examples]
    # A parquet table covering all but 3 pool examples (those have no trajectory).
    t = pa.table({"example_id": ids[3:], "loss_0": [2.0] * 37, "loss_1": [1.0] * 37})
    pq.write_table(t, tmp_path / "t.parquet")
    out = tmp_path / "sel"
    result = select("--trajectories", str(tmp_path / "t.parquet"), "--data", str(math_pool), "--method", "random",
                    "--budget", "1.0", "--out", str(out))
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["excluded"] == {"no_trajectory": 3} and manifest["budget"]["delivered"] == 37
    assert "3 no trajectory" in result.output
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    assert [r["excluded"] for r in scores[:3]] == ["no_trajectory"] * 3
    # The table had no source column: sources come from the pool.
    assert scores[5]["source"] == pool.examples[5].source


def test_method_list_prints_every_method():
    from s2l.selection import METHODS

    result = select("--method", "list")
    assert result.exit_code == 0
    for name, method in METHODS.items():
        assert f"{name} " in result.output and method.description[:30] in result.output


def test_force_replaces_a_previous_selection_only(loss_table, math_pool, tmp_path):
    out = tmp_path / "sel"
    args = ["--trajectories", str(loss_table), "--data", str(math_pool), "--method", "random", "--out", str(out)]
    assert select(*args, "--budget", "5").exit_code == 0
    again = select(*args, "--budget", "6")
    assert again.exit_code == 2 and "replace a previous selection with force" in again.output
    assert len((out / "selected_ids.txt").read_text().split()) == 5
    assert select(*args, "--budget", "6", "--force").exit_code == 0
    assert len((out / "selected_ids.txt").read_text().split()) == 6
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    refused = select(*args[:-1], str(other), "--budget", "6", "--force")
    assert refused.exit_code == 2 and (other / "keep.txt").read_text() == "mine"


def bad_tables(tmp_path: Path, ids: list[str]) -> dict[str, tuple[Path, str]]:
    def csv(name, text):
        path = tmp_path / name
        path.write_text(text)
        return path

    good = "".join(f"{i},1.0,0.5\n" for i in ids)
    return {
        "no loss columns": (csv("a.csv", "example_id,source\n" + "".join(f"{i},x\n" for i in ids)), "no loss columns"),
        "NaN": (csv("b.csv", "example_id,loss_0,loss_1\n" + good + f"{'z' * 16},nan,1.0\n"), "must be finite"),
        "inf": (csv("c.csv", "example_id,loss_0,loss_1\n" + f"{ids[0]},inf,1.0\n"), "must be finite"),
        "empty cell": (csv("d.csv", "example_id,loss_0,loss_1\n" + f"{ids[0]},,1.0\n"), "must be finite"),
        "unknown ids": (csv("e.csv", "example_id,loss_0,loss_1\n" + good + "not-in-pool,1.0,0.5\n"), "not in the pool"),
        "gap": (csv("f.csv", "example_id,loss_0,loss_2\n" + good), "without gaps"),
        "duplicate id": (csv("g.csv", "example_id,loss_0,loss_1\n" + good + f"{ids[0]},1.0,0.5\n"), "repeats row 1"),
        "no id column": (csv("h.csv", "id,loss_0,loss_1\n1,1.0,0.5\n"), "no example_id column"),
        "text loss": (csv("i.csv", "example_id,loss_0,loss_1\n" + f"{ids[0]},high,0.5\n"), "not numeric"),
    }


def test_bad_tables_are_clear_errors_and_write_nothing(math_pool, tmp_path):
    ids = [e.example_id for e in load_pool(math_pool).examples]
    for case, (path, message) in bad_tables(tmp_path, ids).items():
        out = tmp_path / f"out-{path.stem}"
        result = select("--trajectories", str(path), "--data", str(math_pool), "--method", "random", "--budget", "3",
                        "--out", str(out))
        assert result.exit_code == 2, (case, result.output)
        assert message in result.output and str(path) in result.output, (case, result.output)
        assert not out.exists(), case
    # The NaN row names its line (header is line 1).
    nan = select("--trajectories", str(tmp_path / "b.csv"), "--data", str(math_pool), "--method", "random",
                 "--budget", "3", "--out", str(tmp_path / "x"))
    assert f"b.csv:{len(ids) + 2}:" in nan.output


@pytest.mark.parametrize("args, message", [
    (["--method", "nope", "--budget", "3"], "unknown method"),
    (["--method", "random", "--budget", "0"], "at least 1"),
    (["--method", "random", "--budget", "41"], "larger than the 40"),
    (["--method", "random", "--budget", "1.5"], "(0, 1]"),
    (["--method", "random", "--budget", "3", "--clusters", "4"], "does not take n_clusters"),
    (["--method", "lp", "--budget", "3", "--no-diversity"], "--snapshot-epochs"),
    (["--method", "lp", "--budget", "3", "--snapshot-epochs", "0,1"], "2 epochs for 4 loss columns"),
    (["--method", "s2l", "--budget", "3", "--snapshots", "1,9"], "out of range"),
    (["--method", "random"], "missing --budget"),
])
def test_bad_options_are_clear_errors_and_write_nothing(loss_table, math_pool, tmp_path, args, message):
    out = tmp_path / "sel"
    result = select("--trajectories", str(loss_table), "--data", str(math_pool), "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_a_run_refuses_a_different_pool(tiny_run, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text('{"instruction": "a", "output": "b"}\n')
    result = select("--trajectories", str(tiny_run.root), "--data", str(other), "--method", "random", "--budget", "1",
                    "--out", str(tmp_path / "sel"))
    assert result.exit_code == 2 and "fingerprint differs" in result.output
    assert not (tmp_path / "sel").exists()


@pytest.mark.parametrize("args, params", [
    (["--method", "s2l", "--clusters", "3", "--no-per-source", "--standardize", "--snapshots", "all",
      "--kmeans-sample", "all", "--kmeans-backend", "sklearn"],
     {"n_clusters": 3, "per_source": False, "standardize": True, "snapshots": "all", "sample_per_centroid": None,
      "backend": "sklearn"}),
    (["--method", "s2l", "--clusters", "2", "--snapshots", "1,3", "--kmeans-sample", "5"],
     {"n_clusters": 2, "snapshots": [1, 3], "sample_per_centroid": 5}),
    (["--method", "lp-app", "--no-diversity", "--snapshot-epochs", "0,1,2,3"], {"approx": True, "diversity": False}),
    (["--method", "cartography-hard", "--snapshots", "trained"], {"region": "hard", "snapshots": "trained"}),
])
def test_method_options_reach_the_selector_and_the_manifest(loss_table, math_pool, tmp_path, args, params):
    out = tmp_path / "sel"
    result = select("--trajectories", str(loss_table), "--data", str(math_pool), "--budget", "7", "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest["params"][k] for k in params} == params
    assert manifest["budget"]["delivered"] == 7


def test_user_ids_from_an_id_column(tmp_path):
    pool = tmp_path / "pool.jsonl"
    rows = [{"id": f"q{i}", "instruction": f"add {i} and 1", "output": str(i + 1), "source": "ab"[i % 2]} for i in range(12)]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = tmp_path / "t.csv"
    table.write_text("example_id,loss_0,loss_1\n" + "".join(f"q{i},{2 + i / 10},{1 + i / 10}\n" for i in range(12)))
    out = tmp_path / "sel"
    result = select("--trajectories", str(table), "--data", str(pool), "--id-column", "id", "--method", "perplexity-low",
                    "--budget", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "selected_ids.txt").read_text().split() == ["q0", "q1", "q2"]
    assert (out / "selected.jsonl").read_text().splitlines() == [json.dumps(r) for r in rows[:3]]
    # Without --id-column the table's ids are not the pool's (content hashes).
    missing = select("--trajectories", str(table), "--data", str(pool), "--method", "random", "--budget", "3",
                     "--out", str(tmp_path / "x"))
    assert missing.exit_code == 2 and "id_column" in missing.output


def test_methods_lists_every_method_with_its_parameters_and_defaults():
    from s2l.selection import METHODS

    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    assert select("--method", "list").output == result.output  # the same information both ways
    for name, method in METHODS.items():
        assert f"{name} " in result.output and method.description[:30] in result.output
    assert "    n_clusters=100  " in result.output and "K per source" in result.output
    assert "    diversity_clusters=none  " in result.output and "    per_source=true  " in result.output
    one = runner.invoke(app, ["methods", "lp-app"])
    assert one.exit_code == 0 and "approx=true" in one.output and "fixed by the method's name" in one.output
    assert "K per source" not in one.output
    unknown = runner.invoke(app, ["methods", "nope"])
    assert unknown.exit_code == 2 and "unknown method 'nope'" in unknown.output


@pytest.mark.parametrize("named, generic", [
    (["--method", "s2l", "--clusters", "3", "--no-per-source", "--standardize", "--snapshots", "1,3",
      "--kmeans-sample", "all", "--kmeans-backend", "sklearn"],
     ["--method", "s2l", "--param", "n_clusters=3", "--param", "per_source=false", "--param", "standardize=true",
      "--param", "snapshots=1,3", "--param", "sample_per_centroid=none", "--param", "backend=sklearn"]),
    (["--method", "lp-app", "--no-diversity", "--snapshot-epochs", "0,1,2,3"],
     ["--method", "lp-app", "--param", "diversity=no", "--snapshot-epochs", "0,1,2,3", "--param", "epoch=1"]),
    (["--method", "random", "--seed", "4"], ["--method", "random", "--param", "seed=4"]),
])
def test_param_options_give_what_the_named_flags_give(loss_table, math_pool, tmp_path, named, generic):
    outputs = []
    for name, args in (("named", named), ("generic", generic)):
        out = tmp_path / name
        result = select("--trajectories", str(loss_table), "--data", str(math_pool), "--budget", "7", "--out", str(out),
                        *args)
        assert result.exit_code == 0, result.output
        outputs.append({f: (out / f).read_bytes() for f in ("selected_ids.txt", "scores.parquet", "manifest.json")})
    manifests = [json.loads(o.pop("manifest.json").replace(str(tmp_path / "generic").encode(),
                                                           str(tmp_path / "named").encode())) for o in outputs]
    assert outputs[0] == outputs[1] and manifests[0] == manifests[1]


@pytest.mark.parametrize("args, message", [
    (["--method", "s2l", "--param", "clusters=3"], "--param: method s2l does not take clusters"),
    (["--method", "s2l", "--param", "n_clusters=abc"], "--param: n_clusters: expected a whole number, got 'abc'"),
    (["--method", "s2l", "--param", "standardize=maybe"], "standardize: expected true or false"),
    (["--method", "s2l", "--param", "n_clusters"], "--param: expected NAME=VALUE"),
    (["--method", "s2l", "--clusters", "3", "--param", "n_clusters=4"], "n_clusters (--clusters)"),
    (["--method", "random", "--seed", "1", "--param", "seed=2"], "given both as --param and as its own option: seed"),
    (["--method", "lp-app", "--param", "approx=false"], "method lp-app fixes approx"),
    (["--method", "s2l", "--param", "snapshots=last"], "--snapshots: snapshots must be trained, all or a list"),
    (["--method", "s2l", "--clusters", "0"], "--clusters: the number of clusters must be at least 1"),
    (["--method", "nope"], "--method: unknown method 'nope'"),
])
def test_bad_params_name_the_option(loss_table, math_pool, tmp_path, args, message):
    out = tmp_path / "sel"
    result = select("--trajectories", str(loss_table), "--data", str(math_pool), "--budget", "3", "--out", str(out),
                    *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()
