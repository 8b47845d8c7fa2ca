"""The trajectory store: the on-disk contract between recording and selection.

    RUN/manifest.json                     what made the run: data, model, tokenisation, training, snapshots
    RUN/examples.parquet                  every example: id, source, token counts, why it is excluded if it is
    RUN/cells/snapshot-KKK/shard-SSSSS.parquet   example_id, loss, n_tokens, top1_prob [, loss_alone] for one
                                                 (snapshot, shard) cell
    RUN/cells/snapshot-KKK/shard-SSSSS.done      completion marker, written after the cell

A cell with a marker is never recomputed; one without is computed again, so an interrupted run resumes
where it stopped. Everything is keyed by `example_id`; shards are consecutive slices of the pool.

Besides the loss, a cell may hold measures of the same pass (`MEASURES`): `top1_prob`, the mean top-1 token
probability (every scored cell since s2l kept it; none in an in-training visit column, which keeps only the
training pass's loss), and `loss_alone`, the response scored without its prompt (runs made with `ifd`). A
store loads with each as an N x (T+1) matrix, NaN where a cell lacks it, or None where no cell has it, so
stores written before a column existed load as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from s2l.errors import InputError
from s2l.fileio import LOCK_NAME, as_path, atomic_path, remove_leftovers, sha256_file, write_json_atomic
from s2l.trajectories.matrix import Trajectories

# Settings that change the numbers: a run directory refuses to resume under different ones.
IDENTITY_KEYS = ("dataset_fingerprint", "format", "template", "id_column", "fields", "model", "model_revision",
                 "tokenizer", "max_length", "boundary", "dtype", "compiled", "shard_size", "ifd", "training",
                 "snapshots")
# What a run made before the key existed used: runs recorded before the boundary option masked by characters.
IDENTITY_DEFAULTS = {"compiled": False, "ifd": False, "boundary": "characters", "fields": {}}
# Optional cell columns, and the `Trajectories` attribute each loads into.
MEASURES = {"top1_prob": "confidence", "loss_alone": "loss_alone"}


def _differing(name: str, old: Any, new: Any) -> list[str]:
    """The settings two identity values differ in: `training.chunked_loss` rather than all of `training`."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [f"{name}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)] or [name]
    return [name]


