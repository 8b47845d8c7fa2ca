"""`s2l select` as a function: trajectories + pool in, a selection directory out.

    OUT/selected.jsonl     the chosen input records byte-for-byte (jsonl input) in input order
    OUT/selected_ids.txt   their ids, one per line
    OUT/scores.parquet     every example: id, source, score, cluster, selected, why excluded
    OUT/manifest.json      method, parameters, seed, budget asked and delivered, fingerprints, counts

Everything is checked before anything is written, and the directory is built under a temporary name
and renamed into place, so a failed or killed selection leaves no partial output.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2l import __version__
from s2l.config import parse_fields
from s2l.data.pool import Pool, load_pool
from s2l.errors import InputError
from s2l.fileio import as_path, building_directory, remove_leftovers, sha256_file, write_bytes_atomic, write_json_atomic
from s2l.selection.base import Selector, make_selector, parse_budget
from s2l.trajectories.matrix import Trajectories
from s2l.trajectories.store import TrajectoryStore

NO_TRAJECTORY = "no_trajectory"
DUPLICATE = "duplicate"


@dataclass
class SelectionResult:
    out: Path
    selector: Selector
    ids: np.ndarray  # selected ids, input order
    pool: Pool
    manifest: dict[str, Any]
    seconds: float

    def source_mix(self) -> list[tuple[str, int, int]]:
        """(source, examples in the pool, examples selected), largest source first."""
        selected = set(self.ids.tolist())
        pool = Counter(e.source or "(none)" for e in self.pool.examples)
        chosen = Counter(e.source or "(none)" for e in self.pool.examples if e.example_id in selected)
        return [(name, n, chosen.get(name, 0)) for name, n in pool.most_common()]


@dataclass
class LoadedTrajectories:
    trajectories: Trajectories
    kind: str  # "run" or "table"
    path: Path
    fingerprint: str
    manifest: dict | None  # the run's, for a run directory


def load_trajectories(path: str | Path, snapshot_epochs: list[float] | None = None) -> LoadedTrajectories:
    """A run directory from `s2l record`/`s2l score` (a local folder or an fsspec URL), or a parquet/csv
    table of losses."""
    path = as_path(path)
    if path.is_dir() or (not isinstance(path, Path) and (path / "manifest.json").is_file()):
        store = TrajectoryStore(path)
        manifest = store.manifest
        if snapshot_epochs is not None:
            raise InputError(f"snapshot epochs are for a table of losses; the run directory {path} knows its "
                             "snapshots' epochs", parameter="snapshot_epochs")
        return LoadedTrajectories(store.load(), "run", path, store.fingerprint(), manifest)
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise InputError("expected a run directory, or a .parquet or .csv table of losses", path)
    return LoadedTrajectories(Trajectories.from_table(path, snapshot_epochs), "table", path, sha256_file(path), None)


def prepare_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise InputError("the output directory exists and is not empty; choose another, or replace a previous "
                             "selection with force", out)
        if _manifest_kind(out / "manifest.json") != "selection":
            raise InputError("force replaces only a previous selection directory, and this is not one", out)
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise InputError("cannot write here (permission denied)", parent)


def _manifest_kind(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def align(loaded: LoadedTrajectories, pool: Pool) -> tuple[Trajectories, np.ndarray]:
    """The trajectories in pool order, and for each of them its example's position in the pool.

    Every trajectory id must be in the pool; pool examples without a trajectory are left out (counted)."""
    t = loaded.trajectories
    position = {e.example_id: i for i, e in enumerate(pool.examples)}
    missing = [k for k, example_id in enumerate(t.ids) if example_id not in position]
    if missing:
        first = missing[0]
        line = first + 2 if loaded.kind == "table" and loaded.path.suffix.lower() == ".csv" else None
        raise InputError(f"{len(missing)} trajectory ids are not in the pool {pool.path} (first: {t.ids[first]!r}); "
                         "is it the pool these losses were computed on, read with the same id_column?",
                         loaded.path, line)
    pool_rows = np.fromiter((position[i] for i in t.ids), dtype=np.int64, count=len(t.ids))
    order = np.argsort(pool_rows, kind="stable")
    sources = t.sources
    if sources is None and pool.has_sources:
        sources = np.asarray([pool.examples[r].source for r in pool_rows], dtype=object)
    aligned = dataclasses.replace(t, sources=None if sources is None else np.asarray(sources, dtype=object)).take(order)
    return aligned, pool_rows[order]


def run_selection(
    trajectories: str | Path,
    data: str | Path | None,
    method: str,
    budget: str | int | float,
    out: str | Path,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    format: str | None = None,
    id_column: str | None = None,
    split: str | None = None,
    snapshot_epochs: list[float] | None = None,
    force: bool = False,
    fields: dict[str, str] | list[str] | None = None,
    dataset_config: str | None = None,
) -> SelectionResult:
    started = time.perf_counter()
    out = Path(out)
    selector = make_selector(method, seed=seed, **(params or {}))  # unknown method or option: fail first
    parse_budget(budget)
    prepare_out(out, force)

    given_fields = None if fields is None else parse_fields(fields)
    loaded = load_trajectories(trajectories, snapshot_epochs)
    run = loaded.manifest or {}
    recorded = run.get("dataset") or {}
    hub = recorded.get("hub") or {}
    if data is None:
        data = hub.get("id") or recorded.get("path")
        if data is None or not (hub or Path(data).exists()):
            raise InputError("needed: the pool file the trajectories' ids refer to", parameter="data")
        # the pool as the run read it: the same split and configuration
        split = split if split is not None else recorded.get("split")
        dataset_config = dataset_config if dataset_config is not None else hub.get("config")
    if id_column is None:
        id_column = run.get("id_column")
    if loaded.kind == "run" and given_fields is not None and given_fields != run.get("fields", {}):
        raise InputError(f"the run {loaded.path} read the pool with {_fields_text(run.get('fields', {}))}; select "
                         "reads it the same way: leave --field out, or give the run's", parameter="fields")
    fields = given_fields if given_fields is not None else run.get("fields") or {}
    pool = load_pool(data, format=format or run.get("format") or "auto", template="none", id_column=id_column,
                     split=split, fields=fields, dataset_config=dataset_config)
    if loaded.kind == "run" and run.get("dataset_fingerprint") not in (None, pool.fingerprint):
        raise InputError(f"this is not the pool the run {loaded.path} recorded (its fingerprint differs); "
                         "pass the same file", data)

    t, pool_rows = align(loaded, pool)
    t, reasons = _without_empty_examples(t, pool, pool_rows)
    selector.fit(t, **_fit_inputs(selector, t, pool, pool_rows))
    excluded = reasons != ""
    selector.excluded_[excluded] = reasons[excluded]  # counted under their own reason, not as no_response_tokens
    ids = selector.select(budget)
    manifest = _manifest(selector, budget, loaded, pool, t, pool_rows)
    _write(out, force, selector, pool, pool_rows, manifest)
    return SelectionResult(out, selector, ids, pool, manifest, time.perf_counter() - started)


def _fields_text(fields: dict[str, str]) -> str:
    return " ".join(f"--field {t}={s}" for t, s in fields.items()) if fields else "no --field"


def _without_empty_examples(t: Trajectories, pool: Pool, pool_rows: np.ndarray) -> tuple[Trajectories, np.ndarray]:
    """The trajectories with no loss for the examples the pool excludes (an empty prompt or response), so that no
    method can select them even where a table gives them losses; and each row's reason ("" for none)."""
    reasons = np.asarray([pool.examples[r].excluded or "" for r in pool_rows], dtype=object)
    excluded = reasons != ""
    if excluded.any():
        losses = t.losses.copy()
        losses[excluded] = np.nan
        t = Trajectories(ids=t.ids, losses=losses, n_tokens=t.n_tokens, sources=t.sources, snapshots=t.snapshots)
    return t, reasons


