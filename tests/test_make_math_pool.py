"""Tests for examples/make_math_pool.py, run as a real subprocess (nothing mocked)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("reasoning_gym")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "make_math_pool.py"
DEFAULT_KINDS = ["chain_sum", "basic_arithmetic", "simple_equations", "products", "leg_counting"]
FINAL_LINE = re.compile(r"^#### (\S.*)$")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def read_jsonl(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def final_answer(output: str) -> str:
    match = FINAL_LINE.match(output.splitlines()[-1])
    assert match, f"output does not end with a '#### <answer>' line: {output!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool_default")
    result = run("--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "pool.jsonl: 300 rows" in result.stdout
    assert "test.jsonl: 60 rows" in result.stdout
    return out


def test_writes_expected_files(default_run: Path) -> None:
    names = sorted(p.name for p in default_run.iterdir())
    assert names == ["pool.jsonl", "pool_info.json", "test.jsonl"]  # no temp files left behind


def test_pool_rows(default_run: Path) -> None:
    rows = read_jsonl(default_run / "pool.jsonl")
    assert len(rows) == 300
    for row in rows:
        assert set(row) == {"instruction", "output", "source"}
        assert all(isinstance(row[k], str) and row[k] for k in row)
        assert row["source"] in DEFAULT_KINDS
        lines = row["output"].splitlines()
        assert len(lines) >= 2, "expected at least one reasoning line before the answer"
        final_answer(row["output"])
    # Each pool kind's row count agrees with pool_info.json.
    info = json.loads((default_run / "pool_info.json").read_text(encoding="utf-8"))
    assert info["seed"] == 0 and info["kinds"] == DEFAULT_KINDS
    assert info["pool_counts"] == dict(Counter(r["source"] for r in rows))
    assert set(info["settings"]) == set(DEFAULT_KINDS)


def test_pool_sources_are_unequal(default_run: Path) -> None:
    counts = Counter(r["source"] for r in read_jsonl(default_run / "pool.jsonl"))
    assert set(counts) == set(DEFAULT_KINDS)
    sizes = [counts[k] for k in DEFAULT_KINDS]
    assert sizes == sorted(sizes, reverse=True), "kinds should shrink in the order given"
    assert len(set(sizes)) == len(sizes)
    assert max(sizes) >= 5 * min(sizes), sizes


def test_pool_answers_are_correct(default_run: Path) -> None:
    # Spot-check worked answers independently of the script's own verifier.
    for row in read_jsonl(default_run / "pool.jsonl"):
        answer = final_answer(row["output"])
        if row["source"] == "chain_sum":
            expression = row["instruction"].split(":", 1)[1].rstrip("= ").strip()
            assert re.fullmatch(r"[\d +-]+", expression)
            assert int(answer) == eval(expression)  # only digits, + and -
        elif row["source"] == "products":
            a, b = re.search(r"(\d+) \* (\d+)", row["instruction"]).groups()
            assert int(answer) == int(a) * int(b)


def test_test_rows(default_run: Path) -> None:
    rows = read_jsonl(default_run / "test.jsonl")
    assert len(rows) == 60
    for row in rows:
        assert {"instruction", "output", "source", "answer", "task", "ood"} <= set(row)
        for key in ("instruction", "output", "source", "answer", "task"):
            assert isinstance(row[key], str) and row[key]
        assert row["ood"] is False
        assert row["task"] == row["source"]
        assert isinstance(row["metadata"], dict)
        assert final_answer(row["output"]) == row["answer"]
    counts = Counter(r["source"] for r in rows)
    assert counts == {k: 12 for k in DEFAULT_KINDS}  # balanced
    assert len({r["instruction"] for r in rows}) == len(rows)


def test_test_rows_score_with_reasoning_gym(default_run: Path) -> None:
    import reasoning_gym

    for row in read_jsonl(default_run / "test.jsonl"):
        scorer = reasoning_gym.get_score_answer_fn(row["task"])
        entry = {"question": row["instruction"], "answer": row["answer"], "metadata": row["metadata"]}
        assert scorer(final_answer(row["output"]), entry) == 1.0


def test_pool_and_test_are_disjoint(default_run: Path) -> None:
    pool = {r["instruction"] for r in read_jsonl(default_run / "pool.jsonl")}
    test = {r["instruction"] for r in read_jsonl(default_run / "test.jsonl")}
    assert not pool & test


def test_deterministic_by_seed(default_run: Path, tmp_path: Path) -> None:
    same, other = tmp_path / "same", tmp_path / "other"
    assert run("--out", str(same)).returncode == 0
    assert run("--out", str(other), "--seed", "1").returncode == 0
    for name in ("pool.jsonl", "test.jsonl", "pool_info.json"):
        assert (same / name).read_bytes() == (default_run / name).read_bytes(), name
    assert (other / "pool.jsonl").read_bytes() != (default_run / "pool.jsonl").read_bytes()
    assert (other / "test.jsonl").read_bytes() != (default_run / "test.jsonl").read_bytes()


def test_small_pool_kinds_and_ood(tmp_path: Path) -> None:
    result = run(
        "--out", str(tmp_path), "--size", "12", "--test-size", "6", "--seed", "7",
        "--kinds", "chain_sum,products,leg_counting", "--ood-kinds", "gcd,lcm",
    )
    assert result.returncode == 0, result.stderr
    pool = read_jsonl(tmp_path / "pool.jsonl")
    test = read_jsonl(tmp_path / "test.jsonl")
    counts = Counter(r["source"] for r in pool)
    assert len(pool) == 12 and set(counts) == {"chain_sum", "products", "leg_counting"}
    assert counts["chain_sum"] > counts["leg_counting"] >= 1
    test_counts = Counter((r["source"], r["ood"]) for r in test)
    assert test_counts == {
        ("chain_sum", False): 2, ("products", False): 2, ("leg_counting", False): 2,
        ("gcd", True): 2, ("lcm", True): 2,
    }
    for row in test:
        assert final_answer(row["output"]) == row["answer"]
    assert not {r["instruction"] for r in pool} & {r["instruction"] for r in test}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kinds", "chain_sum,not_a_kind"], "unknown kind"),
        (["--size", "3"], "at least the number of kinds"),
        (["--ood-kinds", "chain_sum"], "must not repeat pool kinds"),
        (["--set", "chain_sum.max_terms"], "expected KIND.KEY=VALUE"),
        (["--set", "nope.max_terms=2"], "unknown kind"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    result = run("--out", str(out), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()


def test_set_overrides_a_generator_setting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("--out", str(out), "--size", "20", "--test-size", "5", "--kinds", "chain_sum",
                 "--set", "chain_sum.max_terms=2", "--set", "chain_sum.max_digits=1")
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "pool_info.json").read_text())
    assert info["settings"]["chain_sum"]["max_terms"] == 2 and info["settings"]["chain_sum"]["max_digits"] == 1
    for row in read_jsonl(out / "pool.jsonl"):
        # "State the final answer to the following arithmetic problem: 3 + 6 =": two one-digit terms
        expression = row["instruction"].rsplit(":", 1)[1].strip(" =")
        assert len(expression.split()) == 3 and all(len(t) == 1 for t in expression.split()[::2])
