"""What a report reads: a trajectory run, selection directories, and optionally a target run.

Everything is checked before any figure is drawn: a selection made from another pool, or naming ids
the run does not hold, stops the report with an `InputError` that names the selection directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2l.errors import InputError
from s2l.trajectories.matrix import Trajectories
from s2l.trajectories.store import TrajectoryStore


@dataclass
class Run:
    """A trajectory run directory, loaded: rows of every array follow examples.parquet (pool order)."""

    root: Path
    manifest: dict[str, Any]
    trajectories: Trajectories
    fingerprint: str  # the store's: changes when any loss does
    truncated: np.ndarray  # (N,) bool
    excluded: np.ndarray  # (N,) str, "" where the example is kept
    n_input_tokens: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        return self.trajectories.ids

    @property
    def n(self) -> int:
        return len(self.trajectories.ids)

    @property
    def usable(self) -> np.ndarray:
        return self.trajectories.usable

    @property
    def data_fingerprint(self) -> str | None:
        return self.manifest.get("dataset_fingerprint") or (self.manifest.get("dataset") or {}).get("fingerprint")

    def rows_of(self, ids, where: str | Path) -> np.ndarray:
        position = {example_id: i for i, example_id in enumerate(self.ids)}
        unknown = [i for i in ids if i not in position]
        if unknown:
            raise InputError(f"{len(unknown)} example ids are not in the run {self.root} (first: {unknown[0]!r}); "
                             "was it made from another pool?", where)
        return np.fromiter((position[i] for i in ids), dtype=np.int64, count=len(ids))


@dataclass
class Selection:
    """A selection directory from `s2l select`, aligned to the run's rows."""

    path: Path
    name: str  # how the report calls it: the directory's name, made unique
    manifest: dict[str, Any]
    selected: np.ndarray  # (N,) bool over the run's rows
    clusters: np.ndarray | None  # (N,) int, -1 where none; from scores.parquet
    scores: np.ndarray | None  # (N,) float, NaN where none
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.manifest.get("method", "?"))

    @property
    def size(self) -> int:
        return int(self.selected.sum())


def load_run(path: str | Path, what: str = "run") -> Run:
    root = Path(path)
    store = TrajectoryStore(root)
    manifest = store.manifest  # InputError when it is not a run directory
    if not store.examples_path.is_file():
        raise InputError(f"the {what} directory has no examples.parquet; is the run complete?", root)
    t = store.load()
    examples = store.read_examples()
    columns = set(examples.column_names)
    n = len(t.ids)
    truncated = (np.asarray(examples.column("truncated").to_pylist(), dtype=bool) if "truncated" in columns
                 else np.zeros(n, dtype=bool))
    excluded = (np.asarray([r or "" for r in examples.column("excluded").to_pylist()], dtype=object)
                if "excluded" in columns else np.full(n, "", dtype=object))
    excluded = np.where((excluded == "") & ~t.usable, "no_loss", excluded)
    n_input = examples.column("n_input_tokens").to_numpy() if "n_input_tokens" in columns else None
    return Run(root, manifest, t, store.fingerprint(), truncated, excluded, n_input)


def load_selection(path: str | Path, run: Run, taken: set[str]) -> Selection:
    """Read a selection directory and check it was made from the run's pool."""
    import pyarrow.parquet as pq

    path = Path(path)
    manifest_path = path / "manifest.json"
    if not path.is_dir() or not manifest_path.is_file():
        raise InputError("not a selection directory (no manifest.json); make one with `s2l select`", path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"manifest.json is not valid JSON: {e.msg}", manifest_path, e.lineno) from None
    if manifest.get("kind") != "selection":
        raise InputError("manifest.json is not a selection's (its kind is "
                         f"{manifest.get('kind')!r}); make one with `s2l select`", manifest_path)
    theirs = (manifest.get("data") or {}).get("fingerprint")
    ours = run.data_fingerprint
    if theirs and ours and theirs != ours:
        raise InputError(f"this selection was made from a different pool ({(manifest.get('data') or {}).get('path')}, "
                         f"fingerprint {theirs[:12]}…) than the run {run.root} recorded "
                         f"(fingerprint {ours[:12]}…); report it against the run over its pool", path)

    ids_path = path / "selected_ids.txt"
    scores_path = path / "scores.parquet"
    scores_table = pq.read_table(scores_path) if scores_path.is_file() else None
    if ids_path.is_file():
        chosen = [line for line in ids_path.read_text(encoding="utf-8").splitlines() if line]
    elif scores_table is not None:
        flags = scores_table.column("selected").to_pylist()
        chosen = [i for i, f in zip(scores_table.column("example_id").to_pylist(), flags) if f]
    else:
        raise InputError("the selection directory has neither selected_ids.txt nor scores.parquet", path)
    if len(set(chosen)) != len(chosen):
        raise InputError("selected_ids.txt lists an id more than once", ids_path)
    selected = np.zeros(run.n, dtype=bool)
    selected[run.rows_of(chosen, ids_path)] = True

    clusters = scores = None
    if scores_table is not None:
        table_ids = scores_table.column("example_id").to_pylist()
        position = {example_id: i for i, example_id in enumerate(run.ids)}
        rows = np.fromiter((position.get(i, -1) for i in table_ids), dtype=np.int64, count=len(table_ids))
        known = rows >= 0
        if "cluster" in scores_table.column_names:
            values = np.asarray([-1 if c is None else c for c in scores_table.column("cluster").to_pylist()])
            if (values >= 0).any():
                clusters = np.full(run.n, -1, dtype=np.int64)
                clusters[rows[known]] = values[known]
        if "score" in scores_table.column_names:
            values = np.asarray([np.nan if s is None else s for s in scores_table.column("score").to_pylist()], float)
            if np.isfinite(values).any():
                scores = np.full(run.n, np.nan)
                scores[rows[known]] = values[known]

    name = path.name or str(path)
    base, k = name, 2
    while name in taken:
        name, k = f"{base} ({k})", k + 1
    selection = Selection(path, name, manifest, selected, clusters, scores)
    made_from = (manifest.get("trajectories") or {}).get("fingerprint")
    if made_from and made_from != run.fingerprint:
        selection.notes.append(f"made from other trajectories ({(manifest.get('trajectories') or {}).get('path')}) "
                               "than this report's run: same pool, but its scores are not this run's")
    delivered = (manifest.get("budget") or {}).get("delivered")
    if delivered is not None and int(delivered) != selection.size:
        raise InputError(f"selected_ids.txt holds {selection.size} ids but the manifest says {delivered} were "
                         "delivered; the directory was changed after `s2l select` wrote it", path)
    return selection


def load_target(path: str | Path, run: Run) -> Run:
    target = load_run(path, "target run")
    common = np.intersect1d(run.ids.astype(str), target.ids.astype(str))
    if len(common) == 0:
        raise InputError(f"the target run shares no example with the run {run.root}; record both over the same pool",
                         target.root)
    return target