def _fit_inputs(selector: Selector, t: Trajectories, pool: Pool, pool_rows: np.ndarray) -> dict[str, Any]:
    """The inputs besides the losses that the selector says it needs (`needed_inputs()`), from the pool."""
    inputs: dict[str, Any] = {}
    for name in selector.needed_inputs():
        if name not in INPUTS:
            raise TypeError(f"{selector.name} needs the fit input {name!r}, which s2l select cannot supply "
                            f"(it supplies: {', '.join(INPUTS)})")
        value = INPUTS[name](selector, t, pool, pool_rows)
        if value is not None:
            inputs[name] = value
    return inputs


def _texts(selector: Selector, t: Trajectories, pool: Pool, pool_rows: np.ndarray) -> list[str]:
    """Each example's request as the embedding model should see it (no template boilerplate)."""
    from s2l.selection.embed import embedding_texts

    texts = embedding_texts(pool, getattr(selector, "embedding_text", "reference"))
    return [texts[r] for r in pool_rows]


def _lengths(selector: Selector, t: Trajectories, pool: Pool, pool_rows: np.ndarray) -> np.ndarray | None:
    """Response lengths: None (the method reads the trajectories' token counts) unless a table has none;
    then the response's length in characters."""
    if np.asarray(t.n_tokens).any():
        return None
    selector.length_unit_ = "characters"
    return np.asarray([_response_chars(pool.examples[r]) for r in pool_rows])


