"""Data in the way users have it (issue 18): Hub dataset ids, compressed files, `--field` mappings, and
pathological records, each refused through the CLI with FILE:LINE, a plain message and exit code 2.

Everything is a real file written in tmp_path. The Hub is never reached: a Hub dataset is read from a local
`datasets` cache built here (what `load_dataset` leaves after a first download), offline.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import s2l
from s2l.cli import app
from s2l.config import DataConfig, parse_fields
from s2l.data import load_pool, read_records
from s2l.data.readers import HubDataset, data_source
from s2l.errors import InputError

from helpers import NO_SHARED_DATA, SHARED_DATA

runner = CliRunner()
SHARED = SHARED_DATA
SRC = Path(s2l.__file__).resolve().parents[1]
GSM8K = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(1, 6)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check_data(*args: str):
    return runner.invoke(app, ["check-data", *args], env={"COLUMNS": "300"})


def refused(result, where: str, *messages: str) -> None:
    """Exit code 2, one line naming `where` and saying each of `messages`, no traceback."""
    assert result.exit_code == 2, result.output
    assert where in result.output and "Traceback" not in result.output, result.output
    for message in messages:
        assert message in result.output, result.output


# -- --field ------------------------------------------------------------------------------------------------------
def test_a_field_mapping_reads_gsm8k_as_it_is(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K)
    pool = load_pool(path, fields=["instruction=question", "output=answer"])
    assert pool.format == "alpaca" and len(pool.examples) == 5
    first = pool.examples[0]
    assert "### Instruction:\nWhat is 1 + 1?\n\n### Response:" in first.prompt and first.response.endswith("#### 2")
    # ids hash the record as it is in the file: the mapping does not change them
    plain = load_pool(write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "x", "output": "y"}]))
    assert pool.ids[0] == load_pool(path, fields={"prompt": "question", "response": "answer"}).ids[0]
    assert plain.summary().get("fields") is None and pool.summary()["fields"] == {"instruction": "question",
                                                                                  "output": "answer"}
    # the records stay byte-for-byte what the file holds (a selection writes them back)
    assert pool.records[0].raw == json.dumps(GSM8K[0]).encode()


def test_every_target_can_be_mapped(tmp_path):
    rows = [{"uid": f"u{i}", "q": f"q{i}", "ctx": "c", "a": f"a{i}", "origin": "gsm"} for i in range(3)]
    pool = load_pool(write_jsonl(tmp_path / "p.jsonl", rows),
                     fields=["instruction=q", "input=ctx", "output=a", "source=origin", "id=uid"])
    assert pool.format == "mathinstruct" and pool.ids == ["u0", "u1", "u2"]
    assert pool.examples[0].source == "gsm" and "### Input:\nc" in pool.examples[0].prompt
    # --field id=uid is --id-column uid; two different id columns are refused
    assert load_pool(tmp_path / "p.jsonl", fields=["instruction=q", "output=a", "id=uid"], id_column="uid").ids == pool.ids
    with pytest.raises(InputError, match="name different id columns") as e:
        load_pool(tmp_path / "p.jsonl", fields=["instruction=q", "output=a", "id=uid"], id_column="q")
    assert e.value.parameter == "fields"
    chat = [{"conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    pool = load_pool(write_jsonl(tmp_path / "chat.jsonl", chat), fields=["messages=conversation"])
    assert pool.format == "chat" and pool.examples[0].messages == (("user", "hi"), ("assistant", "hello"))
    prompts = [{"question": "q", "completion_text": "c"}]
    pool = load_pool(write_jsonl(tmp_path / "pc.jsonl", prompts), fields=["prompt=question", "completion=completion_text"])
    assert pool.format == "prompt-response" and pool.examples[0].response == "c"


@pytest.mark.parametrize("value", [
    ["instruction=question", "output=answer"], ("output=answer", "instruction=question"),
    {"instruction": "question", "output": "answer"}, [" instruction = question ", "output=answer"],
])
def test_a_mapping_is_the_same_from_the_cli_the_api_and_yaml(value):
    expected = {"instruction": "question", "output": "answer"}
    assert DataConfig(fields=value).field_map == expected
    assert DataConfig.from_mapping({"fields": value}, "proxy.data").field_map == expected
    assert DataConfig(fields=value).fields == ("instruction=question", "output=answer")  # one spelling, target order
    assert DataConfig().fields == () and DataConfig(fields=None).field_map == {}


@pytest.mark.parametrize("value, problem", [
    (["instruction"], "expected TARGET=FIELD (like instruction=question), got 'instruction'"),
    (["=question"], "expected TARGET=FIELD"),
    (["instruction="], "expected TARGET=FIELD"),
    (["question=instruction"], "unknown target field 'question'; the formats read instruction, input, output"),
    (["output=a", "output=b"], "output is mapped twice (output=a and output=b)"),
    ({"instruction": 3}, "expected a field name for 'instruction', got 3"),
    (7, "expected TARGET=FIELD items or a mapping, got 7"),
])
def test_bad_mappings_name_the_option(value, problem):
    with pytest.raises(InputError) as e:
        DataConfig(fields=value)
    assert e.value.parameter == "fields" and problem in e.value.problem
    with pytest.raises(InputError) as e:
        DataConfig.from_mapping({"fields": value}, "proxy.data")
    assert e.value.parameter == "proxy.data.fields"


def test_bad_mappings_through_the_cli_show_the_flag(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K)
    refused(check_data(str(path), "--field", "instruction"), "--field: ", "expected TARGET=FIELD")
    refused(check_data(str(path), "--field", "bogus=question"), "--field: ", "unknown target field 'bogus'")


def test_a_mapped_field_missing_or_mistyped_names_the_line_and_the_field(tmp_path):
    rows = GSM8K[:2] + [{"question": "no answer here"}]
    path = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    refused(check_data(str(path), "--field", "instruction=question", "--field", "output=answer"), f"{path}:3:",
            "no field 'answer' to read as output (--field output=answer); the record's fields are question")
    rows = GSM8K[:1] + [{"question": 12, "answer": "x"}]
    path = write_jsonl(tmp_path / "typed.jsonl", rows)
    refused(check_data(str(path), "--field", "instruction=question", "--field", "output=answer"), f"{path}:2:",
            "field 'question' (--field instruction=question) must be a string, got int")
    # without the mapping, the format cannot be told, and the message says how to map
    refused(check_data(str(path)), f"{path}:1:", "cannot tell the format", "--field instruction=question")


@pytest.mark.skipif(not (SHARED / "math" / "gsm8k_train.jsonl").is_file(),
                    reason=NO_SHARED_DATA)
def test_the_real_gsm8k_and_math_files_load_with_a_mapping():
    gsm8k = SHARED / "math" / "gsm8k_train.jsonl"
    result = check_data(str(gsm8k), "--field", "instruction=question", "--field", "output=answer")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["format"] == "alpaca" and summary["examples"] == 7473
    assert summary["fields"] == {"instruction": "question", "output": "answer"}
    pool = load_pool(gsm8k, fields={"instruction": "question", "output": "answer"})
    assert pool.examples[0].response.endswith("#### 72") and "Natalia" in pool.examples[0].prompt
    math = load_pool(SHARED / "math" / "math_test5000.jsonl", fields=["instruction=problem", "output=solution",
                                                                      "source=type"])
    assert math.format == "mathinstruct" and len(math.examples) == 5000 and len(math.source_counts()) == 7
    assert "\\boxed" in math.examples[0].response


# -- compressed files ----------------------------------------------------------------------------------------------
COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
ALPACA = [{"instruction": f"Add {i} and 1.", "output": str(i + 1)} for i in range(4)]


@pytest.mark.parametrize("suffix", COMPRESSORS)
def test_compressed_files_read_as_the_plain_ones(suffix, tmp_path):
    compress = COMPRESSORS[suffix]
    jsonl = "".join(json.dumps(r) + "\n" for r in ALPACA).encode()
    csv_text = ("instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in ALPACA)).encode()
    for name, content in (("pool.jsonl", jsonl), ("pool.json", json.dumps(ALPACA, indent=1).encode()),
                          ("pool.csv", csv_text)):
        plain = tmp_path / name
        plain.write_bytes(content)
        packed = tmp_path / (name + suffix)
        packed.write_bytes(compress(content))
        a, b = read_records(plain), read_records(packed)
        assert [(r.data, r.line, r.raw) for r in a] == [(r.data, r.line, r.raw) for r in b]
        assert load_pool(packed).ids == load_pool(plain).ids


@pytest.mark.parametrize("name, content, line, message", [
    ("bad.jsonl.gz", b"".join(json.dumps(r).encode() + b"\n" for r in ALPACA[:2]) + b'{"instruction": oops}\n', 3,
     "not valid JSON"),
    ("typed.jsonl.gz", json.dumps(ALPACA[0]).encode() + b'\n\n{"instruction": 1, "output": "2"}\n', 3,
     "field 'instruction' must be a string, got int"),
    ("latin1.jsonl.gz", b'{"instruction": "caf\xe9", "output": "x"}\n', 1, "not valid UTF-8"),
    ("bad.csv.gz", b"instruction,output\na,b\nc\n", 3, "missing field 'output'"),
    ("bad.json.gz", b'[{"instruction": "a", "output": "b"},\n {"instruction": "a", "output": 3}]', 2,
     "field 'output' must be a string"),
])
def test_errors_in_compressed_files_name_the_line(name, content, line, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(gzip.compress(content))
    refused(check_data(str(path)), f"{path}:{line}:", message)


def test_a_damaged_compressed_file_is_a_clear_error(tmp_path):
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in ALPACA * 500))[:-100])
    refused(check_data(str(cut)), f"{cut}:", "the gzip stream ends early: was the file cut short?")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b'{"instruction": "not compressed"}\n')
    refused(check_data(str(fake)), f"{fake}:1:", "cannot decompress as gzip")
    bare = tmp_path / "pool.gz"
    bare.write_bytes(gzip.compress(b"{}"))
    refused(check_data(str(bare)), f"{bare}:", "named for what they hold (pool.jsonl.gz")


def test_zstandard_without_its_package_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # importing it fails, as where it is not installed
    monkeypatch.setitem(sys.modules, "compression", None)  # and Python 3.14's own reader
    path = tmp_path / "pool.jsonl.zst"
    path.write_bytes(b"\x28\xb5\x2f\xfd not really")
    refused(check_data(str(path)), f"{path}:", "needs the zstandard package: pip install zstandard",
            f"zstd -d {path}", "pass the pool.jsonl it gives")


def test_zstandard_files_read_where_the_package_is_installed(tmp_path):
    zstandard = pytest.importorskip("zstandard", reason="zstandard is not installed (it is not a dependency)")
    path = tmp_path / "pool.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(json.dumps(r).encode() + b"\n" for r in ALPACA)))
    assert [r.data for r in read_records(path)] == ALPACA


# -- pathological records -------------------------------------------------------------------------------------------
GOOD = b'{"instruction": "Add 2 and 3.", "output": "5"}\n'
CHAT = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


def chat_line(role: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": role, "content": "x"},
                                    {"role": "assistant", "content": "y"}]}).encode() + b"\n"


PATHOLOGICAL = [
    # name, the file's bytes, the line named, what the message says
    ("deep_array.jsonl", GOOD + b"[" * 100_000 + b"\n", 2, "nested too deeply to read"),
    ("deep_object.jsonl", GOOD + b'{"instruction": ' + b'{"a": ' * 100_000 + b"\n", 2, "nested too deeply to read"),
    ("deep.json", b"[" + GOOD.strip() + b",\n" + b"[" * 100_000 + b"]", 2, "nested too deeply to read"),
    ("huge_int.jsonl", GOOD + b'{"instruction": "a", "output": ' + b"7" * 5000 + b"}\n", 2,
     "a number of more than 4300 digits"),
    ("huge_int.json", b"[" + GOOD.strip() + b",\n\n" + b'{"instruction": "a", "output": ' + b"7" * 5000 + b"}]", 3,
     "a number of more than 4300 digits"),
    ("nan.jsonl", GOOD + b'{"instruction": NaN, "output": "b"}\n', 2,
     "field 'instruction' must be a string, got the number NaN"),
    ("infinity.jsonl", GOOD + GOOD + b'{"instruction": "a", "output": -Infinity}\n', 3,
     "field 'output' must be a string, got the number -Infinity"),
    ("nan_source.jsonl", GOOD + b'{"instruction": "a", "output": "b", "source": NaN}\n', 2,
     "field 'source' must be a string, got the number NaN"),
    ("non_utf8.jsonl", GOOD + b'{"instruction": "caf\xe9", "output": "b"}\n', 2, "not valid UTF-8 (byte 0xe9"),
    ("lone_surrogate.jsonl", GOOD + b'{"instruction": "\\ud800", "output": "b"}\n', 2,
     "holds \\ud800, a lone UTF-16 surrogate escape"),
    ("bom.jsonl", b"\xef\xbb\xbf" + GOOD, 1, "byte-order mark (BOM)"),
    ("array_line.jsonl", GOOD + b'["Add 2 and 3.", "5"]\n', 2, "expected a JSON object, got list"),
    ("null_field.jsonl", GOOD + b'{"instruction": null, "output": "b"}\n', 2, "missing field 'instruction': it is null"),
    ("number_field.jsonl", GOOD + b'{"instruction": "a", "output": 5}\n', 2, "field 'output' must be a string, got int"),
    ("list_field.jsonl", GOOD + b'{"instruction": ["a"], "output": "5"}\n', 2, "field 'instruction' must be a string, got list"),
    ("tool_role.jsonl", CHAT + chat_line("tool"), 2,
     "messages[1] has role 'tool', which the chat template does not know; the roles allowed are system, user, assistant"),
    ("function_role.jsonl", CHAT + CHAT + chat_line("function"), 3, "has role 'function'"),
    ("bot_role.jsonl", CHAT + chat_line("bot"), 2, "has role 'bot'"),
]


@pytest.mark.parametrize("name, content, line, message", PATHOLOGICAL, ids=[p[0] for p in PATHOLOGICAL])
def test_pathological_records_are_one_line_with_file_line_and_exit_2(name, content, line, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    refused(check_data(str(path)), f"{path}:{line}:", message)


def test_pathological_records_in_a_real_process_print_no_traceback(tmp_path):
    """The RecursionError and the int-digits ValueError happen at whatever stack depth the real command has."""
    for name, content, line, message in PATHOLOGICAL[:4]:
        path = tmp_path / name
        path.write_bytes(content)
        done = subprocess.run([sys.executable, "-m", "s2l.cli", "check-data", str(path)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "300"}, timeout=120)
        assert done.returncode == 2 and f"{path}:{line}:" in done.stderr and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr + done.stdout


def test_a_chat_template_that_refuses_a_conversation_names_the_record(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from s2l.data import tokenize_examples

    vocab = {"[UNK]": 0, "</s>": 1}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=inner, eos_token="</s>", unk_token="[UNK]")
    tokenizer.chat_template = (  # a template without a system role, as Gemma's and Mistral's are
        "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
        "{{ raise_exception('Conversation roles must be user or assistant') }}{% endif %}"
        "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    system = b'{"messages": [{"role": "system", "content": "Terse."}, {"role": "user", "content": "hi"}, ' \
             b'{"role": "assistant", "content": "x"}]}\n'
    path = tmp_path / "chat.jsonl"
    path.write_bytes(CHAT + system)
    pool = load_pool(path)
    with pytest.raises(InputError) as e:
        tokenize_examples(tokenizer, pool.examples, source=pool.path)
    assert e.value.path == str(path) and e.value.line == 2
    assert "refuses this conversation: Conversation roles must be user or assistant" in e.value.problem


# -- Hub dataset ids ------------------------------------------------------------------------------------------------
def test_a_local_path_always_wins_and_a_missing_file_is_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data_source("openai/gsm8k") == HubDataset("openai/gsm8k")
    (tmp_path / "openai").mkdir()
    write_jsonl(tmp_path / "openai" / "gsm8k", ALPACA)  # a file with that name: read as a file
    assert data_source("openai/gsm8k") == Path("openai/gsm8k")
    refused(check_data("openai/gsm8k"), "openai/gsm8k: ", "unsupported file type (none)")
    for missing in ("data/pool.jsonl", "data/pool.jsonl.gz", "./nowhere", "a/b/c"):
        assert isinstance(data_source(missing), Path)
    refused(check_data("data/pool.jsonl"), "data/pool.jsonl: ", "no such file or directory")
    write_jsonl(tmp_path / "pool.jsonl", ALPACA)
    refused(check_data("pool.jsonl", "--data-config", "main"), "--data-config: ",
            "a configuration applies to a Hub dataset id; pool.jsonl is a local path")


def hub_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_offline_a_hub_id_not_in_the_cache_fails_at_once(tmp_path, monkeypatch):
    import datasets.config

    hub_offline(monkeypatch)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    started = time.perf_counter()
    result = check_data("s2l-tests/no-such-dataset", "--split", "train")
    assert time.perf_counter() - started < 5
    refused(result, "s2l-tests/no-such-dataset: ", "taken as a Hub dataset id", "not in the local datasets cache",
            "offline mode is on", "to read a local file instead, give its path")


def test_offline_in_a_fresh_process_with_the_environment_set(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "empty-cache"), "COLUMNS": "300"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "s2l.cli", "check-data", "s2l-tests/no-such-dataset"],
                          capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.perf_counter() - started
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "taken as a Hub dataset id" in done.stderr and "offline mode is on" in done.stderr
    assert elapsed < 30, f"{elapsed:.1f} s: importing s2l and datasets, then no retries"


def test_without_a_network_a_hub_id_fails_at_once(tmp_path, monkeypatch):
    import datasets.config

    from s2l.data import readers

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(readers, "hub_reachable", lambda timeout=readers.HUB_PROBE_SECONDS: False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    started = time.perf_counter()
    result = check_data("s2l-tests/no-such-dataset")
    assert time.perf_counter() - started < 5
    refused(result, "s2l-tests/no-such-dataset: ", "not in the local datasets cache", "the Hub cannot be reached")


def hub_cache(root: Path, repo: str, splits: dict[str, list[dict]], config: str = "default",
              revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """A datasets cache holding `repo` as `load_dataset` leaves it after a download: one folder per
    configuration, named by the Hub commit, with the splits' Arrow files and dataset_info.json."""
    import datasets

    root.mkdir(parents=True, exist_ok=True)
    files = {split: str(write_jsonl(root / f"{split}.jsonl", rows)) for split, rows in splits.items()}
    datasets.load_dataset("json", data_files=files, cache_dir=str(root / "build"))
    built = next((root / "build").glob("json/*/0.0.0/*/dataset_info.json")).parent
    name = repo.split("/")[1]
    target = root / "cache" / repo.replace("/", "___") / config / "0.0.0" / revision
    target.mkdir(parents=True)
    shutil.copy(built / "dataset_info.json", target)
    for split in splits:
        shutil.copy(built / f"json-{split}.arrow", target / f"{name}-{split}.arrow")
    return root / "cache"


