"""A pool: the user's SFT records, checked, normalised and given stable ids.

`example_id` is the user's id column when one is named, else a hash of the record's canonical JSON,
so the same record keeps its id across files, orderings and runs. Identical records are reported
and kept once; two different records under one user id are an error. A record with an empty prompt or
response stays in the pool, excluded (`Example.excluded`: listed with its reason, never trained on, scored or
selected), unless `strict` refuses it; a pool where every example is excluded is an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from s2l.config import parse_fields
from s2l.data.formats import Example, PromptTemplate, describe_value, resolve_format, to_example
from s2l.data.readers import HubDataset, Record, canonical_json, read_input, record_error, records_fingerprint
from s2l.errors import InputError
from s2l.fileio import fingerprint_path


def content_id(record: Record) -> str:
    """A hash of the record as read (before --field added its targets), so a mapping does not change ids."""
    data = record.original if record.original is not None else record.data
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()[:16]


def map_fields(path: Path | HubDataset, records: list[Record], fields: dict[str, str]) -> list[Record]:
    """Each record with the `--field` targets added beside its own fields (target = the value of the user's
    field); a record without a mapped field is an error naming it."""
    if not fields:
        return records
    mapped = []
    for record in records:
        missing = [source for source in fields.values() if source not in record.data]
        if missing:
            target = next(t for t, s in fields.items() if s == missing[0])
            keys = ", ".join(sorted(record.data)) or "(none)"
            raise record_error(path, record, f"no field {missing[0]!r} to read as {target} (--field "
                                             f"{target}={missing[0]}); the record's fields are {keys}")
        data = {**record.data, **{target: record.data[source] for target, source in fields.items()}}
        mapped.append(dataclasses.replace(record, data=data, original=record.data, renamed=dict(fields)))
    return mapped


@dataclass
class Duplicate:
    index: int  # the later record, left out
    line: int | None
    first_index: int  # the record it repeats, kept
    first_line: int | None


@dataclass
class Pool:
    path: Path | HubDataset  # a local file or folder, or a Hub dataset (str() gives its id)
    format: str
    template: PromptTemplate
    records: list[Record]  # every record of the input, in order (with --field, its targets added)
    examples: list[Example]  # one per distinct example, in input order
    duplicates: list[Duplicate] = field(default_factory=list)
    fingerprint: str = ""  # sha256 of the file (or folder); of the records' content for a Hub dataset
    fields: dict[str, str] = field(default_factory=dict)  # the --field mapping it was read with
    split: str | None = None  # the split read (a saved DatasetDict, a Hub dataset)
    hub: dict | None = None  # a Hub dataset's id, config, split, fingerprint and revision

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
        """What the pool is, as manifests record it; `fields`, `split` and `hub` only where they apply."""
        summary = {
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
        if self.fields:
            summary["fields"] = dict(self.fields)
        if self.split is not None:
            summary["split"] = self.split
        if self.hub is not None:
            summary["hub"] = dict(self.hub)
        return summary


def load_pool(
    path: str | Path | HubDataset,
    format: str = "auto",
    template: str | PromptTemplate | None = None,
    id_column: str | None = None,
    split: str | None = None,
    strict: bool = False,
    fields: dict[str, str] | list[str] | tuple[str, ...] | None = None,
    dataset_config: str | None = None,
) -> Pool:
    """Read, check and normalise a pool: a local file or folder, or a Hub dataset id (`org/name`, when no such
    path exists; `split` and `dataset_config` choose what of it). `fields` maps the formats' field names to the
    record's own (`{"instruction": "question"}`, or `["instruction=question"]` as --field gives it)."""
    fields = parse_fields(fields)
    template = template if isinstance(template, PromptTemplate) else PromptTemplate.from_option(template)
    loaded = read_input(path, split=split, dataset_config=dataset_config)
    path = loaded.source
    if "id" in fields:  # --field id=X reads the ids from X, as --id-column X does
        if id_column not in (None, fields["id"]):
            raise InputError(f"--field id={fields['id']} and --id-column {id_column} name different id columns",
                             parameter="fields")
        id_column = fields["id"]
    records = map_fields(path, loaded.records, fields)
    fmt = resolve_format(path, records, format)

    examples: list[Example] = []
    duplicates: list[Duplicate] = []
    first_seen: dict[str, Record] = {}
    for record in records:
        try:
            example_id = content_id(record) if id_column is None else _example_id(path, record, id_column)
            original = record.original if record.original is not None else record.data
            earlier = first_seen.get(example_id)
            if earlier is not None:
                earlier_original = earlier.original if earlier.original is not None else earlier.data
                if id_column is not None and canonical_json(earlier_original) != canonical_json(original):
                    where = f"line {earlier.line}" if earlier.line is not None else f"record {earlier.index + 1}"
                    raise record_error(path, record, f"duplicate id {example_id!r} (first at {where}) for a different record")
                duplicates.append(Duplicate(record.index, record.line, earlier.index, earlier.line))
                continue
            first_seen[example_id] = record
            examples.append(to_example(path, record, fmt, example_id, template, strict))
        except RecursionError:  # a record nested just shallowly enough to read, too deep to hash or check
            raise record_error(path, record, "nested too deeply to read (arrays or objects inside each other more "
                                             f"than about {sys.getrecursionlimit()} levels)") from None
    if all(e.excluded for e in examples):
        counts = ", ".join(f"{n} {reason}" for reason, n in Counter(e.excluded for e in examples).most_common())
        raise InputError(f"no usable example: all {len(examples)} example(s) are excluded ({counts}), so nothing is "
                         "left to learn from", path)
    fingerprint = records_fingerprint(loaded.records) if loaded.hub else fingerprint_path(path)
    return Pool(path, fmt, template, records, examples, duplicates, fingerprint, fields, loaded.split, loaded.hub)


def _example_id(path: Path | HubDataset, record: Record, id_column: str) -> str:
    value = record.data.get(id_column)
    name = repr(id_column) if record.renamed is None or "id" not in record.renamed else record.field_name("id")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise record_error(path, record, f"missing id in column {name}")
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise record_error(path, record, f"id column {name} must hold strings or integers, got "
                                         f"{describe_value(value)}")
    return str(value)