INPUTS = {"texts": _texts, "lengths": _lengths}  # what s2l select can give a method besides its trajectories


def _response_chars(example) -> int:
    if example.messages is not None:
        return sum(len(content) for role, content in example.messages if role == "assistant")
    return len(example.response or "")


def _manifest(selector: Selector, budget, loaded: LoadedTrajectories, pool: Pool, t: Trajectories,
              pool_rows: np.ndarray) -> dict[str, Any]:
    import faiss
    import sklearn

    excluded = selector.exclusion_counts()
    no_trajectory = len(pool.examples) - len(pool_rows)
    if no_trajectory:
        excluded[NO_TRAJECTORY] = no_trajectory
    if pool.duplicates:
        excluded[DUPLICATE] = len(pool.duplicates)
    learned = {k: _plain(getattr(selector, k)) for k in selector.manifest_attributes if hasattr(selector, k)}
    return {
        "kind": "selection",
        "s2l_version": __version__,
        "versions": {"numpy": np.__version__, "faiss": faiss.__version__, "scikit-learn": sklearn.__version__},
        "method": selector.name,
        "params": {k: _plain(v) for k, v in selector.get_params().items()},
        "seed": selector.seed,
        "budget": {"asked": str(budget), "delivered": len(selector.selected_), "usable": selector.n_usable_},
        "data": {"path": str(pool.path), "fingerprint": pool.fingerprint, "format": pool.format,
                 "records": len(pool.records), "examples": len(pool.examples), "fields": dict(pool.fields),
                 "split": pool.split, "hub": pool.hub},
        "trajectories": {"kind": loaded.kind, "path": str(loaded.path), "fingerprint": loaded.fingerprint,
                         "examples": len(t.ids), "snapshots": len(t.snapshots),
                         "model": (loaded.manifest or {}).get("model")},
        "excluded": excluded,
        "warnings": list(selector.warnings_),
        "learned": learned,
        "sources": _source_counts(t, selector),
    }


def _source_counts(t: Trajectories, selector: Selector) -> dict[str, dict[str, int]] | None:
    if t.sources is None:
        return None
    pool = Counter(str(s) for s in t.sources)
    chosen = Counter(str(s) for s in t.sources[selector.selected_])
    return {name: {"pool": n, "selected": chosen.get(name, 0)} for name, n in sorted(pool.items())}


def _plain(value):
    """JSON-ready copies of numpy values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write(out: Path, force: bool, selector: Selector, pool: Pool, pool_rows: np.ndarray, manifest: dict) -> None:
    selected_pool_rows = np.sort(pool_rows[selector.selected_])
    remove_leftovers(out.parent, beside=out.name)  # of a killed `select` into the same --out
    with building_directory(out) as tmp:  # --force: the old selection goes once the new one is whole
        records = b"".join(pool.records[pool.examples[r].index].raw + b"\n" for r in selected_pool_rows)
        write_bytes_atomic(tmp / "selected.jsonl", records)
        ids = "".join(pool.examples[r].example_id + "\n" for r in selected_pool_rows)
        write_bytes_atomic(tmp / "selected_ids.txt", ids.encode("utf-8"))
        _write_scores(tmp / "scores.parquet", selector, pool, pool_rows)
        write_json_atomic(tmp / "manifest.json", manifest)


def _write_scores(path: Path, selector: Selector, pool: Pool, pool_rows: np.ndarray) -> None:
    """One row per pool example, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from s2l.fileio import atomic_path

    n = len(pool.examples)
    score = np.full(n, np.nan)
    cluster = np.full(n, -1, dtype=np.int64)
    selected = np.zeros(n, dtype=bool)
    excluded = np.full(n, NO_TRAJECTORY, dtype=object)
    score[pool_rows] = selector.scores_
    cluster[pool_rows] = selector.labels_
    selected[pool_rows[selector.selected_]] = True
    excluded[pool_rows] = selector.excluded_
    columns = {
        "example_id": pa.array([e.example_id for e in pool.examples], pa.string()),
        "source": pa.array([e.source for e in pool.examples], pa.string()),
        "score": pa.array(score, mask=np.isnan(score)),
        "cluster": pa.array(cluster, mask=cluster < 0),
        "selected": pa.array(selected),
        "excluded": pa.array([r or None for r in excluded], pa.string()),
    }
    for name, values in selector.details_.items():
        full = np.full(n, np.nan)
        full[pool_rows] = values
        columns[name] = pa.array(full, mask=np.isnan(full))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)