@pytest.fixture
def cached_hub(tmp_path, monkeypatch):
    import datasets.config

    rows = GSM8K[:3] + [{"question": "What is 0?", "answer": None}]
    cache = hub_cache(tmp_path / "hub", "s2l-tests/gsm8k", {"train": GSM8K, "test": rows})
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    hub_offline(monkeypatch)
    return "s2l-tests/gsm8k"


def test_a_hub_dataset_loads_from_the_cache_and_the_summary_names_its_version(cached_hub, tmp_path):
    fields = ["instruction=question", "output=answer"]
    pool = load_pool(cached_hub, fields=fields)
    assert pool.format == "alpaca" and len(pool.examples) == 5 and str(pool.path) == cached_hub
    assert pool.examples[0].response == GSM8K[0]["answer"] and pool.examples[0].line is None
    summary = pool.summary()
    assert summary["path"] == cached_hub and summary["split"] == "train"
    hub = summary["hub"]
    assert hub["id"] == cached_hub and hub["split"] == "train" and hub["config"] == "default" and hub["rows"] == 5
    assert hub["revision"] == "0123456789abcdef0123456789abcdef01234567" and hub["fingerprint"]
    assert len(summary["fingerprint"]) == 64 and load_pool(cached_hub, fields=fields).fingerprint == pool.fingerprint
    # the same rows in a local file: the same ids
    assert pool.ids == load_pool(write_jsonl(tmp_path / "local.jsonl", GSM8K), fields=fields).ids
    assert load_pool(cached_hub, split="test", fields=["instruction=question", "output=question"]).fingerprint \
        != pool.fingerprint


