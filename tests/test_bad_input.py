"""The corpus of bad inputs in tests/data/bad/: each is refused with FILE:LINE: problem, exit code 2, and
nothing written. Property tests: any bytes either read or raise InputError, never anything else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from s2l.cli import app
from s2l.data.readers import MAX_LINE_BYTES, read_records
from s2l.errors import InputError

BAD = Path(__file__).parent / "data" / "bad"
runner = CliRunner()

# file, extra options, the message, the line it names (None: the whole file)
POOLS = [
    ("malformed.jsonl", [], "not valid JSON", 2),
    ("truncated_last_line.jsonl", [], "was the file cut short?", 2),
    ("bom_mid_file.jsonl", [], "BOM", 2),
    ("non_utf8.jsonl", [], "not valid UTF-8 (byte 0xe9", 2),
    ("missing_field.jsonl", [], "missing field 'output'", 2),
    ("mistyped_field.jsonl", [], "field 'output' must be a string, got int", 2),
    # Empty answers and requests are left out and reported (tests/test_empty_examples.py); --strict refuses them.
    ("empty_response.jsonl", ["--strict"], "field 'output' is empty", 2),
    ("empty_prompt.jsonl", ["--strict"], "field 'instruction' is empty", 2),
    ("empty_assistant_turn.jsonl", ["--strict"], "messages[1]: the assistant turn is empty", 1),
    ("empty_assistant_turn.jsonl", [], "no usable example: all 1 example(s) are excluded (1 empty_response)", None),
    ("duplicate_ids.jsonl", ["--id-column", "id"], "duplicate id '1' (first at line 1)", 2),
    ("empty.jsonl", [], "no records", None),
    ("not_records.json", [], "expected a JSON object", 1),
]


@pytest.mark.parametrize("name, options, message, line", POOLS, ids=[" ".join([p[0], *p[1]]) for p in POOLS])
def test_bad_pools_name_file_and_line_and_exit_2(name, options, message, line, tmp_path):
    path = BAD / name
    result = runner.invoke(app, ["check-data", str(path), *options])
    assert result.exit_code == 2, result.output
    where = f"{path}:{line}:" if line else f"{path}:"
    assert where in result.output and message in result.output, result.output
    # record refuses the same file before any model work, and leaves no run directory
    out = tmp_path / "run"
    recorded = runner.invoke(app, ["record", "--data", str(path), "--proxy", str(tmp_path / "no-model"), "--out", str(out),
                                   *options])
    assert recorded.exit_code == 2 and not out.exists()


@pytest.mark.parametrize("name, message", [("nan_loss_table.csv", "loss_1 of 'abc' is nan"),
                                           ("inf_loss_table.csv", "loss_0 of 'abc' is inf")])
def test_bad_loss_tables_exit_2_and_write_nothing(name, message, math_pool, tmp_path):
    out = tmp_path / "sel"
    result = runner.invoke(app, ["select", "--trajectories", str(BAD / name), "--data", str(math_pool),
                                 "--method", "random", "--budget", "1", "--out", str(out)])
    assert result.exit_code == 2 and f"{BAD / name}:2:" in result.output and message in result.output
    assert not out.exists()


def test_a_one_gigabyte_line_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"instruction": "a", "output": "b"}\n{"instruction": "')
        f.truncate(1 << 30)  # a sparse 1 GiB file: the second line never ends
    with pytest.raises(InputError, match=f"line is longer than {MAX_LINE_BYTES >> 20} MiB") as refused:
        read_records(path)
    assert refused.value.line == 2


def test_a_model_folder_without_a_tokenizer_is_a_clear_error(tiny_model_dir, math_pool, tmp_path):
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("config", "model", "generation")):
            os.link(f, weights_only / f.name)
    out = tmp_path / "run"
    result = runner.invoke(app, ["record", "--data", str(math_pool), "--proxy", str(weights_only), "--out", str(out)])
    assert result.exit_code == 2 and "tokenizer" in result.output and str(weights_only) in result.output
    assert not out.exists()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_any_bytes_read_or_raise_input_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"pool{suffix}"
    path.write_bytes(data)
    try:
        records = read_records(path)
    except InputError as e:
        assert e.path == str(path) and e.problem
    else:
        assert all(isinstance(r.data, dict) for r in records)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.dictionaries(st.sampled_from(["instruction", "output", "input", "source", "x"]),
                                     st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans())),
                     min_size=1, max_size=5))
def test_any_json_records_load_or_raise_input_error_naming_their_line(tmp_path_factory, rows):
    from s2l.data.pool import load_pool

    path = tmp_path_factory.mktemp("fuzz") / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        pool = load_pool(path)
    except InputError as e:
        assert e.path == str(path)
        assert e.line is None or 1 <= e.line <= len(rows)
    else:
        assert len(pool.examples) + len(pool.duplicates) == len(rows)
