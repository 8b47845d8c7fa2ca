"""examples/make_real_math_pool.py and examples/make_dolly_pool.py on the real published files in
../shared/data (or $S2L_SHARED_DATA), run as subprocesses; skipped where those files are absent (a fresh clone)."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from helpers import ROOT, SHARED_DATA as SHARED

MATH_DIR = SHARED / "math"
DOLLY = SHARED / "instruct" / "dolly_rebuilt.jsonl"
MATH_SCRIPT = ROOT / "examples" / "make_real_math_pool.py"
DOLLY_SCRIPT = ROOT / "examples" / "make_dolly_pool.py"
S2L = Path(sys.executable).parent / "s2l"

needs_math = pytest.mark.skipif(not MATH_DIR.is_dir(), reason=f"no real math data at {MATH_DIR} (set S2L_SHARED_DATA)")
needs_dolly = pytest.mark.skipif(not DOLLY.is_file(), reason=f"no Dolly file at {DOLLY} (set S2L_SHARED_DATA)")

POOL_SOURCES = ["gsm8k", "math", "mathqa", "aqua", "tabmwp", "asdiv", "mawps"]
OOD_SETS = ["gsm8k_test", "math500", "svamp", "gsm_hard"]
GRADING = {"gsm8k": {"gsm8k"}, "math": {"boxed"}, "mathqa": {"choice"}, "aqua": {"choice"},
           "tabmwp": {"number", "text"}, "asdiv": {"number"}, "mawps": {"number"}, "gsm8k_test": {"gsm8k"},
           "math500": {"boxed"}, "svamp": {"number"}, "gsm_hard": {"number"}}
SIZE, TEST_PER_SOURCE, OOD_LIMIT, CAP = 700, 20, 40, 120
ARGS = ["--size", str(SIZE), "--test-per-source", str(TEST_PER_SOURCE), "--ood-limit", str(OOD_LIMIT)]


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, env=env)


def build(out: Path, *args: str) -> Path:
    result = run(MATH_SCRIPT, "--source-dir", str(MATH_DIR), "--out", str(out), "--seed", "0", *args)
    assert result.returncode == 0, result.stderr
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@functools.cache
def script_module():
    """The script as a module, for its question key and SVAMP-variant index."""
    spec = importlib.util.spec_from_file_location("make_real_math_pool", MATH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def simple_key(text: str) -> str:
    """A weaker normaliser than the script's (case and spacing only): what it calls equal, the script must too."""
    return " ".join(text.lower().split())


def question(row: dict) -> str:
    return row["instruction"].split("\nAnswer Choices: ")[0]  # the options are added below choice questions


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    if not MATH_DIR.is_dir():
        pytest.skip(f"no real math data at {MATH_DIR}")
    return build(tmp_path_factory.mktemp("real") / "a", *ARGS)


