"""The data layer, end to end on real files and the real SmolLM2 tokenizer (nothing mocked).

Readers (.jsonl, .json, .parquet, .csv, saved `datasets` directories), format detection and forcing,
prompt templates against the literal Stanford Alpaca text, stable example ids and duplicates, bad input
(an `InputError` naming file and line; exit code 2 from `s2l check-data`), and tokenisation with the
prompt masked, checked token by token.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2l.data import load_pool, read_records, tokenize_examples
from s2l.data.formats import Example, PromptTemplate, detect_format
from s2l.data.pool import content_id
from s2l.errors import InputError

S2L = Path(sys.executable).parent / "s2l"

# The Stanford Alpaca prompts (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT), written out in full for
# the instructions used below rather than taken from the package.
ALPACA_TRANSLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nTranslate to French.\n\n### Input:\nGood morning\n\n### Response:"
)
ALPACA_ADD = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nAdd 2 and 3.\n\n### Response:"
)
ALPACA_COLOUR = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nName a colour.\n\n### Response:"
)

# Same keys in every row and only strings, so every file format can hold exactly the same content.
ROWS = [
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Name a colour.", "input": "", "output": "Blue — ünïcödé ✓, \"quoted\", a,b\nsecond line"},
]
EXPECTED_PROMPTS = [ALPACA_TRANSLATE, ALPACA_ADD, ALPACA_COLOUR]


def reference_id(record: dict) -> str:
    """The contract, computed independently: sha256 of the sorted, compact JSON, first 16 hex digits."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_jsonl(path: Path, rows: list[dict], **dumps) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, **dumps) + "\n" for r in rows), encoding="utf-8")
    return path


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def summary(pool) -> list[tuple]:
    return [(e.example_id, e.prompt, e.response, e.messages, e.source) for e in pool.examples]


# -- readers ----------------------------------------------------------------------------------------------
@pytest.fixture()
def same_content_files(tmp_path) -> dict[str, Path]:
    import datasets

    files = {}
    # Trailing blank lines (one empty, one of spaces) carry no record.
    jsonl = tmp_path / "pool.jsonl"
    jsonl.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in ROWS) + b"\n   \n")
    files["jsonl"] = jsonl
    files["json"] = tmp_path / "pool.json"
    files["json"].write_text(json.dumps(ROWS, indent=2, ensure_ascii=False), encoding="utf-8")
    files["json-data"] = tmp_path / "wrapped.json"
    files["json-data"].write_text(json.dumps({"data": ROWS}), encoding="utf-8")
    files["parquet"] = write_parquet(tmp_path / "pool.parquet", ROWS)
    files["csv"] = write_csv(tmp_path / "pool.csv", ROWS)
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved_dataset"))
    files["datasets"] = tmp_path / "saved_dataset"
    other = [{"instruction": "Other split.", "input": "", "output": "no"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(other)}).save_to_disk(
        str(tmp_path / "saved_dict"))
    files["datasets-dict"] = tmp_path / "saved_dict"
    return files


def test_every_reader_gives_the_same_examples_and_ids(same_content_files):
    expected_ids = [reference_id(r) for r in ROWS]
    assert len(set(expected_ids)) == 3
    for kind, path in same_content_files.items():
        assert [r.data for r in read_records(path)] == ROWS, kind
        pool = load_pool(path)
        assert pool.format == "alpaca", kind
        assert pool.ids == expected_ids, kind
        assert [e.prompt for e in pool.examples] == EXPECTED_PROMPTS, kind
        assert [e.response for e in pool.examples] == [r["output"] for r in ROWS], kind
        assert [e.index for e in pool.examples] == [0, 1, 2], kind
        assert pool.duplicates == [] and len(pool.records) == 3, kind


def test_line_numbers_per_reader(same_content_files):
    assert [r.line for r in read_records(same_content_files["jsonl"])] == [1, 2, 3]
    # indent=2: "[" on line 1, then each object takes 5 lines.
    assert [r.line for r in read_records(same_content_files["json"])] == [2, 7, 12]
    # The header is line 1; the third row's output holds a newline, but it starts on line 4.
    assert [r.line for r in read_records(same_content_files["csv"])] == [2, 3, 4]
    assert [r.line for r in read_records(same_content_files["parquet"])] == [None] * 3
    assert [r.line for r in read_records(same_content_files["datasets"])] == [None] * 3


def test_jsonl_raw_is_the_exact_line(tmp_path):
    lines = [
        b'{"instruction": "a",   "output": "b"}',
        b'{ "output":"d" , "instruction":"c\\u00e9" }',
        '{"instruction": "é ✓", "output": "x"}\t'.encode("utf-8"),
    ]
    path = write(tmp_path / "raw.jsonl", b"\n".join(lines) + b"\n\n")
    records = read_records(path)
    assert [r.raw for r in records] == lines
    assert records[1].data == {"output": "d", "instruction": "cé"}
    # Other formats keep the canonical JSON of the record.
    json_records = read_records(write(tmp_path / "raw.json", b"[" + b",".join(lines) + b"]"))
    assert [json.loads(r.raw) for r in json_records] == [r.data for r in records]
    assert json_records[0].raw == b'{"instruction":"a","output":"b"}'


def test_jsonl_with_crlf_line_ends(tmp_path):
    path = write(tmp_path / "crlf.jsonl", b"".join(json.dumps(r).encode() + b"\r\n" for r in ROWS))
    records = read_records(path)
    assert [r.data for r in records] == ROWS
    assert all(not r.raw.endswith((b"\r", b"\n")) for r in records)
    assert load_pool(path).ids == [reference_id(r) for r in ROWS]


def test_datasets_dict_splits(same_content_files, tmp_path):
    import datasets

    path = same_content_files["datasets-dict"]
    assert [r.data for r in read_records(path)] == ROWS  # train by default
    assert [r.data["instruction"] for r in read_records(path, split="test")] == ["Other split."]
    with pytest.raises(InputError, match=r"splits \['train', 'test'\]") as e:
        read_records(path, split="validation")
    assert e.value.path == str(path)
    no_train = tmp_path / "no_train"
    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS[:1]), "b": datasets.Dataset.from_list(ROWS[1:])}).save_to_disk(
        str(no_train))
    with pytest.raises(InputError, match="--split"):
        read_records(no_train)
    assert len(read_records(no_train, split="b")) == 2


