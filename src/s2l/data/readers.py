"""Read SFT records from .jsonl, .json, .parquet, .csv files (the text ones also compressed), saved
`datasets` directories and Hub datasets.

Each record keeps where it came from (line or row) for error messages, and its raw bytes: for
JSONL the line exactly as it was in the file (decompressed), so a selection can be written back
byte-for-byte; for the other formats the record's canonical JSON.

A `--data` value that names no file or folder here but looks like `org/name` is a Hub dataset id, read with
`datasets.load_dataset`: a local path always wins. Offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, or the Hub
unreachable) only the local datasets cache is asked, so a missing dataset fails at once rather than after
`huggingface_hub`'s retries.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from s2l.errors import InputError

SUPPORTED_FILES = (".jsonl, .json, .parquet, .csv (the text ones also compressed: .jsonl.gz, .json.gz, .csv.gz, .bz2, "
                   ".xz; .zst with the zstandard package), or a directory saved with datasets' save_to_disk")
SUPPORTED = SUPPORTED_FILES + ", or a Hub dataset id (org/name)"
TEXT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstandard"}
# A name ending so is a file that is missing, never a Hub id.
_FILE_SUFFIXES = (*TEXT_SUFFIXES, ".parquet", ".arrow", ".txt", *COMPRESSIONS)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Record:
    data: dict[str, Any]  # the record's fields (with --field, the targets added beside the user's own)
    index: int  # position among the file's records, from 0
    line: int | None  # 1-based line in the file where one exists (jsonl, csv, json)
    raw: bytes  # the line as in the file (jsonl), else canonical JSON
    original: dict[str, Any] | None = field(default=None, compare=False)  # as read, when --field added targets
    renamed: dict[str, str] | None = field(default=None, compare=False)  # target → the user's field, with --field

    def field_name(self, name: str) -> str:
        """How an error names a field: `'output'`, or with --field `'answer' (--field output=answer)`."""
        source = (self.renamed or {}).get(name)
        return repr(name) if source is None else f"{source!r} (--field {name}={source})"


@dataclass(frozen=True)
class HubDataset:
    """A Hub dataset id given where a path is taken (`org/name`), with the split and configuration to read."""

    id: str
    split: str | None = None
    config: str | None = None

    def __str__(self) -> str:
        return self.id


def is_hub_id(text: str) -> bool:
    """`org/name` that is not the name of a data file (a missing `data/pool.jsonl` stays a missing file)."""
    return bool(_HUB_ID.fullmatch(text)) and not text.lower().endswith(_FILE_SUFFIXES)


def data_source(data: str | Path | HubDataset, split: str | None = None,
                dataset_config: str | None = None) -> Path | HubDataset:
    """What `--data` names: a local file or folder (always, when one exists), else a Hub dataset id."""
    if isinstance(data, HubDataset):
        return data
    text = str(data)
    path = Path(data)
    if path.exists() or not is_hub_id(text):
        if dataset_config is not None:
            raise InputError(f"a configuration applies to a Hub dataset id; {text} is a local path",
                             parameter="dataset_config")
        return path
    return HubDataset(text, split, dataset_config)


def canonical_json(data: Any) -> str:
    """One text per record content, independent of key order and whitespace."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def record_error(path: str | Path | HubDataset, record: Record, problem: str) -> InputError:
    """An InputError pointing at a record: its line where the format has lines, a Hub dataset's row (from 0, as
    `dataset[i]` reads it), else its number."""
    if record.line is not None:
        return InputError(problem, path, record.line)
    if isinstance(path, HubDataset):
        split = f" of split {path.split}" if path.split else ""
        return InputError(f"row {record.index}{split}: {problem}", path)
    return InputError(f"record {record.index + 1}: {problem}", path)


@dataclass
class Input:
    """What was read: the records, where from (a Hub dataset with the split actually read), and what identifies
    a Hub dataset's version."""

    records: list[Record]
    source: Path | HubDataset
    split: str | None = None  # the split read from a DatasetDict or a Hub dataset
    hub: dict[str, Any] | None = None  # id, config, split, fingerprint, revision


def read_records(path: str | Path | HubDataset, split: str | None = None,
                 dataset_config: str | None = None) -> list[Record]:
    return read_input(path, split, dataset_config).records