@pytest.fixture(scope="module")
def splits(built) -> dict[str, list[dict]]:
    files = {"pool": built / "pool.jsonl", "in_domain": built / "test" / "in_domain.jsonl"}
    files.update({name: built / "test" / f"ood_{name}.jsonl" for name in OOD_SETS})
    return {name: read_jsonl(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def info(built) -> dict:
    return json.loads((built / "info.json").read_text(encoding="utf-8"))


@needs_math
def test_the_same_seed_gives_the_same_bytes(built, tmp_path):
    again = build(tmp_path / "b", *ARGS)
    names = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert {str(n) for n in names} == {"pool.jsonl", "info.json", "test/in_domain.jsonl", "test/all.jsonl",
                                       *(f"test/ood_{s}.jsonl" for s in OOD_SETS)}  # no temporary file left
    for name in names:
        assert (built / name).read_bytes() == (again / name).read_bytes(), name


@needs_math
def test_sizes_follow_what_each_source_has(splits, info):
    pool = Counter(r["source"] for r in splits["pool"])
    assert sum(pool.values()) == SIZE and set(pool) == set(POOL_SOURCES)
    assert dict(pool) == info["sizes"]["pool"]
    left = {s: info["sizes"]["after_deduplication"][s] - TEST_PER_SOURCE for s in POOL_SOURCES}
    for source in POOL_SOURCES:  # proportional, to within the one row that rounding moves
        assert abs(pool[source] - SIZE * left[source] / sum(left.values())) < 1, source
    assert pool["gsm8k"] > 5 * pool["aqua"], pool  # unequal, as in MathInstruct
    assert Counter(r["source"] for r in splits["in_domain"]) == {s: TEST_PER_SOURCE for s in POOL_SOURCES}
    for name in OOD_SETS:
        assert len(splits[name]) == OOD_LIMIT and all(r["source"] == name and r["ood"] is True for r in splits[name])
    assert all(r["ood"] is False for r in splits["in_domain"])


@needs_math
def test_max_per_source_caps_the_largest(tmp_path, splits):
    capped = build(tmp_path / "capped", *ARGS, "--max-per-source", str(CAP))
    counts = Counter(r["source"] for r in read_jsonl(capped / "pool.jsonl"))
    uncapped = Counter(r["source"] for r in splits["pool"])
    assert sum(counts.values()) == SIZE and max(counts.values()) <= CAP
    assert counts["gsm8k"] < uncapped["gsm8k"] and counts["aqua"] > uncapped["aqua"]
    info = json.loads((capped / "info.json").read_text(encoding="utf-8"))
    assert info["arguments"]["max_per_source"] == CAP


@needs_math
def test_no_question_is_in_two_splits(splits):
    module = script_module()
    key = module.question_key
    seen: dict[str, str] = {}
    for split in ["pool", "in_domain"]:
        for row in splits[split]:
            for k in (simple_key(question(row)), key(question(row))):
                assert k not in seen, f"{split} repeats a {seen.get(k)} question: {question(row)[:80]!r}"
                seen[k] = split
    # Against the whole of every OOD set, not only the rows written.
    for name, (files, reader) in module.OOD_SETS.items():
        for problem in reader([MATH_DIR / f for f in files], name).problems:
            assert simple_key(problem.question) not in seen and key(problem.question) not in seen, problem.question


@needs_math
def test_math500_is_out_of_the_math_pool(splits, info):
    math500 = {simple_key(json.loads(line)["problem"]) for line in (MATH_DIR / "math500.jsonl").open(encoding="utf-8")}
    assert len(math500) == 500
    math_rows = [r for split in ("pool", "in_domain") for r in splits[split] if r["source"] == "math"]
    assert math_rows and not {simple_key(r["instruction"]) for r in math_rows} & math500
    assert info["removed"]["math"]["ood_duplicate:math500"] == 500
    assert info["sizes"]["ood_available"]["math500"] == 500


@needs_math
def test_svamp_variants_of_asdiv_and_mawps_are_removed_and_counted(splits, info):
    module = script_module()
    assert info["removed"]["asdiv"]["svamp_variant"] > 50 and info["removed"]["mawps"]["svamp_variant"] > 30
    assert info["removed"]["mawps"]["duplicate:asdiv"] > 100  # MAWPS and ASDiv share problems
    # An ASDiv problem SVAMP edited ("Julia played tag with 18 kids on monday ... How many more kids ...").
    julia = "Julia played tag with 12 kids on Monday. She played tag with 7 kids on Tuesday."
    assert any(julia in line for line in (MATH_DIR / "asdiv.jsonl").open(encoding="utf-8"))
    kept = [r for split in ("pool", "in_domain") for r in splits[split] if r["source"] in ("asdiv", "mawps")]
    assert kept and not any(julia in r["instruction"] for r in kept)
    svamp = module.VariantIndex([p.question for p in module.read_svamp([MATH_DIR / "svamp.jsonl"], "svamp").problems])
    assert max(svamp.best(r["instruction"]) for r in kept) < info["arguments"]["variant_threshold"]


FINAL = re.compile(r"^#### (.+)$")
PLAIN = re.compile(r"-?\d+(\.\d+)?")


def last_boxed(text: str) -> str:
    start = text.rindex("\\boxed{") + len("\\boxed{")
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise AssertionError("unbalanced \\boxed{")


def check_final_answer(row: dict) -> None:
    """Each grading kind's stated final-answer form (docs/real-data.md)."""
    output, answer, grading = row["output"], row["answer"], row["grading"]
    assert isinstance(answer, str) and answer.strip(), row
    last = FINAL.match(output.splitlines()[-1])
    if grading == "boxed":
        assert last_boxed(output) == answer
        return
    assert last, f"{row['source']}: the response does not end in '#### ...': {output[-80:]!r}"
    if grading == "gsm8k":
        assert last.group(1).replace(",", "") == answer and PLAIN.fullmatch(answer)
    elif grading == "choice":
        assert last.group(1) == answer and list(row["options"]) == list("ABCDE") and answer in row["options"]
        assert "\nAnswer Choices: (A) " in row["instruction"]
    elif grading == "number":
        assert PLAIN.fullmatch(answer) and float(last.group(1).replace(",", "")) == float(answer)
    else:
        assert grading == "text" and row["source"] == "tabmwp" and last.group(1) == answer


@needs_math
def test_every_response_ends_in_its_sources_final_answer_form(splits):
    for split, rows in splits.items():
        for row in rows:
            keys = {"instruction", "output", "source", "answer", "grading"} | ({"ood"} if split != "pool" else set())
            assert keys | ({"options"} if row["grading"] == "choice" else set()) == set(row), row
            assert row["grading"] in GRADING[row["source"]], row
            check_final_answer(row)
    gradings = Counter(r["grading"] for rows in splits.values() for r in rows)
    assert set(gradings) == {"gsm8k", "boxed", "choice", "number", "text"}
    asdiv = next(r for r in splits["pool"] if r["source"] == "asdiv")
    assert len(asdiv["output"].splitlines()) == 2  # the formula, then the answer line
    assert next(r for r in splits["pool"] if r["source"] == "mawps")["output"].startswith("#### ")


@needs_math
def test_info_records_sources_sizes_and_removals(built, info, splits):
    assert info["seed"] == 0 and "out" not in info["arguments"]
    assert len(info["source_files"]) == 13 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in info["source_files"].values())
    assert info["sizes"]["in_domain_test"] == {s: TEST_PER_SOURCE for s in POOL_SOURCES}
    assert info["removed"]["asdiv"]["unusable:non-numeric answer"] > 0
    totals = sum((Counter(c) for c in info["removed"].values()), Counter())
    assert info["removed_by_reason"] == dict(sorted(totals.items()))
    for source in POOL_SOURCES:
        assert info["sizes"]["read"][source] - sum(info["removed"][source].values()) == \
            info["sizes"]["after_deduplication"][source]
    assert info["ood_overlaps_kept"].get("gsm8k_test~gsm_hard", 0) > 0
    combined = read_jsonl(built / "test" / "all.jsonl")
    assert len(combined) == len(splits["in_domain"]) + OOD_LIMIT * len(OOD_SETS)


@needs_math
def test_check_data_accepts_the_pool(built):
    result = subprocess.run([str(S2L), "check-data", str(built / "pool.jsonl")], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, NO_COLOR="1"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "mathinstruct" and summary["examples"] == SIZE
    assert summary["duplicates_left_out"] == 0 and summary["excluded"] == {}
    assert set(summary["sources"]) == set(POOL_SOURCES)


def source_copy(tmp_path: Path, leave_out: str | None = None) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    for path in MATH_DIR.iterdir():
        if path.name != leave_out:
            (folder / path.name).symlink_to(path.resolve())
    return folder


@needs_math
def test_a_missing_file_is_named(tmp_path):
    folder = source_copy(tmp_path, leave_out="svamp.jsonl")
    result = run(MATH_SCRIPT, "--source-dir", str(folder), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and f"missing source file {folder / 'svamp.jsonl'}" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@needs_math
def test_a_bad_row_is_named_by_file_and_line(tmp_path):
    folder = source_copy(tmp_path, leave_out="asdiv.jsonl")
    lines = (MATH_DIR / "asdiv.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "asdiv.jsonl").write_text("".join(lines[:2] + ['{"body": "x", \n'] + lines[3:]), encoding="utf-8")
    result = run(MATH_SCRIPT, "--source-dir", str(folder), "--out", str(tmp_path / "out"), "--sources", "asdiv")
    assert result.returncode == 2 and f"{folder / 'asdiv.jsonl'}:3: not valid JSON" in result.stderr
    (folder / "asdiv.jsonl").write_text("".join(lines[:1] + [lines[1].replace('"formula"', '"f"')]), encoding="utf-8")
    result = run(MATH_SCRIPT, "--source-dir", str(folder), "--out", str(tmp_path / "out"), "--sources", "asdiv")
    assert result.returncode == 2 and "asdiv.jsonl:2: missing field 'formula'" in result.stderr
    assert "Traceback" not in result.stderr


# -- Dolly ---------------------------------------------------------------------------------------------


def build_dolly(out: Path) -> Path:
    result = run(DOLLY_SCRIPT, "--source", str(DOLLY), "--out", str(out), "--size", "300", "--test-size", "60",
                 "--seed", "3")
    assert result.returncode == 0, result.stderr
    return out


@needs_dolly
def test_dolly_pool_and_held_out_split(tmp_path):
    first, second = build_dolly(tmp_path / "a"), build_dolly(tmp_path / "b")
    for name in ("pool.jsonl", "test.jsonl", "info.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    pool, test = read_jsonl(first / "pool.jsonl"), read_jsonl(first / "test.jsonl")
    assert len(pool) == 300 and len(test) == 60
    assert all(set(r) == {"instruction", "input", "output", "source"} and r["source"] == "dolly" for r in pool)
    assert all(set(r) == {"instruction", "input", "output", "source", "ood"} and r["ood"] is False for r in test)

    def prompt(row: dict) -> str:
        return simple_key(row["instruction"] + " " + row["input"])

    assert len({prompt(r) for r in test}) == 60 and not {prompt(r) for r in pool} & {prompt(r) for r in test}
    info = json.loads((first / "info.json").read_text(encoding="utf-8"))
    assert info["sizes"] == {"pool": {"dolly": 300}, "test": {"dolly": 60}}
    assert info["source_file"]["rows_read"] == 14989
    result = subprocess.run([str(S2L), "check-data", str(first / "pool.jsonl")], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, NO_COLOR="1"))
    assert result.returncode == 0 and json.loads(result.stdout)["examples"] == 300, result.stderr


@needs_dolly
def test_dolly_missing_file_is_named(tmp_path):
    result = run(DOLLY_SCRIPT, "--source", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and f"missing source file {tmp_path / 'nope.jsonl'}" in result.stderr
    assert "Traceback" not in result.stderr


@needs_math
def test_one_source_can_have_a_larger_test_set(tmp_path):
    out = build(tmp_path / "b", "--size", "200", "--test-per-source", "10", "--test-size-for", "mawps=60",
                "--ood-limit", "10")
    counts = Counter(r["source"] for r in read_jsonl(out / "test" / "in_domain.jsonl"))
    assert counts == {**{s: 10 for s in POOL_SOURCES}, "mawps": 60}
    pool = {r["instruction"] for r in read_jsonl(out / "pool.jsonl")}
    assert not pool & {r["instruction"] for r in read_jsonl(out / "test" / "in_domain.jsonl")}
    bad = run(MATH_SCRIPT, "--source-dir", str(MATH_DIR), "--out", str(tmp_path / "c"), "--test-size-for", "svamp=5")
    assert bad.returncode == 2 and "--test-size-for 'svamp=5'" in bad.stderr