def test_chat_records_read_the_same_from_every_format(tmp_path):
    import datasets

    rows = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "system", "content": "Terse."}, {"role": "user", "content": "2+2?"},
                      {"role": "assistant", "content": "4"}]},
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "chat_ds"))
    paths = [write_jsonl(tmp_path / "chat.jsonl", rows), write(tmp_path / "chat.json", json.dumps(rows).encode()),
             write_parquet(tmp_path / "chat.parquet", rows), tmp_path / "chat_ds"]
    for path in paths:
        pool = load_pool(path)
        assert pool.format == "chat", path
        assert pool.ids == [reference_id(r) for r in rows], path
        assert [e.messages for e in pool.examples] == [
            (("user", "Hi"), ("assistant", "Hello!")),
            (("system", "Terse."), ("user", "2+2?"), ("assistant", "4")),
        ], path
        assert all(e.prompt is None and e.response is None and e.is_chat for e in pool.examples)


def test_pool_summary_and_fingerprint(tmp_path):
    rows = [dict(r, source=s) for r, s in zip(ROWS, ["gsm", "math", "gsm"])]
    path = write_jsonl(tmp_path / "mi.jsonl", rows + rows[:1])
    pool = load_pool(path)
    assert pool.summary() == {
        "path": str(path), "fingerprint": hashlib.sha256(path.read_bytes()).hexdigest(), "format": "mathinstruct",
        "template": "alpaca", "records": 4, "examples": 3, "duplicates_left_out": 1, "excluded": {},
        "sources": {"gsm": 2, "math": 1},
    }


# -- formats and templates --------------------------------------------------------------------------------
@pytest.mark.parametrize("record, fmt", [
    ({"instruction": "i", "output": "o"}, "alpaca"),
    ({"instruction": "i", "input": "x", "output": "o"}, "alpaca"),
    ({"instruction": "i", "output": "o", "source": "gsm8k"}, "mathinstruct"),
    ({"prompt": "p", "response": "r"}, "prompt-response"),
    ({"prompt": "p", "completion": "c"}, "prompt-response"),
    ({"messages": [{"role": "assistant", "content": "x"}], "prompt": "p", "response": "r"}, "chat"),
    ({"instruction": "i"}, None),
    ({"prompt": "p"}, None),
    ({"text": "t"}, None),
])
def test_detect_format(tmp_path, record, fmt):
    path = write_jsonl(tmp_path / "one.jsonl", [record])
    assert detect_format(read_records(path)[0]) == fmt
    if fmt is None:
        with pytest.raises(InputError) as e:
            load_pool(path)
        assert str(e.value).startswith(f"{path}:1: cannot tell the format from the fields ({', '.join(sorted(record))})")
    else:
        assert load_pool(path).format == fmt


def test_alpaca_renders_the_stanford_template(tmp_path):
    rows = [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Add 2 and 3.", "output": "5"},  # no input field
        {"instruction": "Add 2 and 3.", "input": None, "output": "five"},  # null input
        {"instruction": "Name a colour.", "input": "", "output": "Blue"},  # empty input
    ]
    pool = load_pool(write_jsonl(tmp_path / "alpaca.jsonl", rows))
    assert pool.format == "alpaca" and pool.template.name == "alpaca"
    assert [(e.prompt, e.response) for e in pool.examples] == [
        (ALPACA_TRANSLATE, "Bonjour"), (ALPACA_ADD, "5"), (ALPACA_ADD, "five"), (ALPACA_COLOUR, "Blue")]
    assert all(e.source is None for e in pool.examples) and not pool.has_sources


def test_mathinstruct_keeps_sources(tmp_path):
    rows = [{"instruction": "Add 2 and 3.", "output": "5", "source": "data/CoT/gsm_rft.json"},
            {"instruction": "Name a colour.", "output": "Blue", "source": 7}]
    pool = load_pool(write_jsonl(tmp_path / "mi.jsonl", rows))
    assert pool.format == "mathinstruct"
    assert [(e.prompt, e.response, e.source) for e in pool.examples] == [
        (ALPACA_ADD, "5", "data/CoT/gsm_rft.json"), (ALPACA_COLOUR, "Blue", "7")]
    assert pool.source_counts() == {"data/CoT/gsm_rft.json": 1, "7": 1}