def read_input(data: str | Path | HubDataset, split: str | None = None,
               dataset_config: str | None = None) -> Input:
    source = data_source(data, split, dataset_config)
    if isinstance(source, HubDataset):
        loaded = _read_hub(source)
    else:
        loaded = _read_local(source, split)
    if not loaded.records:
        raise InputError("no records: the dataset is empty" if loaded.hub else "no records: the file is empty",
                         loaded.source)
    return loaded


def _read_local(path: Path, split: str | None) -> Input:
    if not path.exists():
        raise InputError("no such file or directory", path)
    if path.is_dir():
        records, split = _read_datasets_dir(path, split)
        return Input(records, path, split)
    kind, compression = _file_kind(path)
    if kind == "parquet":
        return Input(_read_parquet(path), path)
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv}
    return Input(readers[kind](path, compression), path)


def _file_kind(path: Path) -> tuple[str, str | None]:
    """(jsonl | json | csv | parquet, the compression or None) from the file's name."""
    suffixes = [s.lower() for s in path.suffixes]
    last = suffixes[-1] if suffixes else ""
    if last == ".parquet":
        return "parquet", None
    if last in TEXT_SUFFIXES:
        return TEXT_SUFFIXES[last], None
    if last in COMPRESSIONS and len(suffixes) >= 2 and suffixes[-2] in TEXT_SUFFIXES:
        return TEXT_SUFFIXES[suffixes[-2]], COMPRESSIONS[last]
    if last in COMPRESSIONS:
        inner = f" of a {suffixes[-2]} file" if len(suffixes) >= 2 else ""
        raise InputError(f"{COMPRESSIONS[last]}-compressed{inner}: s2l reads compressed .jsonl, .json and .csv files, "
                         f"named for what they hold (pool.jsonl{last}, pool.json{last}, pool.csv{last})", path)
    raise InputError(f"unsupported file type {last or '(none)'}; expected {SUPPORTED}", path)


# -- compressed files ---------------------------------------------------------------------------------------------
def _decompress_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError)
    zstandard = sys.modules.get("zstandard")
    if zstandard is not None and hasattr(zstandard, "ZstdError"):
        errors += (zstandard.ZstdError,)
    return errors


def _open_binary(path: Path, compression: str | None):
    if compression is None:
        return open(path, "rb")
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bzip2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    try:  # zstandard is not a dependency: read .zst only where a zstd reader is installed
        import zstandard
    except ImportError:
        try:
            from compression import zstd  # Python 3.14
        except ImportError:
            raise InputError("a zstandard-compressed file, which needs the zstandard package: pip install "
                             f"zstandard, or decompress it first (zstd -d {path}) and pass the {path.stem} it gives",
                             path) from None
        return zstd.open(path, "rb")
    return zstandard.open(path, "rb")


def _decompress_problem(compression: str, e: BaseException) -> str:
    if isinstance(e, EOFError):
        return f"the {compression} stream ends early: was the file cut short?"
    return f"cannot decompress as {compression} ({e})"


# -- JSON --------------------------------------------------------------------------------------------------------
def _json_problem(e: Exception) -> str | None:
    """What is wrong with JSON text that `json` refused with `e` (None: not a problem of the text)."""
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON: {e.msg} (column {e.colno})"
    if isinstance(e, RecursionError):
        return (f"nested too deeply to read (arrays or objects inside each other more than about "
                f"{sys.getrecursionlimit()} levels)")
    if isinstance(e, ValueError) and "integer string conversion" in str(e):
        return (f"a number of more than {sys.get_int_max_str_digits()} digits, too long to read as a number "
                "(quote it to keep it as text)")
    return None


def _loads(text: str, path: Path, line_no: int | None, hint: str = "") -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        problem = _json_problem(e)
        if problem is None:
            raise
        raise InputError(problem + (hint if isinstance(e, json.JSONDecodeError) else ""), path, line_no) from None


def raw_json(path: str | Path, line_no: int | None, data: Any) -> bytes:
    """A record's canonical JSON as bytes; a text that is not Unicode (a lone surrogate escape such as "\\ud800")
    or too deeply nested to write is an error naming the record."""
    try:
        return canonical_json(data).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start:e.end].encode("unicode_escape").decode("ascii")
        raise InputError(f"holds {bad}, a lone UTF-16 surrogate escape, which is not text", path, line_no) from None
    except RecursionError:
        raise InputError(f"nested too deeply (more than about {sys.getrecursionlimit()} levels)", path,
                         line_no) from None


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