def test_hub_rows_are_named_by_dataset_split_and_row(cached_hub):
    result = check_data(cached_hub, "--split", "test", "--field", "instruction=question", "--field", "output=answer")
    refused(result, f"{cached_hub}: row 3 of split test: ", "missing field 'answer' (--field output=answer): it is null")
    refused(check_data(cached_hub, "--split", "validation"), "--split: ", 'Unknown split "validation"')
    refused(check_data(cached_hub, "--data-config", "socratic"), "--data-config: ", "config 'socratic'",
            "choose one with --data-config")
    refused(check_data(cached_hub), f"{cached_hub}: row 0 of split train: ", "cannot tell the format", "--field")
    ok = check_data(cached_hub, "--data-config", "default", "--field", "instruction=question", "--field", "output=answer")
    assert ok.exit_code == 0, ok.output


# -- the mapping and the Hub dataset travel with a run to select ---------------------------------------------------
def synthetic_run(root: Path, pool, fields: dict) -> Path:
    """A run directory written straight through the store, its manifest as record writes it."""
    from s2l.trajectories import TrajectoryStore

    store = TrajectoryStore(root)
    root.mkdir(parents=True)
    ids = pool.ids
    store.write_manifest({
        "kind": "score", "s2l_version": "test", "dataset": pool.summary(), "dataset_fingerprint": pool.fingerprint,
        "format": pool.format, "id_column": None, "fields": fields, "model": "synthetic", "max_length": 512,
        "shard_size": 4096, "n_examples": len(ids), "n_shards": 1,
        "excluded": {"duplicate": 0, "no_response_tokens": 0, "truncated_kept": 0}, "training": None,
        "snapshots": [{"step": k, "epoch": k, "epoch_end": True, "label": f"s{k}"} for k in range(3)]})
    n_tokens = np.full(len(ids), 20, dtype=np.int32)
    store.write_examples(pa.table({
        "example_id": pa.array(ids, pa.string()), "source": pa.array([None] * len(ids), pa.string()),
        "n_tokens": pa.array(n_tokens), "truncated": pa.array([False] * len(ids)),
        "excluded": pa.array([None] * len(ids), pa.string())}))
    losses = np.linspace(1, 3, len(ids))
    for k in range(3):
        store.write_cell(k, 0, ids, losses / (k + 1), n_tokens)
    return root


