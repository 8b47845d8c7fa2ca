"""Read SFT records from .jsonl, .json, .parquet, .csv files and saved `datasets` directories.

Each record keeps where it came from (line or row) for error messages, and its raw bytes: for
JSONL the line exactly as it was in the file, so a selection can be written back byte-for-byte;
for the other formats the record's canonical JSON.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2l.errors import InputError

SUPPORTED = ".jsonl, .json, .parquet, .csv, or a directory saved with datasets' save_to_disk"


@dataclass(frozen=True)
class Record:
    data: dict[str, Any]
    index: int  # position among the file's records, from 0
    line: int | None  # 1-based line in the file where one exists (jsonl, csv, json)
    raw: bytes  # the line as in the file (jsonl), else canonical JSON


def canonical_json(data: Any) -> str:
    """One text per record content, independent of key order and whitespace."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def record_error(path: str | Path, record: Record, problem: str) -> InputError:
    """An InputError pointing at a record: its line where the format has lines, else its number."""
    if record.line is not None:
        return InputError(problem, path, record.line)
    return InputError(f"record {record.index + 1}: {problem}", path)


def read_records(path: str | Path, split: str | None = None) -> list[Record]:
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path)
    if path.is_dir():
        records = _read_datasets_dir(path, split)
    else:
        suffix = path.suffix.lower()
        readers = {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json,
                   ".parquet": _read_parquet, ".csv": _read_csv}
        if suffix not in readers:
            raise InputError(f"unsupported file type {suffix or '(none)'}; expected {SUPPORTED}", path)
        records = readers[suffix](path)
    if not records:
        raise InputError("no records: the file is empty", path)
    return records


def _decode(path: Path, line_no: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})", path, line_no) from None


def _expect_object(path: Path, line_no: int | None, value: Any, index: int) -> dict:
    if not isinstance(value, dict):
        where = "" if line_no is not None else f"record {index + 1}: "
        raise InputError(f"{where}expected a JSON object, got {type(value).__name__}", path, line_no)
    return value


MAX_LINE_BYTES = 64 << 20  # one record; a longer line is refused without reading it whole


def _read_jsonl(path: Path) -> list[Record]:
    records: list[Record] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(f"line is longer than {MAX_LINE_BYTES >> 20} MiB; is this a JSON Lines file "
                                 "(one record per line)?", path, line_no)
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raise InputError("file starts with a UTF-8 byte-order mark (BOM); save it as plain UTF-8", path, 1)
            complete = raw.endswith(b"\n")
            raw = raw.rstrip(b"\r\n")
            text = _decode(path, line_no, raw)
            if not text.strip():
                continue  # blank lines (often a trailing one) carry no record
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                hint = "" if complete else "; the last line has no newline: was the file cut short?"
                raise InputError(f"not valid JSON: {e.msg} (column {e.colno}){hint}", path, line_no) from None
            data = _expect_object(path, line_no, value, len(records))
            records.append(Record(data, len(records), line_no, raw))
    return records


def _read_text(path: Path) -> str:
    """A whole file as UTF-8 text; a BOM or a bad byte is an error naming its line."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InputError("file starts with a UTF-8 byte-order mark (BOM); save it as plain UTF-8", path, 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = raw[: e.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x})", path, line_no) from None


def _read_json(path: Path) -> list[Record]:
    text = _read_text(path)
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; one object per line is the .jsonl format" if e.msg == "Extra data" else ""
        raise InputError(f"not valid JSON: {e.msg} (column {e.colno}){hint}", path, e.lineno) from None
    if isinstance(value, list):
        lines: list[int | None] = _array_item_lines(text)
    elif isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
        lines = [None] * len(value)
    else:
        raise InputError("expected a JSON array of objects (or an object with a 'data' array)", path)
    return [
        Record(_expect_object(path, lines[i], item, i), i, lines[i], canonical_json(item).encode("utf-8"))
        for i, item in enumerate(value)
    ]


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _array_item_lines(text: str) -> list[int]:
    """The 1-based line on which each item of the top-level JSON array in `text` (known to parse) starts."""
    decoder = json.JSONDecoder()
    pos = _JSON_SPACE.match(text).end() + 1  # past the "["
    lines: list[int] = []
    line, counted = 1, 0
    while True:
        pos = _JSON_SPACE.match(text, pos).end()
        if text[pos] == "]":
            return lines
        if text[pos] == ",":
            pos = _JSON_SPACE.match(text, pos + 1).end()
        line += text.count("\n", counted, pos)
        counted = pos
        lines.append(line)
        _, pos = decoder.raw_decode(text, pos)


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for damaged files
        raise InputError(f"cannot read as Parquet: {e}", path) from None
    return [Record(row, i, None, canonical_json(row).encode("utf-8")) for i, row in enumerate(rows)]


def _read_csv(path: Path) -> list[Record]:
    text = _read_text(path)
    # csv.reader rather than DictReader: DictReader skips blank lines out of sight, which would put every
    # later line number off. strict: an unterminated quote (a truncated file) is an error, not data.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[Record] = []
    line_no = 1
    try:
        header = next(reader, None)
        if header is None:  # the file has no lines
            return records
        line_no = reader.line_num + 1
        for row in reader:
            if row:  # blank lines carry no record
                if len(row) > len(header):
                    raise InputError(f"{len(row) - len(header)} more value(s) than header columns", path, line_no)
                data = {name: (row[i] if i < len(row) else None) for i, name in enumerate(header)}
                records.append(Record(data, len(records), line_no, canonical_json(data).encode("utf-8")))
            line_no = reader.line_num + 1
    except csv.Error as e:
        raise InputError(f"not valid CSV: {e}", path, line_no) from None
    return records


def _read_datasets_dir(path: Path, split: str | None) -> list[Record]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"not a directory saved with datasets' save_to_disk ({e}); expected {SUPPORTED}", path) from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if chosen not in loaded:
            raise InputError(f"the saved DatasetDict has splits {names}; choose one with --split", path)
        loaded = loaded[chosen]
    return [Record(row, i, None, canonical_json(row).encode("utf-8")) for i, row in enumerate(loaded)]