def _lines(path: Path, compression: str | None) -> Iterator[tuple[int, bytes]]:
    """(line number, line with its newline) of a file, decompressed; a line longer than MAX_LINE_BYTES comes
    back cut at MAX_LINE_BYTES + 1 bytes."""
    errors = _decompress_errors()
    with _open_binary(path, compression) as f:
        line_no = 0
        while True:
            line_no += 1
            try:
                raw = f.readline(MAX_LINE_BYTES + 1)
            except errors as e:
                if compression is None:
                    raise
                raise InputError(_decompress_problem(compression, e), path, line_no) from None
            if not raw:
                return
            yield line_no, raw


def _read_jsonl(path: Path, compression: str | None = None) -> list[Record]:
    records: list[Record] = []
    for line_no, raw in _lines(path, compression):
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
        hint = "" if complete else "; the last line has no newline: was the file cut short?"
        value = _loads(text, path, line_no, hint)
        data = _expect_object(path, line_no, value, len(records))
        if b"\\ud" in raw or b"\\uD" in raw:  # an escaped surrogate: a pair is text, a lone one is not
            raw_json(path, line_no, data)
        records.append(Record(data, len(records), line_no, raw))
    return records


def _read_text(path: Path, compression: str | None = None) -> str:
    """A whole file (decompressed) as UTF-8 text; a BOM or a bad byte is an error naming its line."""
    if compression is None:
        raw = path.read_bytes()
    else:
        with _open_binary(path, compression) as f:
            try:
                raw = f.read()
            except _decompress_errors() as e:
                raise InputError(_decompress_problem(compression, e), path) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InputError("file starts with a UTF-8 byte-order mark (BOM); save it as plain UTF-8", path, 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = raw[: e.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x})", path, line_no) from None


def _read_json(path: Path, compression: str | None = None) -> list[Record]:
    text = _read_text(path, compression)
    if not text.strip():
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; one object per line is the .jsonl format" if e.msg == "Extra data" else ""
        raise InputError(f"not valid JSON: {e.msg} (column {e.colno}){hint}", path, e.lineno) from None
    except (ValueError, RecursionError) as e:
        problem = _json_problem(e)
        if problem is None:
            raise
        raise InputError(problem, path, _failing_item_line(text)) from None
    if isinstance(value, list):
        lines: list[int | None] = _array_item_lines(text)
    elif isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
        lines = [None] * len(value)
    else:
        raise InputError("expected a JSON array of objects (or an object with a 'data' array)", path)
    return [Record(_expect_object(path, lines[i], item, i), i, lines[i], raw_json(path, lines[i], item))
            for i, item in enumerate(value)]


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


def _failing_item_line(text: str) -> int | None:
    """The line of the first item of a top-level JSON array that cannot be read (too deep, a number too long)."""
    start = _JSON_SPACE.match(text).end()
    if not text.startswith("[", start):
        return None
    decoder = json.JSONDecoder()
    pos = start + 1
    while True:
        pos = _JSON_SPACE.match(text, pos).end()
        if pos >= len(text) or text[pos] == "]":
            return None
        if text[pos] == ",":
            pos = _JSON_SPACE.match(text, pos + 1).end()
        try:
            _, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return text.count("\n", 0, pos) + 1


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for damaged files
        raise InputError(f"cannot read as Parquet: {e}", path) from None
    return [Record(row, i, None, canonical_json(row).encode("utf-8")) for i, row in enumerate(rows)]


def _read_csv(path: Path, compression: str | None = None) -> list[Record]:
    text = _read_text(path, compression)
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


def _choose_split(loaded, split: str | None, path: Path | HubDataset, what: str):
    """(the Dataset, its split name) out of a DatasetDict: `split`, else train, else the only one."""
    names = list(loaded.keys())
    chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
    if chosen not in loaded:
        given = f"no split {split!r}: " if split else ""
        raise InputError(f"{given}{what} has splits {names}; choose one with --split", path)
    return loaded[chosen], chosen


def _rows(path: Path | HubDataset, dataset) -> list[Record]:
    return [Record(row, i, None, raw_json(path, None, row)) for i, row in enumerate(dataset)]