def select(*args: str):
    return runner.invoke(app, ["select", "--method", "perplexity-low", "--budget", "2", *args], env={"COLUMNS": "300"})


def test_select_reads_the_pool_with_the_runs_mapping(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K)
    fields = {"instruction": "question", "output": "answer"}
    run = synthetic_run(tmp_path / "run", load_pool(path, fields=fields), fields)
    result = select("--trajectories", str(run), "--out", str(tmp_path / "sel"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert manifest["data"]["fields"] == fields and manifest["data"]["format"] == "alpaca"
    assert (tmp_path / "sel" / "selected.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in GSM8K[:2])
    same = select("--trajectories", str(run), "--data", str(path), "--field", "instruction=question",
                  "--field", "output=answer", "--out", str(tmp_path / "same"))
    assert same.exit_code == 0, same.output
    other = select("--trajectories", str(run), "--data", str(path), "--field", "prompt=question", "--field",
                   "response=answer", "--out", str(tmp_path / "other"))
    refused(other, "--field: ", "read the pool with --field instruction=question --field output=answer")
    assert not (tmp_path / "other").exists()


def test_select_reloads_a_hub_dataset_with_the_runs_split_and_config(cached_hub, tmp_path):
    fields = {"instruction": "question", "output": "answer"}
    pool = load_pool(cached_hub, fields=fields, dataset_config="default")
    run = synthetic_run(tmp_path / "run", pool, fields)
    result = select("--trajectories", str(run), "--out", str(tmp_path / "sel"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "sel" / "manifest.json").read_text())
    assert manifest["data"]["path"] == cached_hub and manifest["data"]["hub"]["split"] == "train"
    assert manifest["data"]["fingerprint"] == pool.fingerprint


def test_a_run_resumes_only_with_the_mapping_it_was_recorded_with(tmp_path):
    from s2l.trajectories import TrajectoryStore

    store = TrajectoryStore(tmp_path / "run")
    manifest = {"kind": "record", "dataset_fingerprint": "f", "format": "alpaca", "fields": {"instruction": "question"}}
    store.open_or_create(manifest)
    with pytest.raises(InputError, match=r"different settings \(fields\.instruction\)"):  # the one field named
        store.open_or_create({**manifest, "fields": {}})
    store.open_or_create(dict(manifest))  # the same mapping resumes
    old = TrajectoryStore(tmp_path / "old")  # a store from before --field: no mapping
    old.open_or_create({"kind": "record", "dataset_fingerprint": "f", "format": "alpaca"})
    old.open_or_create({"kind": "record", "dataset_fingerprint": "f", "format": "alpaca", "fields": {}})


def test_parse_fields_keeps_target_order():
    assert list(parse_fields(["output=a", "instruction=q"])) == ["instruction", "output"]


def test_record_stores_the_mapping_and_select_reuses_it(tiny_model_dir, tmp_path):
    """The real path: record with --field, then select without it, and record refusing to resume without it."""
    rows = [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(12)]
    path = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    out = tmp_path / "run"
    mapping = ["--field", "instruction=question", "--field", "output=answer"]
    fast = ["--epochs", "1", "--snapshots", "2", "--batch-size", "4", "--lr", "1e-3", "--precision", "float32"]
    recorded = runner.invoke(app, ["record", "--data", str(path), "--proxy", str(tiny_model_dir), "--out", str(out),
                                   "--no-progress", *fast, *mapping])
    assert recorded.exit_code == 0, recorded.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fields"] == {"instruction": "question", "output": "answer"}
    assert manifest["dataset"]["fields"] == manifest["fields"]
    chosen = select("--trajectories", str(out), "--out", str(tmp_path / "sel"))
    assert chosen.exit_code == 0, chosen.output
    assert json.loads((tmp_path / "sel" / "manifest.json").read_text())["data"]["fields"] == manifest["fields"]
    again = runner.invoke(app, ["record", "--data", str(path), "--proxy", str(tiny_model_dir), "--out", str(out),
                                "--no-progress", *fast, "--field", "prompt=question", "--field", "response=answer"])
    refused(again, f"{out}: ", "different settings (", "fields")


def test_an_experiments_yaml_takes_the_mapping(tmp_path):
    from s2l.config import ExperimentConfig

    config = tmp_path / "exp.yaml"
    config.write_text("data: {pool: pool.jsonl, test: test.jsonl}\n"
                      "proxy: {model: m, data: {fields: {instruction: question, output: answer}}}\n"
                      "target: {model: m, data: {fields: [instruction=question, output=answer]}}\n"
                      "evaluate: {data: {fields: {prompt: question}}}\n"
                      "methods: [random]\nbudgets: [0.5]\n")
    loaded = ExperimentConfig.load(config)
    assert loaded.data_config("proxy").field_map == {"instruction": "question", "output": "answer"}
    assert loaded.train_config().data.field_map == loaded.data_config("proxy").field_map
    assert loaded.eval_config().data.field_map == {"prompt": "question"}
    config.write_text(config.read_text().replace("prompt: question", "question: prompt"))
    with pytest.raises(InputError) as e:
        ExperimentConfig.load(config).eval_config()
    assert e.value.parameter == "evaluate.data.fields" and "unknown target field 'question'" in e.value.problem
