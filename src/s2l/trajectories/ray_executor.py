"""`s2l score --executor ray`: the cells of a store scored as a Ray Data job.

One row per missing (snapshot, shard) cell goes through `map_batches` with a callable class: each actor
holds the tokenised pool (shared through Ray's object store, so workers need not read the data file) and
one model at a time, loaded when its first cell of a snapshot arrives; cells are fed in snapshot order,
so an actor loads each checkpoint about once. Each cell is written to the store with its completion
marker by the actor that scored it, so a lost worker costs only its unfinished cells: Ray restarts the
actor and retries them, and a later run skips every finished cell. The store must be on storage every
node can reach (a local folder for a one-machine cluster; a shared file system across nodes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from s2l.errors import InputError
from s2l.fileio import check_writable, directory_lock
from s2l.models import resolve_dtype
from s2l.progress import make_progress
from s2l.config import DataConfig, ScoreConfig
from s2l.trajectories.record import ScoringModel, _open_store, prepare_score
from s2l.trajectories.store import TrajectoryStore

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("the Ray executor needs Ray Data: pip install 's2l[ray]'", parameter="executor") from None
    return ray


class CellScorer:
    """A Ray Data actor: scores (snapshot, shard) cells into the store."""

    def __init__(self, root: str, paths: list[str], tokenized_ref, score_config: dict, device: str):
        import ray

        refs = tokenized_ref if isinstance(tokenized_ref, list) else [tokenized_ref]
        self.tokenized = ray.get(refs[0])
        self.store = TrajectoryStore(root)
        self.paths, self.config, self.device = paths, ScoreConfig(**score_config), device
        self.model, self.snapshot = None, None
        self.scoring_model = ScoringModel(self.config)  # compiled once per actor with --compile

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from s2l.fileio import fault_point
        from s2l.models import load_model
        from s2l.trajectories.scoring import score_columns

        rows = []
        size = self.config.shard_size
        for snapshot, shard in zip(batch["snapshot"].tolist(), batch["shard"].tolist()):
            if not self.store.is_complete(snapshot, shard):  # a retried task may find it done
                if snapshot != self.snapshot:
                    self.model, self.snapshot = None, None
                    self.model = self.scoring_model.weights_of(load_model(self.paths[snapshot], self.config.dtype,
                                                                          self.device))
                    self.snapshot = snapshot
                members = self.tokenized[shard * size:(shard + 1) * size]
                losses, n_tokens, measures = score_columns(self.model, members, self.config.max_batch_tokens,
                                                           self.config.max_batch_size,
                                                           lambda k: fault_point("scoring batch"), self.config.ifd)
                self.store.write_cell(snapshot, shard, [t.example_id for t in members], losses, n_tokens, **measures)
            rows.append(len(self.tokenized[shard * size:(shard + 1) * size]))
        return {"snapshot": batch["snapshot"], "shard": batch["shard"], "rows": np.asarray(rows)}


def score_with_ray(data: str | Path, checkpoints: Sequence[str], out: str | Path, data_config: DataConfig | None = None,
                   score_config: ScoreConfig | None = None, tokenizer: str | None = None, device: str = "cpu",
                   address: str | None = None, workers: int = 2, gpus_per_worker: float = 0.0,
                   show_progress: bool = True) -> TrajectoryStore:
    """Score the pool with each checkpoint into a store at `out`, one Ray task per missing cell.

    `address`: an existing cluster ("auto", "ray://host:10001"); None starts a local one with `workers`
    CPUs. `gpus_per_worker` may be a fraction (0.25: four small proxies share a GPU)."""
    ray = _import_ray()
    data_config, score_config = data_config or DataConfig(), score_config or ScoreConfig()
    if workers < 1 or gpus_per_worker < 0:
        raise InputError("workers must be at least 1 and gpus_per_worker not negative", parameter="workers")
    # `auto` is decided here, on the driver, for `device`: every worker must score in the same dtype.
    score_config = replace(score_config, dtype=resolve_dtype(score_config.dtype, device))
    job = prepare_score(data, checkpoints, data_config, score_config, tokenizer)
    check_writable(out, len(job.paths) * len(job.tokenized) * 64, "scoring")
    with directory_lock(out):  # the driver holds the lock for the whole job
        store, manifest = _open_store(out, job.manifest, job.pool, job.tokenized)
        cells = [{"snapshot": k, "shard": s} for k in range(len(job.paths))
                 for s in store.missing_shards(k, manifest["n_shards"])]
        started = time.time()
        if cells:
            started_here = not ray.is_initialized()
            if started_here:
                ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                         logging_level="ERROR", log_to_driver=False)
            try:
                _run(ray, store, job, cells, score_config, device, workers, gpus_per_worker, show_progress)
            finally:
                if started_here:
                    ray.shutdown()
        missing = [(k, s) for k in range(len(job.paths)) for s in store.missing_shards(k, manifest["n_shards"])]
        if missing:
            raise RuntimeError(f"the Ray job ended with cells {missing[:5]} not written; run the same command again")
        store.update_manifest(complete=True, wall_seconds=round(time.time() - started, 1), executor="ray",
                              workers=workers)
        return store


def _run(ray, store: TrajectoryStore, job, cells: list[dict], score_config: ScoreConfig, device: str,
         workers: int, gpus_per_worker: float, show_progress: bool) -> None:
    from dataclasses import asdict

    tokenized_ref = ray.put(job.tokenized)
    # One block per cell, in snapshot order, so actors take cells one by one and mostly of one snapshot.
    dataset = ray.data.from_items(cells, override_num_blocks=len(cells))
    scored = dataset.map_batches(
        CellScorer, batch_size=1, concurrency=workers, num_cpus=1, num_gpus=gpus_per_worker or None,
        fn_constructor_kwargs={"root": str(store.root), "paths": job.paths, "tokenized_ref": [tokenized_ref],
                               "score_config": asdict(score_config), "device": device},
        max_restarts=-1, max_task_retries=-1)  # a lost worker is replaced and its cells retried
    with make_progress(disable=not show_progress) as progress:
        task = progress.add_task(f"scoring {len(cells)} cells on Ray", total=len(cells), info="")
        for _ in scored.iter_rows():
            progress.advance(task)
    log.info(f"Ray scored {len(cells)} cell(s) with {workers} worker(s)")