def _read_datasets_dir(path: Path, split: str | None) -> tuple[list[Record], str | None]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"not a directory saved with datasets' save_to_disk ({e}); expected {SUPPORTED}", path) from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded, split = _choose_split(loaded, split, path, "the saved DatasetDict")
    return _rows(path, loaded), split


# -- Hub datasets ----------------------------------------------------------------------------------------------------
HUB_PROBE_SECONDS = 3.0  # how long to wait for the Hub to answer before reading the local cache only


def _offline_env() -> bool:
    true = {"1", "ON", "YES", "TRUE"}
    return any(os.environ.get(name, "").upper() in true
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hub answers at all (any HTTP status counts), through the proxies huggingface_hub uses."""
    try:
        from huggingface_hub import constants, get_session

        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # no route, no name resolution, a timeout: read the cache only
        return False
    return True


@contextlib.contextmanager
def _offline_mode(on: bool):
    """huggingface_hub's and datasets' offline mode, for this load only (both read their flag at import)."""
    if not on:
        yield
        return
    import datasets.config
    from huggingface_hub import constants

    flags = [(module, name) for module in (constants, datasets.config)
             for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if hasattr(module, name)]
    saved = [getattr(module, name) for module, name in flags]
    for module, name in flags:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(flags, saved):
            setattr(module, name, value)


def _read_hub(source: HubDataset) -> Input:
    import datasets

    offline_env = _offline_env()
    offline = offline_env or not hub_reachable()
    why = ("offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)" if offline_env
           else "the Hub cannot be reached (no network?)")
    taken = f"taken as a Hub dataset id, since no file or folder {source.id!r} exists here"
    local = ("to read a local file instead, give its path (a .jsonl, .json, .csv or .parquet file, or a saved "
             "datasets folder)")
    try:
        with _offline_mode(offline):
            loaded = datasets.load_dataset(source.id, name=source.config, split=source.split)
    except Exception as e:  # datasets raises many types; each becomes one line naming what to do
        text = " ".join(str(e).split())
        if isinstance(e, ValueError) and ("BuilderConfig" in text or "Config name is missing" in text
                                          or "for config" in text):
            raise InputError(f"{source.id}: {text.strip()} (choose one with --data-config)",
                             parameter="dataset_config") from None
        if isinstance(e, ValueError) and ("Unknown split" in text or "Bad split" in text):
            raise InputError(f"{source.id}: {text.strip()}", parameter="split") from None
        if offline and isinstance(e, (ConnectionError, FileNotFoundError)):
            raise InputError(f"{taken}, but it is not in the local datasets cache and {why}; {local}, or run once "
                             "with a network to cache it", source) from None
        if isinstance(e, FileNotFoundError):  # DatasetNotFoundError among them
            raise InputError(f"{taken}, but the Hub has no such dataset (or it is private or gated: log in with "
                             f"`hf auth login` and accept its terms); {local}", source) from None
        if isinstance(e, ConnectionError):
            raise InputError(f"{taken}, but the Hub cannot be reached ({text.strip()}); {local}", source) from None
        raise InputError(f"{taken}, but it cannot be loaded: {type(e).__name__}: {text.strip()}", source) from None
    split = source.split
    if isinstance(loaded, datasets.DatasetDict):
        loaded, split = _choose_split(loaded, source.split, source, "the dataset")
    if not isinstance(loaded, datasets.Dataset):
        raise InputError(f"loaded a {type(loaded).__name__}, not a dataset of rows", source)
    resolved = HubDataset(source.id, split, source.config or loaded.info.config_name)
    hub = {"id": source.id, "config": resolved.config, "split": split, "fingerprint": loaded._fingerprint,
           "revision": _revision(loaded), "rows": loaded.num_rows}
    return Input(_rows(resolved, loaded), resolved, split, hub)


def _revision(dataset) -> str | None:
    """The Hub commit the cached copy was built from: the last folder of its cache path, named by that commit."""
    for cache_file in dataset.cache_files:
        name = Path(cache_file.get("filename", "")).parent.name
        if re.fullmatch(r"[0-9a-f]{40}", name):
            return name
    return None


def records_fingerprint(records: list[Record]) -> str:
    """sha256 of the records' content in order (a Hub dataset has no one file to hash)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(hashlib.sha256(record.raw).digest())
    return digest.hexdigest()