def test_prompt_response_and_completion(tmp_path):
    rows = [{"prompt": "Add 2 and 3.", "completion": " 5"}, {"prompt": "Name a colour.", "completion": "Blue"}]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    pool = load_pool(path)
    assert pool.format == "prompt-response"
    assert [(e.prompt, e.response) for e in pool.examples] == [(ALPACA_ADD, " 5"), (ALPACA_COLOUR, "Blue")]
    raw = load_pool(path, template="none")
    assert [(e.prompt, e.response) for e in raw.examples] == [("Add 2 and 3.", " 5"), ("Name a colour.", "Blue")]
    mixed = load_pool(write_jsonl(tmp_path / "pr.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "q", "completion": "c"}]),
                      template="none")
    assert [(e.prompt, e.response) for e in mixed.examples] == [("p", "r"), ("q", "c")]


def test_template_none(tmp_path):
    rows = [{"instruction": "Say hi.", "output": "hi"}, {"instruction": "Echo:", "input": "abc", "output": "abc"}]
    pool = load_pool(write_jsonl(tmp_path / "t.jsonl", rows), template="none")
    assert pool.template.name == "none"
    assert [e.prompt for e in pool.examples] == ["Say hi.", "Echo:\n\nabc"]


def test_custom_template_string_and_file(tmp_path):
    rows = [{"instruction": "Add 2 and 3.", "output": "5"}, {"instruction": "Echo", "input": "x", "output": "x"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    pool = load_pool(path, template="Question: {instruction}\nAnswer:")
    assert pool.template.name == "custom"
    assert [e.prompt for e in pool.examples] == ["Question: Add 2 and 3.\nAnswer:", "Question: Echo\nAnswer:"]
    with_input = load_pool(path, template="<s>{instruction}\n[{input}]\n")
    assert with_input.examples[1].prompt == "<s>Echo\n[x]\n"
    template_file = write(tmp_path / "template.txt", b"### Q\n{instruction}\n### A\n")
    assert load_pool(path, template=str(template_file)).examples[0].prompt == "### Q\nAdd 2 and 3.\n### A\n"
    # Braces in the data are text, not placeholders.
    braces = load_pool(write_jsonl(tmp_path / "b.jsonl", [{"instruction": "Fill {input} and {0} {", "output": "}"}]))
    assert "### Instruction:\nFill {input} and {0} {\n\n### Response:" in braces.examples[0].prompt
    with pytest.raises(InputError, match=r"must contain \{instruction\}"):
        PromptTemplate.from_option("Q: {question}")
    with pytest.raises(InputError, match="placeholder other than"):
        PromptTemplate.from_option("{instruction} {answer}")


def test_format_forcing(tmp_path):
    mi = write_jsonl(tmp_path / "mi.jsonl", [{"instruction": "Add 2 and 3.", "output": "5", "source": "s"}])
    assert load_pool(mi).format == "mathinstruct"
    forced = load_pool(mi, format="alpaca")
    assert forced.format == "alpaca" and forced.examples[0].prompt == ALPACA_ADD
    both = write_jsonl(tmp_path / "both.jsonl", [
        {"prompt": "Add 2 and 3.", "response": "5", "messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}])
    assert load_pool(both).format == "chat"
    as_pr = load_pool(both, format="prompt-response")
    assert as_pr.format == "prompt-response"
    assert (as_pr.examples[0].prompt, as_pr.examples[0].response, as_pr.examples[0].messages) == (ALPACA_ADD, "5", None)
    # The id is the record's, whatever the format it is read as.
    assert as_pr.ids == load_pool(both).ids == [reference_id(read_records(both)[0].data)]
    with pytest.raises(InputError) as e:
        load_pool(mi, format="chat")
    assert str(e.value).startswith(f"{mi}:1: field 'messages' must be a non-empty list")
    with pytest.raises(InputError, match="unknown format 'sharegpt'") as e:
        load_pool(mi, format="sharegpt")
    assert e.value.parameter == "format" and e.value.path is None


# -- ids and duplicates -----------------------------------------------------------------------------------
def test_ids_stable_across_key_order_whitespace_and_position(tmp_path):
    a = write(tmp_path / "a.jsonl", b'{"instruction": "Add 2 and 3.", "input": "", "output": "5"}\n'
                                    b'{"instruction": "Name a colour.", "output": "Blue"}\n')
    b = write(tmp_path / "b.jsonl", b'\n{ "output":"Blue","instruction" : "Name a colour." }\n'
                                    b'{"output":"5",\t"input":"","instruction":"Add 2 and \\u0033."}\n\n')
    ids_a, ids_b = load_pool(a).ids, load_pool(b).ids
    assert ids_a == ids_b[::-1]
    assert ids_a == [reference_id({"instruction": "Add 2 and 3.", "input": "", "output": "5"}),
                     reference_id({"instruction": "Name a colour.", "output": "Blue"})]
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids_a)
    # Any change in content, even an extra field or one character, gives another id.
    c = write_jsonl(tmp_path / "c.jsonl", [{"instruction": "Add 2 and 3.", "input": "", "output": "5 "},
                                           {"instruction": "Name a colour.", "output": "Blue", "meta": "x"}])
    assert not set(load_pool(c).ids) & set(ids_a)


def test_id_column(tmp_path):
    rows = [dict(r, uid=f"ex-{i}") for i, r in enumerate(ROWS)]
    pool = load_pool(write_jsonl(tmp_path / "u.jsonl", rows), id_column="uid")
    assert pool.ids == ["ex-0", "ex-1", "ex-2"]
    int_ids = load_pool(write_jsonl(tmp_path / "i.jsonl", [dict(r, uid=10 + i) for i, r in enumerate(ROWS)]), id_column="uid")
    assert int_ids.ids == ["10", "11", "12"]
    # From CSV the same ids come as text: the same example ids.
    assert load_pool(write_csv(tmp_path / "i.csv", [dict(r, uid=str(10 + i)) for i, r in enumerate(ROWS)]),
                     id_column="uid").ids == int_ids.ids


def test_identical_records_are_reported_and_kept_once(tmp_path):
    rows = [ROWS[0], ROWS[1], ROWS[0], ROWS[2], ROWS[1], ROWS[0]]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    pool = load_pool(path)
    assert pool.ids == [reference_id(r) for r in ROWS]
    assert [e.line for e in pool.examples] == [1, 2, 4]
    assert [(d.index, d.line, d.first_index, d.first_line) for d in pool.duplicates] == [(2, 3, 0, 1), (4, 5, 1, 2), (5, 6, 0, 1)]
    assert len(pool.records) == 6 and pool.summary()["duplicates_left_out"] == 3
    # Key order and spacing do not hide a duplicate.
    reordered = write(tmp_path / "re.jsonl", b'{"instruction":"a","output":"b"}\n{ "output" : "b", "instruction" : "a" }\n')
    assert len(load_pool(reordered).examples) == 1
    # With a user id column, a repeated identical record is a duplicate too, not an error.
    with_ids = load_pool(write_jsonl(tmp_path / "dup_ids.jsonl", [dict(ROWS[0], uid=1), dict(ROWS[1], uid=2), dict(ROWS[0], uid=1)]),
                         id_column="uid")
    assert with_ids.ids == ["1", "2"] and [(d.line, d.first_line) for d in with_ids.duplicates] == [(3, 1)]


def test_same_user_id_on_different_content_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "clash.jsonl", [dict(ROWS[0], uid="a"), dict(ROWS[1], uid="b"), dict(ROWS[2], uid="a")])
    with pytest.raises(InputError) as e:
        load_pool(path, id_column="uid")
    assert str(e.value) == f"{path}:3: duplicate id 'a' (first at line 1) for a different record"
    parquet = write_parquet(tmp_path / "clash.parquet", [dict(ROWS[0], uid="a"), dict(ROWS[1], uid="a")])
    with pytest.raises(InputError, match=r"record 2: duplicate id 'a' \(first at record 1\)"):
        load_pool(parquet, id_column="uid")


@pytest.mark.parametrize("value, problem", [
    (None, "missing id in column 'uid'"), ("  ", "missing id in column 'uid'"),
    (True, "id column 'uid' must hold strings or integers, got bool"),
    (1.5, "id column 'uid' must hold strings or integers, got float"),
])
def test_bad_user_ids(tmp_path, value, problem):
    path = write_jsonl(tmp_path / "ids.jsonl", [dict(ROWS[0], uid="x"), dict(ROWS[1], uid=value)])
    with pytest.raises(InputError) as e:
        load_pool(path, id_column="uid")
    assert str(e.value) == f"{path}:2: {problem}"


# -- bad input --------------------------------------------------------------------------------------------
GOOD = b'{"instruction": "Add 2 and 3.", "output": "5"}\n'
CHAT = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'

BAD_INPUT = [
    # name, bytes, line, what the message says
    ("malformed.jsonl", GOOD + GOOD.replace(b"5", b"6") + b'{"instruction": "x", "output": }\n' + GOOD, 3, "not valid JSON: Expecting value"),
    ("truncated.jsonl", GOOD + GOOD.replace(b"5", b"6") + b'{"instruction": "x", "outp', 3, "not valid JSON: Unterminated string"),
    ("latin1.jsonl", GOOD + b'{"instruction": "caf\xe9", "output": "x"}\n', 2, "not valid UTF-8 (byte 0xe9 at column 21)"),
    ("bom.jsonl", b"\xef\xbb\xbf" + GOOD, 1, "byte-order mark"),
    ("missing.jsonl", GOOD + b'{"instruction": "no output"}\n', 2, "missing field 'output'"),
    ("missing_instruction.jsonl", GOOD + b'\n{"output": "x", "input": ""}\n', 3, "missing field 'instruction'"),
    ("number.jsonl", GOOD + GOOD + b'{"instruction": "Add 2 and 3.", "output": 5}\n', 3, "field 'output' must be a string, got int"),
    ("input_list.jsonl", GOOD + b'{"instruction": "a", "input": ["x"], "output": "b"}\n', 2, "field 'input' must be a string, got list"),
    ("source_dict.jsonl", b'{"instruction": "a", "output": "b", "source": {"x": 1}}\n', 1, "field 'source' must be a string, got dict"),
    ("array_line.jsonl", GOOD + b'["instruction", "output"]\n', 2, "expected a JSON object, got list"),
    ("string_line.jsonl", GOOD + b'"just text"\n', 2, "expected a JSON object, got str"),
    ("empty_messages.jsonl", CHAT + b'{"messages": []}\n', 2, "field 'messages' must be a non-empty list"),
    ("message_not_object.jsonl", CHAT + b'{"messages": ["hi", {"role": "assistant", "content": "x"}]}\n', 2,
     "messages[0] must be an object, got str"),
    ("message_no_content.jsonl", CHAT + CHAT + b'{"messages": [{"role": "assistant", "text": "x"}]}\n', 3,
     "messages[0] needs string 'role' and 'content' fields"),
    ("unknown.jsonl", b'{"question": "q", "answer": "a"}\n', 1, "cannot tell the format from the fields (answer, question)"),
    ("malformed.json", b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a" "output": "b"}\n]\n', 3,
     "not valid JSON: Expecting ',' delimiter"),
    ("lines.json", GOOD + GOOD, 2, "not valid JSON: Extra data (column 1); one object per line is the .jsonl format"),
    ("bom.json", b"\xef\xbb\xbf[" + GOOD + b"]", 1, "byte-order mark"),
    ("latin1.json", b'[\n {"instruction": "a", "output": "b"},\n {"instruction": "\xff", "output": "b"}]', 3, "not valid UTF-8 (byte 0xff)"),
    ("item_number.json", b'[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "a",\n   "output": 1.5}\n]', 4,
     "field 'output' must be a string, got float"),
    ("item_not_object.json", b'[{"instruction": "a", "output": "b"},\n "x"]', 2, "expected a JSON object, got str"),
    ("extra.csv", b"instruction,output\nAdd 2 and 3.,5\nName a colour.,Blue,Red\n", 3, "1 more value(s) than header columns"),
    ("extra_after_blank.csv", b"instruction,output\na,b\n\n\nc,d,e\n", 5, "1 more value(s) than header columns"),
    ("extra_after_multiline.csv", b"instruction,output\na,b\n\n\"multi\nline\",b\nc,d,e,f\n", 6, "2 more value(s) than header columns"),
    ("short_after_blank.csv", b"instruction,output\na,b\n\nonly one\n", 4, "missing field 'output'"),
    ("short.csv", b"instruction,output\na,b\nno output here\n", 3, "missing field 'output'"),
    ("open_quote.csv", b'instruction,output\na,b\nc,"never closed\n', 3, "not valid CSV: unexpected end of data"),
    ("bom.csv", b"\xef\xbb\xbfinstruction,output\na,b\n", 1, "byte-order mark"),
    ("latin1.csv", b"instruction,output\na,b\nc,\xe9t\xe9\n", 3, "not valid UTF-8 (byte 0xe9)"),
]


@pytest.mark.parametrize("name, data, line, problem", BAD_INPUT, ids=[case[0] for case in BAD_INPUT])
def test_bad_input_names_file_and_line(tmp_path, name, data, line, problem):
    path = write(tmp_path / name, data)
    with pytest.raises(InputError) as e:
        load_pool(path)
    assert (e.value.path, e.value.line) == (str(path), line)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert problem in str(e.value)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("name, data", [
    ("empty.jsonl", b""), ("blank.jsonl", b"\n  \n\n"), ("empty.json", b""), ("empty_array.json", b"[]"),
    ("empty.csv", b""), ("header_only.csv", b"instruction,output\n"),
])
def test_empty_files(tmp_path, name, data):
    path = write(tmp_path / name, data)
    with pytest.raises(InputError) as e:
        load_pool(path)
    assert str(e.value) == f"{path}: no records: the file is empty"


# -- empty prompts and responses: excluded and reported, or refused with strict --------------------------------
EMPTY = [
    # name, the record (after a good one, so it is line 2), the reason, what --strict says
    ("alpaca_empty_output", {"instruction": "Name a colour.", "output": ""}, "empty_response", "field 'output' is empty"),
    ("alpaca_space_output", {"instruction": "Name a colour.", "input": "x", "output": " \n\t"}, "empty_response",
     "field 'output' is empty"),
    ("alpaca_empty_instruction", {"instruction": "", "input": "Good morning", "output": "Bonjour"}, "empty_prompt",
     "field 'instruction' is empty"),
    ("alpaca_space_instruction", {"instruction": "  ", "output": "5"}, "empty_prompt", "field 'instruction' is empty"),
    ("both_empty", {"instruction": "", "output": ""}, "empty_response", "field 'output' is empty"),
    ("empty_prompt_field", {"prompt": " ", "response": "r"}, "empty_prompt", "field 'prompt' is empty"),
    ("empty_completion", {"prompt": "p", "completion": ""}, "empty_response", "field 'completion' is empty"),
    ("chat_empty_turn", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
     "empty_response", "messages[1]: the assistant turn is empty"),
    ("chat_one_of_two_turns_empty", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                                  {"role": "user", "content": "c"}, {"role": "assistant", "content": ""}]},
     "empty_response", "messages[3]: the assistant turn is empty"),
    ("chat_no_assistant", {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
     "no_assistant_turn", "the conversation has no assistant turn"),
]
GOOD_OF = {"alpaca": {"instruction": "Add 2 and 3.", "output": "5"}, "prompt": {"prompt": "p", "response": "r"},
           "messages": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}}


def empty_pool(tmp_path: Path, record: dict, suffix: str = ".jsonl") -> Path:
    key = "messages" if "messages" in record else "prompt" if "prompt" in record else "alpaca"
    rows = [GOOD_OF[key], record]
    if key == "prompt" and "completion" in record:
        rows[0] = {"prompt": "p", "completion": "c"}
    if suffix == ".parquet":
        return write_parquet(tmp_path / f"pool{suffix}", rows)
    return write_jsonl(tmp_path / f"pool{suffix}", rows)


@pytest.mark.parametrize("name, record, reason, problem", EMPTY, ids=[case[0] for case in EMPTY])
def test_empty_prompts_and_responses_are_excluded_or_refused_with_strict(tmp_path, tokenizer, name, record, reason,
                                                                         problem):
    path = empty_pool(tmp_path, record)
    pool = load_pool(path)
    # Kept in place (so ids stay aligned with the input), flagged with the reason, counted.
    assert [e.excluded for e in pool.examples] == [None, reason]
    assert pool.ids == [reference_id(r.data) for r in read_records(path)]
    assert pool.exclusion_counts() == {reason: 1} and pool.summary()["excluded"] == {reason: 1}
    # No token of it carries loss, whatever the rule; the good one is untouched.
    good, empty = tokenize_examples(tokenizer, pool.examples)
    assert good.exclusion is None and good.n_tokens > 0
    assert empty.excluded == empty.exclusion == reason and empty.n_tokens == 0 and len(empty) > 0
    # --strict refuses it, naming the file and line.
    with pytest.raises(InputError) as e:
        load_pool(path, strict=True)
    assert (e.value.path, e.value.line) == (str(path), 2)
    assert str(e.value).startswith(f"{path}:2: {problem}") and "--strict" in str(e.value)
    assert e.value.exit_code == 2


def test_strict_names_the_record_where_a_format_has_no_lines(tmp_path):
    path = empty_pool(tmp_path, {"instruction": "c", "output": ""}, ".parquet")
    assert [e.excluded for e in load_pool(path).examples] == [None, "empty_response"]
    with pytest.raises(InputError) as e:
        load_pool(path, strict=True)
    assert str(e.value).startswith(f"{path}: record 2: field 'output' is empty")


def test_a_pool_with_nothing_usable_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "pool.jsonl", [{"instruction": "a", "output": ""}, {"instruction": " ", "output": "b"},
                                                 {"instruction": "a", "output": ""}])  # the third repeats the first
    with pytest.raises(InputError) as e:
        load_pool(path)
    assert str(e.value) == (f"{path}: no usable example: all 2 example(s) are excluded (1 empty_response, "
                            "1 empty_prompt), so nothing is left to learn from")
    assert e.value.exit_code == 2
    # One usable example is enough.
    write_jsonl(path, [{"instruction": "a", "output": ""}, {"instruction": "c", "output": "d"}])
    assert [e.excluded for e in load_pool(path).examples] == ["empty_response", None]


def test_check_data_counts_and_lists_the_excluded_and_strict_refuses_them(tmp_path):
    write_jsonl(tmp_path / "pool.jsonl", [ROWS[0], {"instruction": "x", "output": " "}, ROWS[1],
                                          {"instruction": "", "output": "y"}, {"instruction": "z", "output": ""}])
    result = run_cli("check-data", "pool.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["records"], report["examples"]) == (5, 5)
    assert report["excluded"] == {"empty_prompt": 1, "empty_response": 2}
    assert [(x["line"], x["reason"]) for x in report["excluded_examples"]] == [
        (2, "empty_response"), (4, "empty_prompt"), (5, "empty_response")]
    assert "1 empty prompt, 2 empty response: left out" in result.stderr and "line 2, line 4, line 5" in result.stderr
    strict = run_cli("check-data", "pool.jsonl", "--strict", cwd=tmp_path)
    assert strict.returncode == 2 and "pool.jsonl:2: field 'output' is empty" in strict.stderr
    assert "Traceback" not in strict.stderr and strict.stdout == ""
    write_jsonl(tmp_path / "clean.jsonl", ROWS)
    clean = run_cli("check-data", "clean.jsonl", "--strict", cwd=tmp_path)
    assert clean.returncode == 0 and json.loads(clean.stdout)["excluded"] == {} and "note" not in clean.stderr


def test_files_that_cannot_be_read(tmp_path):
    txt = write(tmp_path / "pool.txt", GOOD)
    with pytest.raises(InputError) as e:
        load_pool(txt)
    assert str(e.value).startswith(f"{txt}: unsupported file type .txt; expected .jsonl, .json, .parquet, .csv")
    with pytest.raises(InputError, match="unsupported file type \\(none\\)"):
        load_pool(write(tmp_path / "pool", GOOD))
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as e:
        load_pool(missing)
    assert str(e.value) == f"{missing}: no such file or directory"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.jsonl").write_bytes(GOOD)
    with pytest.raises(InputError, match="not a directory saved with datasets' save_to_disk") as e:
        load_pool(folder)
    assert e.value.path == str(folder)
    with pytest.raises(InputError, match="cannot read as Parquet") as e:
        load_pool(write(tmp_path / "broken.parquet", b"PAR1 not really parquet"))
    assert e.value.path == str(tmp_path / "broken.parquet")
    with pytest.raises(InputError, match=r"expected a JSON array of objects") as e:
        load_pool(write(tmp_path / "object.json", GOOD))
    assert e.value.path == str(tmp_path / "object.json")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([str(S2L), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


def test_check_data_cli(tmp_path):
    write(tmp_path / "bad.jsonl", GOOD + GOOD.replace(b"5", b"6") + b'{"instruction": "x", "output": }\n')
    result = run_cli("check-data", "bad.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    output = result.stderr + result.stdout
    assert "bad.jsonl:3: not valid JSON" in output
    assert "Traceback" not in output

    write(tmp_path / "clash.jsonl", GOOD.replace(b"}", b', "id": 1}') + GOOD.replace(b"5", b"6").replace(b"}", b', "id": 1}'))
    result = run_cli("check-data", "clash.jsonl", "--id-column", "id", cwd=tmp_path)
    assert result.returncode == 2 and "clash.jsonl:2: duplicate id '1'" in result.stderr + result.stdout

    write(tmp_path / "good.jsonl", GOOD + GOOD + GOOD.replace(b"5", b"6"))
    result = run_cli("check-data", "good.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["format"], report["records"], report["examples"], report["duplicates_left_out"]) == ("alpaca", 3, 2, 1)


def test_check_data_cli_keeps_a_long_path_on_one_line(tmp_path):
    # Rich wraps at 80 columns when stderr is not a terminal unless told not to.
    folder = tmp_path / ("a_rather_long_directory_name_" * 3) / "nested"
    folder.mkdir(parents=True)
    bad = write(folder / "bad.jsonl", GOOD + b"{oops}\n")
    result = run_cli("check-data", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}:2: not valid JSON" in result.stderr


# -- tokenisation with the prompt masked (the real SmolLM2 tokenizer) ---------------------------------------
@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def text_example(prompt: str, response: str, example_id: str = "x") -> Example:
    return Example(example_id, 0, 1, None, prompt=prompt, response=response)


def chat_example(*turns: tuple[str, str], example_id: str = "c") -> Example:
    return Example(example_id, 0, 1, None, messages=tuple(turns))


def pairs(tokenizer, t) -> list[tuple[str, bool]]:
    return [(tokenizer.convert_ids_to_tokens(int(i)), bool(m)) for i, m in zip(t.input_ids, t.loss_mask)]


def loss_text(tokenizer, t) -> str:
    return tokenizer.decode(t.input_ids[t.loss_mask].tolist())


def prompt_text(tokenizer, t) -> str:
    return tokenizer.decode(t.input_ids[~t.loss_mask].tolist())


@pytest.mark.parametrize("boundary", ["reference", "characters", "separate"])
def test_alpaca_example_loss_is_response_plus_eos(tokenizer, boundary):
    """No token here merges the prompt's end with the response's start, so every boundary rule agrees."""
    assert tokenizer.eos_token == "<|im_end|>"
    template = PromptTemplate.from_option("alpaca")
    cases = [(ALPACA_TRANSLATE, "Bonjour"), (ALPACA_ADD, "2 + 3 = 5.\n#### 5"), (ALPACA_COLOUR, "Blue")]
    assert [template.render("Translate to French.", "Good morning"), template.render("Add 2 and 3."),
            template.render("Name a colour.")] == [p for p, _ in cases]
    examples = [text_example(p, r, f"id{i}") for i, (p, r) in enumerate(cases)]
    for example, t in zip(examples, tokenize_examples(tokenizer, examples, max_length=512, boundary=boundary)):
        assert t.example_id == example.example_id and not t.truncated
        assert t.input_ids.dtype == np.int32 and t.loss_mask.dtype == bool
        prompt_ids = tokenizer(example.prompt)["input_ids"]
        whole_ids = tokenizer(example.prompt + example.response)["input_ids"]
        assert t.input_ids.tolist() == whole_ids + [tokenizer.eos_token_id]
        # Nothing of the prompt carries loss; every token after it does, EOS included.
        n_prompt = len(prompt_ids)
        assert whole_ids[:n_prompt] == prompt_ids
        assert t.loss_mask.tolist() == [False] * n_prompt + [True] * (len(t) - n_prompt)
        assert loss_text(tokenizer, t) == example.response + "<|im_end|>"
        assert prompt_text(tokenizer, t) == example.prompt
        assert t.input_ids[-1] == tokenizer.eos_token_id and t.loss_mask[-1]
        assert t.n_tokens == len(t) - n_prompt


def test_alpaca_tokens_one_by_one(tokenizer):
    [t] = tokenize_examples(tokenizer, [text_example(ALPACA_ADD, "5")])
    assert pairs(tokenizer, t)[-7:] == [
        ("Ċ", False), ("Ċ", False), ("###", False), ("ĠResponse", False), (":", False), ("5", True), ("<|im_end|>", True)]
    assert pairs(tokenizer, t)[0] == ("Below", False)
    assert sum(m for _, m in pairs(tokenizer, t)) == 2


@pytest.mark.parametrize("response", [
    "def f(x):\n    return x  \n\n",  # whitespace-only tokens (indentation, trailing spaces)
    "  leading spaces",
    "日本語のテキスト 🙂 é",  # characters split over several byte-level tokens
    "",  # an empty response still learns to stop (a pool leaves such records out: test_empty_prompts_...)
])
def test_response_tokens_decode_exactly(tokenizer, response):
    [t] = tokenize_examples(tokenizer, [text_example(ALPACA_COLOUR, response)])
    assert loss_text(tokenizer, t) == response + "<|im_end|>"
    assert prompt_text(tokenizer, t) == ALPACA_COLOUR
    first_loss = int(np.argmax(t.loss_mask))
    assert t.loss_mask[first_loss:].all() and not t.loss_mask[:first_loss].any()


MULTI_TURN = (("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello!"), ("user", "2+2?"), ("assistant", "4"))
MULTI_TURN_PAIRS = [
    ("<|im_start|>", False), ("system", False), ("Ċ", False), ("Be", False), ("Ġbrief", False), (".", False),
    ("<|im_end|>", False), ("Ċ", False),
    ("<|im_start|>", False), ("user", False), ("Ċ", False), ("Hi", False), ("Ġthere", False), ("<|im_end|>", False),
    ("Ċ", False),
    ("<|im_start|>", False), ("ass", False), ("istant", False), ("Ċ", False),
    ("Hello", True), ("!", True), ("<|im_end|>", True),
    ("Ċ", False),
    ("<|im_start|>", False), ("user", False), ("Ċ", False), ("2", False), ("+", False), ("2", False), ("?", False),
    ("<|im_end|>", False), ("Ċ", False),
    ("<|im_start|>", False), ("ass", False), ("istant", False), ("Ċ", False),
    ("4", True), ("<|im_end|>", True),
    ("Ċ", False),
]


def test_multi_turn_chat_loss_on_assistant_turns_only(tokenizer):
    [t] = tokenize_examples(tokenizer, [chat_example(*MULTI_TURN)])
    assert pairs(tokenizer, t) == MULTI_TURN_PAIRS
    assert not t.truncated and t.n_tokens == 5
    text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in MULTI_TURN], tokenize=False)
    assert t.input_ids.tolist() == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loss_text(tokenizer, t) == "Hello!<|im_end|>4<|im_end|>"


def test_chat_default_system_prompt_carries_no_loss(tokenizer):
    [t] = tokenize_examples(tokenizer, [chat_example(("user", "Hi there"), ("assistant", "Hello!"))])
    text = tokenizer.decode(t.input_ids.tolist())
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert loss_text(tokenizer, t) == "Hello!<|im_end|>"
    assert pairs(tokenizer, t)[-5:] == [("Ċ", False), ("Hello", True), ("!", True), ("<|im_end|>", True), ("Ċ", False)]


def test_chat_opening_with_the_assistant(tokenizer):
    # SmolLM2's template writes its default system turn before a conversation that does not start with one;
    # that text and the role header are the template's, not the assistant's.
    [t] = tokenize_examples(tokenizer, [chat_example(("assistant", "Hi, how can I help?"), ("user", "2+2?"), ("assistant", "4"))])
    assert loss_text(tokenizer, t) == "Hi, how can I help?<|im_end|>4<|im_end|>"
    assert tokenizer.decode(t.input_ids[: int(np.argmax(t.loss_mask))].tolist()).endswith("<|im_start|>assistant\n")


def test_chat_needs_a_chat_template(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.raises(InputError, match="chat template"):
        tokenize_examples(plain, [chat_example(("user", "u"), ("assistant", "a"))])
    # Text examples need none.
    [t] = tokenize_examples(plain, [text_example("Q:", " A")])
    assert loss_text(plain, t) == " A<|im_end|>"


def test_truncation(tokenizer):
    example = text_example(ALPACA_ADD, "2 + 3 = 5, so the answer is 5.")
    [full] = tokenize_examples(tokenizer, [example], max_length=512)
    n_prompt = int((~full.loss_mask).sum())
    assert not full.truncated and full.n_tokens == len(full) - n_prompt > 4

    [exact] = tokenize_examples(tokenizer, [example], max_length=len(full))
    assert not exact.truncated and exact.input_ids.tolist() == full.input_ids.tolist()

    [no_eos] = tokenize_examples(tokenizer, [example], max_length=len(full) - 1)
    assert no_eos.truncated and loss_text(tokenizer, no_eos) == example.response

    [part] = tokenize_examples(tokenizer, [example], max_length=n_prompt + 3)
    assert part.truncated and len(part) == n_prompt + 3 and part.n_tokens == 3
    assert part.input_ids.tolist() == full.input_ids[: n_prompt + 3].tolist()
    assert example.response.startswith(loss_text(tokenizer, part)) and len(loss_text(tokenizer, part)) < len(example.response)

    # The response entirely cut off: kept, flagged, with no loss token.
    for max_length in (n_prompt, 5):
        [gone] = tokenize_examples(tokenizer, [example], max_length=max_length)
        assert gone.truncated and gone.n_tokens == 0 and len(gone) == max_length and not gone.loss_mask.any()

    # Chat: cut inside the second user turn, so only the first assistant turn is left to learn.
    [chat_full] = tokenize_examples(tokenizer, [chat_example(*MULTI_TURN)])
    [chat_cut] = tokenize_examples(tokenizer, [chat_example(*MULTI_TURN)], max_length=27)
    assert chat_cut.truncated and pairs(tokenizer, chat_cut) == MULTI_TURN_PAIRS[:27]
    assert loss_text(tokenizer, chat_cut) == "Hello!<|im_end|>" and chat_full.n_tokens == 5 and chat_cut.n_tokens == 3
    [chat_gone] = tokenize_examples(tokenizer, [chat_example(*MULTI_TURN)], max_length=19)
    assert chat_gone.truncated and chat_gone.n_tokens == 0


# -- the prompt/response boundary: SmolLM2 reads "### Response:-129" as ":-", "1", "2", "9" ------------------------
MERGED = "-129"
EOS = ("<|im_end|>", True)
# The last tokens of ALPACA_ADD + MERGED under each rule, worked out by hand from SmolLM2's vocabulary.
BOUNDARY_TAILS = {
    # The papers' rule: as many tokens masked as the prompt has alone (it ends "###", "ĠResponse", ":"), so the
    # merged ":-" is prompt and the minus sign is never learnt.
    "reference": [("###", False), ("ĠResponse", False), (":-", False), ("1", True), ("2", True), ("9", True), EOS],
    # Every token touching a response character: ":-" is response, its ":" included.
    "characters": [("###", False), ("ĠResponse", False), (":-", True), ("1", True), ("2", True), ("9", True), EOS],
    # Tokenised apart: the prompt ends with ":" as at generation time, and "-" is the first response token.
    "separate": [("###", False), ("ĠResponse", False), (":", False), ("-", True), ("1", True), ("2", True), ("9", True),
                 EOS],
}


def test_boundary_rules_where_a_token_merges_prompt_and_response(tokenizer):
    prompt_ids = tokenizer(ALPACA_ADD)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(prompt_ids)[-3:] == ["###", "ĠResponse", ":"]
    joint_ids = tokenizer(ALPACA_ADD + MERGED)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(joint_ids)[-4:] == [":-", "1", "2", "9"] and len(joint_ids) == len(prompt_ids) + 3
    eos = tokenizer.eos_token_id
    example = text_example(ALPACA_ADD, MERGED)
    got = {rule: tokenize_examples(tokenizer, [example], boundary=rule)[0] for rule in BOUNDARY_TAILS}
    for rule, t in got.items():
        assert pairs(tokenizer, t)[-len(BOUNDARY_TAILS[rule]):] == BOUNDARY_TAILS[rule], rule
        assert not t.loss_mask[: len(prompt_ids) - 1].any(), rule  # the rest of the prompt never carries loss
        assert t.input_ids[-1] == eos and t.loss_mask[-1] and not t.truncated, rule  # EOS closes it, with loss
    assert got["reference"].input_ids.tolist() == got["characters"].input_ids.tolist() == joint_ids + [eos]
    assert got["separate"].input_ids.tolist() == prompt_ids + tokenizer(MERGED, add_special_tokens=False)["input_ids"] + [eos]
    assert int((~got["reference"].loss_mask).sum()) == int((~got["separate"].loss_mask).sum()) == len(prompt_ids)
    assert {rule: t.n_tokens for rule, t in got.items()} == {"reference": 4, "characters": 5, "separate": 5}
    assert {rule: loss_text(tokenizer, t) for rule, t in got.items()} == {
        "reference": "129<|im_end|>", "characters": ":-129<|im_end|>", "separate": "-129<|im_end|>"}
    # The default is the papers' rule.
    assert tokenize_examples(tokenizer, [example])[0].loss_mask.tolist() == got["reference"].loss_mask.tolist()


def test_boundary_rules_under_truncation(tokenizer):
    example = text_example(ALPACA_ADD, MERGED)
    n_prompt = len(tokenizer(ALPACA_ADD)["input_ids"])
    rules = list(BOUNDARY_TAILS)

    def cut(max_length: int) -> dict:
        return {rule: tokenize_examples(tokenizer, [example], max_length, rule)[0] for rule in rules}

    # Cut right after the prompt's length: only characters keeps a loss token, the merged ":-".
    at_prompt = cut(n_prompt)
    assert {r: (t.n_tokens, t.truncated) for r, t in at_prompt.items()} == {
        "reference": (0, True), "characters": (1, True), "separate": (0, True)}
    assert [t.exclusion for t in at_prompt.values()] == ["no_response_tokens", None, "no_response_tokens"]
    # Two tokens past it.
    two = cut(n_prompt + 2)
    assert {r: loss_text(tokenizer, t) for r, t in two.items()} == {"reference": "12", "characters": ":-12",
                                                                   "separate": "-1"}
    assert all(len(t) == n_prompt + 2 and t.truncated for t in two.values())
    # One short of the whole: the EOS is what is cut, under every rule.
    for rule in rules:
        [whole] = tokenize_examples(tokenizer, [example], boundary=rule)
        [no_eos] = tokenize_examples(tokenizer, [example], len(whole) - 1, rule)
        assert no_eos.truncated and no_eos.n_tokens == whole.n_tokens - 1 and no_eos.input_ids[-1] != tokenizer.eos_token_id
        [exact] = tokenize_examples(tokenizer, [example], len(whole), rule)
        assert not exact.truncated and exact.loss_mask.tolist() == whole.loss_mask.tolist()


def test_boundary_rules_leave_chat_alone_and_bad_values_are_refused(tokenizer):
    chats = [tokenize_examples(tokenizer, [chat_example(*MULTI_TURN)], boundary=rule)[0] for rule in BOUNDARY_TAILS]
    assert all(pairs(tokenizer, t) == MULTI_TURN_PAIRS for t in chats)
    with pytest.raises(InputError, match="unknown value 'chars'") as e:
        tokenize_examples(tokenizer, [text_example("Q:", " A")], boundary="chars")
    assert e.value.parameter == "boundary"


def test_separate_refuses_a_tokenizer_that_starts_every_text_with_a_space(tokenizer):
    from tokenizers import pre_tokenizers

    spaced = copy.deepcopy(tokenizer)  # as SentencePiece's dummy prefix does
    spaced.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    example = text_example(ALPACA_ADD, "5")
    with pytest.raises(InputError, match="starts every text with a space") as e:
        tokenize_examples(spaced, [example], boundary="separate")
    assert e.value.parameter == "boundary"
    for rule in ("reference", "characters"):
        assert tokenize_examples(spaced, [example], boundary=rule)[0].n_tokens == 2


def test_first_token_never_carries_loss(tokenizer):
    # No prompt at all: every token is response, but the first has nothing before it to be predicted from.
    [t] = tokenize_examples(tokenizer, [text_example("", "Hello world")])
    assert t.loss_mask.tolist() == [False, True, True]
    assert tokenizer.decode(t.input_ids.tolist()) == "Hello world<|im_end|>"
    [one] = tokenize_examples(tokenizer, [text_example("", "Hi")], max_length=1)
    assert one.loss_mask.tolist() == [False] and one.n_tokens == 0 and one.truncated


def test_batches_keep_order_and_match_one_at_a_time(tokenizer):
    rng = random.Random(0)
    examples = []
    for i in range(530):  # more than one batch of text examples, with chat ones in between
        if i % 97 == 0:
            examples.append(chat_example(("user", f"Count to {i}."), ("assistant", f"{i} done"), example_id=f"c{i}"))
        else:
            words = " ".join(rng.choice(["alpha", "beta", "γάμμα", "42", "\n", "  "]) for _ in range(rng.randint(0, 12)))
            examples.append(text_example(f"Q{i}: {words}\nA:", f" {words} {i}", example_id=f"t{i}"))
    together = tokenize_examples(tokenizer, examples, max_length=40)
    assert [t.example_id for t in together] == [e.example_id for e in examples]
    for example, t in zip(examples[::23] + examples[-5:], together[::23] + together[-5:]):
        [alone] = tokenize_examples(tokenizer, [example], max_length=40)
        assert alone.input_ids.tolist() == t.input_ids.tolist() and alone.loss_mask.tolist() == t.loss_mask.tolist()
    for example, t in zip(examples, together):
        assert len(t) <= 40 and not t.loss_mask[0]
        if not example.is_chat and not t.truncated:
            assert loss_text(tokenizer, t) == example.response + "<|im_end|>"


def test_pool_to_tokens(tokenizer, tmp_path):
    rows = [dict(r, source=s) for r, s in zip(ROWS, ["a", "b", "a"])]
    pool = load_pool(write_jsonl(tmp_path / "pool.jsonl", rows))
    tokenized = tokenize_examples(tokenizer, pool.examples, max_length=512)
    assert [t.example_id for t in tokenized] == pool.ids
    assert [t.source for t in tokenized] == ["a", "b", "a"]
    assert [loss_text(tokenizer, t) for t in tokenized] == [r["output"] + "<|im_end|>" for r in ROWS]
    assert [prompt_text(tokenizer, t) for t in tokenized] == EXPECTED_PROMPTS


# -- property: what is written is what is read ----------------------------------------------------------------
TEXT = st.text(max_size=20)  # any code points but surrogates: control characters, U+2028, U+0085 ...
RECORD = st.dictionaries(TEXT, st.one_of(TEXT, st.integers(-10**6, 10**6), st.booleans(), st.none(), st.lists(TEXT, max_size=3)),
                         max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(RECORD, min_size=1, max_size=6), seed=st.integers(0, 2**16), ascii_only=st.booleans())
def test_jsonl_round_trip_and_stable_ids(records, seed, ascii_only):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        first = Path(folder) / "first.jsonl"
        lines = [json.dumps(r, ensure_ascii=ascii_only).encode("utf-8") for r in records]
        first.write_bytes(b"\n".join(lines) + b"\n")
        read = read_records(first)
        assert [r.data for r in read] == records
        assert [r.raw for r in read] == lines
        assert [r.line for r in read] == list(range(1, len(records) + 1))
        assert [content_id(r) for r in read] == [reference_id(r) for r in records]

        # The same records with keys shuffled and other spacing: the same ids.
        second = Path(folder) / "second.jsonl"
        shuffled = []
        for r in records:
            items = list(r.items())
            rng.shuffle(items)
            shuffled.append(json.dumps(dict(items), ensure_ascii=not ascii_only, indent=None, separators=(" , ", " : ")))
        second.write_text("\n".join(shuffled) + "\n\n", encoding="utf-8")
        again = read_records(second)
        assert [r.data for r in again] == records
        assert [content_id(r) for r in again] == [content_id(r) for r in read]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({"instruction": TEXT.filter(str.strip), "output": TEXT.filter(str.strip)},
                                           optional={"input": TEXT, "extra": TEXT}),
                     min_size=1, max_size=6))
def test_pool_ids_are_content_ids_and_duplicates_collapse(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = write_jsonl(Path(folder) / "p.jsonl", rows + rows[::-1])
        pool = load_pool(path)
        distinct = list(dict.fromkeys(reference_id(r) for r in rows))
        assert pool.ids == distinct
        assert len(pool.duplicates) == 2 * len(rows) - len(distinct)
        by_id = {reference_id(r): r for r in rows}
        for e in pool.examples:
            row = by_id[e.example_id]
            assert e.response == row["output"]
            assert e.prompt == PromptTemplate.from_option("alpaca").render(row["instruction"], row.get("input", ""))
