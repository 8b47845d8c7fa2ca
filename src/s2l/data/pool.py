"""A pool: the user's SFT records, checked, normalised and given stable ids.

`example_id` is the user's id column when one is named, else a hash of the record's canonical JSON,
so the same record keeps its id across files, orderings and runs. Identical records are reported
and kept once; two different records under one user id are an error. A record with an empty prompt or
response stays in the pool, excluded (`Example.excluded`: listed with its reason, never trained on, scored or
selected), unless `strict` refuses it; a pool where every example is excluded is an error.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from s2l.data.formats import Example, PromptTemplate, resolve_format, to_example
from s2l.data.readers import Record, canonical_json, read_records, record_error
from s2l.errors import InputError
from s2l.fileio import fingerprint_path


def content_id(record: Record) -> str:
    return hashlib.sha256(canonical_json(record.data).encode("utf-8")).hexdigest()[:16]


@dataclass
class Duplicate:
    index: int  # the later record, left out
    line: int | None
    first_index: int  # the record it repeats, kept
    first_line: int | None


@dataclass
class Pool:
    path: Path
    format: str
    template: PromptTemplate
    records: list[Record]  # every record of the input, in order
    examples: list[Example]  # one per distinct example, in input order
    duplicates: list[Duplicate] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def ids(self) -> list[str]:
        return [e.example_id for e in self.examples]

    @property
    def has_sources(self) -> bool:
        return any(e.source is not None for e in self.examples)

    def source_counts(self) -> dict[str, int]:
        return dict(Counter(e.source or "(none)" for e in self.examples).most_common())

    def exclusion_counts(self) -> dict[str, int]:
        """Examples excluded for what their record holds (empty prompt or response), by reason."""
        return dict(sorted(Counter(e.excluded for e in self.examples if e.excluded).items()))

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "format": self.format,
            "template": self.template.name,
            "records": len(self.records),
            "examples": len(self.examples),
            "duplicates_left_out": len(self.duplicates),
            "excluded": self.exclusion_counts(),
            "sources": self.source_counts() if self.has_sources else None,
        }


def load_pool(
    path: str | Path,
    format: str = "auto",
    template: str | PromptTemplate | None = None,
    id_column: str | None = None,
    split: str | None = None,
    strict: bool = False,
) -> Pool:
    path = Path(path)
    template = template if isinstance(template, PromptTemplate) else PromptTemplate.from_option(template)
    records = read_records(path, split=split)
    fmt = resolve_format(path, records, format)

    examples: list[Example] = []
    duplicates: list[Duplicate] = []
    first_seen: dict[str, Record] = {}
    for record in records:
        if id_column is not None:
            value = record.data.get(id_column)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise record_error(path, record, f"missing id in column {id_column!r}")
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise record_error(path, record, f"id column {id_column!r} must hold strings or integers, got {type(value).__name__}")
            example_id = str(value)
        else:
            example_id = content_id(record)
        earlier = first_seen.get(example_id)
        if earlier is not None:
            if id_column is not None and canonical_json(earlier.data) != canonical_json(record.data):
                where = f"line {earlier.line}" if earlier.line is not None else f"record {earlier.index + 1}"
                raise record_error(path, record, f"duplicate id {example_id!r} (first at {where}) for a different record")
            duplicates.append(Duplicate(record.index, record.line, earlier.index, earlier.line))
            continue
        first_seen[example_id] = record
        examples.append(to_example(path, record, fmt, example_id, template, strict))
    if all(e.excluded for e in examples):
        counts = ", ".join(f"{n} {reason}" for reason, n in Counter(e.excluded for e in examples).most_common())
        raise InputError(f"no usable example: all {len(examples)} example(s) are excluded ({counts}), so nothing is "
                         "left to learn from", path)
    return Pool(path, fmt, template, records, examples, duplicates, fingerprint_path(path))