class TrajectoryStore:
    def __init__(self, root: str | Path):
        self.root = as_path(root)  # a local folder, or an fsspec URL (s3://bucket/run, …) given as a string

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise InputError("not a trajectory run directory (no manifest.json)", self.root)
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"manifest.json is not valid JSON: {e.msg}", self.manifest_path, e.lineno) from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.manifest_path, manifest)

    def open_or_create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Start a new run, or check that an existing one was made with the same settings."""
        if self.manifest_path.exists():
            existing = self.manifest
            setting = lambda m, k: m.get(k, IDENTITY_DEFAULTS.get(k))  # noqa: E731
            differ = [name for k in IDENTITY_KEYS if setting(existing, k) != setting(manifest, k)
                      for name in _differing(k, setting(existing, k), setting(manifest, k))]
            if differ:
                raise InputError(
                    "this run directory was made with different settings (" + ", ".join(differ) +
                    "); resume with the same ones, or choose another --out", self.root)
            return existing
        # A new run's folder may hold our lock and the first manifest a killed run was writing.
        ours = lambda p: p.name == LOCK_NAME or p.name.startswith(".manifest.json.tmp-")  # noqa: E731
        if self.root.exists() and any(not ours(p) for p in self.root.iterdir()):
            raise InputError("the output directory exists and is not a trajectory run; choose another --out", self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_manifest(manifest)
        return manifest

    def remove_leftovers(self) -> int:
        """Delete what a killed writer left (`.NAME.tmp-PID`: fileio.remove_leftovers); call it holding the directory
        lock, when no other writer can be mid-write. Returns how many were removed."""
        if not isinstance(self.root, Path):  # remote writes are single puts: nothing is left half-written
            return 0
        return remove_leftovers(self.root)

    def update_manifest(self, **changes: Any) -> None:
        manifest = self.manifest
        manifest.update(changes)
        self.write_manifest(manifest)

    # -- examples ---------------------------------------------------------------------------------
    @property
    def examples_path(self) -> Path:
        return self.root / "examples.parquet"

    def write_examples(self, table) -> None:
        import pyarrow.parquet as pq

        with atomic_path(self.examples_path) as tmp:
            pq.write_table(table, tmp)

    def read_examples(self):
        return _read_parquet(self.examples_path)

    # -- cells ------------------------------------------------------------------------------------
    def cell_path(self, snapshot: int, shard: int) -> Path:
        return self.root / "cells" / f"snapshot-{snapshot:03d}" / f"shard-{shard:05d}.parquet"

    def marker_path(self, snapshot: int, shard: int) -> Path:
        return self.cell_path(snapshot, shard).with_suffix(".done")

    def is_complete(self, snapshot: int, shard: int) -> bool:
        return self.marker_path(snapshot, shard).is_file() and self.cell_path(snapshot, shard).is_file()

    def missing_shards(self, snapshot: int, n_shards: int) -> list[int]:
        return [s for s in range(n_shards) if not self.is_complete(snapshot, s)]

    def write_cell(self, snapshot: int, shard: int, ids: list[str], losses: np.ndarray, n_tokens: np.ndarray,
                   **measures: np.ndarray | None) -> None:
        """One cell: the losses and token counts, and any of `MEASURES` given (by name; None: not kept)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        unknown = sorted(set(measures) - set(MEASURES))
        if unknown:
            raise ValueError(f"cells have no column {', '.join(unknown)} (known: {', '.join(MEASURES)})")
        columns = {
            "example_id": pa.array(ids, pa.string()),
            "loss": pa.array(np.asarray(losses, dtype=np.float64)),
            "n_tokens": pa.array(np.asarray(n_tokens, dtype=np.int32)),
        }
        for name in MEASURES:  # a fixed order, so the same values give the same bytes
            if measures.get(name) is not None:
                columns[name] = pa.array(np.asarray(measures[name], dtype=np.float64))
        table = pa.table(columns)
        path = self.cell_path(snapshot, shard)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        # The marker goes last: a cell without one is not trusted and is computed again.
        write_json_atomic(self.marker_path(snapshot, shard), {"rows": len(ids), "sha256": sha256_file(path)})

    def fingerprint(self) -> str:
        """sha256 over the examples table and every cell's recorded checksum: changes when any loss does."""
        import hashlib

        digest = hashlib.sha256(sha256_file(self.examples_path).encode("ascii"))
        for marker in sorted((self.root / "cells").glob("snapshot-*/shard-*.done")):
            digest.update(str(marker.relative_to(self.root)).encode("utf-8") + b"\0")
            digest.update(json.loads(marker.read_text(encoding="utf-8"))["sha256"].encode("ascii"))
        return digest.hexdigest()

    # -- loading ----------------------------------------------------------------------------------
    def load(self) -> Trajectories:
        """The N x (T+1) matrix, rows in pool order, columns in snapshot order, aligned by id; with the
        measures the cells hold (`MEASURES`), each N x (T+1), NaN where a cell lacks it."""
        manifest = self.manifest
        examples = self.read_examples()
        ids = np.asarray(examples.column("example_id").to_pylist(), dtype=object)
        position = {example_id: i for i, example_id in enumerate(ids)}
        snapshots = manifest["snapshots"]
        n_shards = manifest["n_shards"]
        losses = np.full((len(ids), len(snapshots)), np.nan)
        measures: dict[str, np.ndarray] = {}  # created when a first cell holds the column
        seen = np.zeros((len(ids), len(snapshots)), dtype=bool)
        for k in range(len(snapshots)):
            missing = self.missing_shards(k, n_shards)
            if missing:
                raise InputError(f"snapshot {k} is incomplete (shards {missing[:5]}{'…' if len(missing) > 5 else ''} "
                                 "missing); resume the run that makes it", self.root)
            for s in range(n_shards):
                cell = _read_parquet(self.cell_path(k, s))
                rows = np.fromiter((position[i] for i in cell.column("example_id").to_pylist()), dtype=np.int64)
                losses[rows, k] = cell.column("loss").to_numpy()
                for name in MEASURES:
                    if name in cell.column_names:
                        matrix = measures.setdefault(name, np.full(losses.shape, np.nan))
                        matrix[rows, k] = cell.column(name).to_numpy()
                seen[rows, k] = True
        if not seen.all():
            raise InputError(f"{int((~seen).sum())} (example, snapshot) values are absent from the cells", self.root)
        sources = examples.column("source").to_pylist()
        return Trajectories(
            ids=ids,
            losses=losses,
            n_tokens=examples.column("n_tokens").to_numpy(),
            sources=None if all(s is None for s in sources) else np.asarray(sources, dtype=object),
            snapshots=snapshots,
            **{attribute: measures.get(name) for name, attribute in MEASURES.items()},
        )


def _read_parquet(path):
    import pyarrow.parquet as pq

    if isinstance(path, Path):
        return pq.read_table(path)
    with path.open("rb") as f:  # an fsspec URL
        return pq.read_table(f)
