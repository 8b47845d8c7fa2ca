"""Fill a trajectory store: fine-tune the proxy and score the pool at snapshots (`record`), or score
checkpoints a user already has (`score`).

`record` follows the papers (the defaults of `s2l.config.RecordConfig`; the loop is `s2l.fine_tuning`).
The untrained base model is snapshot 0; T more snapshots are spread evenly over the run, and by
default every epoch end is one too (learning percentage needs the losses after epoch 1 and after the
last epoch). Scoring runs inside the training process on the live weights, so no weights need be
written per snapshot. To resume after an interruption, the training state is saved at each snapshot
(the latest one only) and deleted when the run completes.
"""

from __future__ import annotations

import logging
import contextlib
import copy
import json
import math
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from s2l import __version__
from s2l.config import DataConfig, RecordConfig, ScoreConfig
from s2l.data import Pool, TokenizedExample, prepare_pool
from s2l.data.formats import EMPTY_REASONS
from s2l.data.tokenize import NO_RESPONSE_TOKENS, exclusion_counts
from s2l.distributed import ProcessGroup, full_state, is_sharded, join, shard_model
from s2l.errors import InputError
from s2l.fine_tuning import FineTuning, few_steps_note, latest_state, step_counts
from s2l.fileio import check_writable, directory_lock, fault_point, folder_bytes, is_url, write_json_atomic
from s2l.models import (default_device, load_model, load_tokenizer, resolve, resolve_dtype, resolve_precision,
                        revision, torch_dtype)
from s2l.progress import make_progress
from s2l.trajectories.scoring import score_columns
from s2l.trajectories.store import TrajectoryStore

log = logging.getLogger(__name__)


# -- the pool, tokenised, and its per-example table ---------------------------------------------------
def examples_table(pool: Pool, tokenized: Sequence[TokenizedExample]):
    import pyarrow as pa

    n_tokens = [t.n_tokens for t in tokenized]
    return pa.table({
        "example_id": pa.array(pool.ids, pa.string()),
        "index": pa.array([e.index for e in pool.examples], pa.int64()),
        "line": pa.array([e.line for e in pool.examples], pa.int64()),
        "source": pa.array([e.source for e in pool.examples], pa.string()),
        "n_tokens": pa.array(n_tokens, pa.int32()),
        "n_input_tokens": pa.array([len(t) for t in tokenized], pa.int32()),
        "truncated": pa.array([t.truncated for t in tokenized], pa.bool_()),
        "excluded": pa.array([t.exclusion for t in tokenized], pa.string()),
    })


def exclusion_report(pool: Pool, tokenized: Sequence[TokenizedExample]) -> dict:
    """Counts by reason: duplicates (left out of the pool), examples with no loss (kept, flagged) and truncated
    ones still with a loss. An empty prompt or response (empty_prompt, empty_response, no_assistant_turn) is
    counted only where it occurs, so manifests of pools without any keep their old keys."""
    counts = exclusion_counts(tokenized)
    return {
        "duplicate": len(pool.duplicates),
        "no_response_tokens": counts.pop(NO_RESPONSE_TOKENS, 0),
        "truncated_kept": sum(1 for t in tokenized if t.truncated and t.n_tokens > 0),
        **counts,
    }


def environment() -> dict:
    import platform

    import transformers

    return {"python": platform.python_version(), "transformers": transformers.__version__,
            "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
            "device": default_device(), "machine": platform.machine()}


def boundary_used(format: str, data_config: DataConfig) -> str:
    """Where the loss starts, as a store records it: chat records always use the chat template's character
    spans, whatever the option says."""
    return "characters" if format == "chat" else data_config.boundary


def base_manifest(kind: str, pool: Pool, tokenized, data_config: DataConfig, score_config: ScoreConfig,
                  tokenizer_name: str) -> dict:
    n = len(pool.examples)
    return {
        "kind": kind,
        "s2l_version": __version__,
        "torch_version": torch.__version__,
        # What else can move the last bits of a loss: library versions and the CPU thread count
        # (reduction order); not identity keys, so a resumed run may differ in them.
        "environment": environment(),
        "dataset": pool.summary(),
        "dataset_fingerprint": pool.fingerprint,
        "format": pool.format,
        "template": {"name": pool.template.name, "with_input": pool.template.with_input,
                     "without_input": pool.template.without_input},
        "id_column": data_config.id_column,
        "fields": dict(pool.fields),  # --field: select reads the pool the same way
        "tokenizer": tokenizer_name,
        "max_length": data_config.max_length,
        "boundary": boundary_used(pool.format, data_config),
        "dtype": score_config.dtype,
        "compiled": score_config.compile,
        "shard_size": score_config.shard_size,
        "ifd": score_config.ifd,  # cells with loss_alone, the response scored without its prompt
        "n_examples": n,
        "n_shards": max(1, math.ceil(n / score_config.shard_size)),
        "excluded": exclusion_report(pool, tokenized),
        "duplicates": [{"line": d.line, "index": d.index, "first_line": d.first_line, "first_index": d.first_index}
                       for d in pool.duplicates[:1000]],
        "complete": False,
    }


def report_exclusions(manifest: dict) -> None:
    excluded = manifest["excluded"]
    if excluded["duplicate"]:
        log.warning(f"{excluded['duplicate']} duplicate record(s) left out (kept once; listed in manifest.json)")
    if excluded["no_response_tokens"]:
        log.warning(f"{excluded['no_response_tokens']} example(s) have no response token after truncation to "
                    f"{manifest['max_length']} tokens: kept in the store with no loss (NaN), flagged in examples.parquet")
    for reason in EMPTY_REASONS:
        if excluded.get(reason):
            log.warning(f"{excluded[reason]} example(s) excluded: {reason.replace('_', ' ')}. Kept in the store with "
                        "no loss (NaN), never trained on, flagged in examples.parquet (--strict refuses them)")
    if excluded["truncated_kept"]:
        log.info(f"{excluded['truncated_kept']} example(s) were truncated to {manifest['max_length']} tokens")


# -- scoring one snapshot into the store ----------------------------------------------------------------
def cast_copy(model, dtype: torch.dtype):
    """`copy.deepcopy(model).to(dtype)` without the deep copy's full-precision duplicate of every weight: each
    parameter is cast straight into the copy (a tied weight stays tied), then buffers follow `.to`."""
    memo = {}
    for p in model.parameters():
        if p.is_floating_point():
            memo[id(p)] = torch.nn.Parameter(p.detach().to(dtype, copy=True), requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo).to(dtype)


class ScoringModel:
    """The weights that score, in the scoring dtype, without touching the training weights.

    By default: the model itself when it already has that dtype, else a fresh copy per snapshot. Compiled,
    or for a model sharded over processes (FSDP): one copy, kept for the run and refreshed in place at every
    snapshot; a compiled graph takes parameters as inputs, so new values need no recompiling."""

    def __init__(self, config: ScoreConfig):
        self.config = config
        self.copy_ = None

    def keep_copy(self, model) -> None:
        """Make the run's copy now (before sharding a model, the last time its whole weights are at hand)."""
        self.copy_ = cast_copy(model, torch_dtype(self.config.dtype))
        if self.config.compile:
            self.copy_.base_model.compile(dynamic=True)

    def weights_of(self, model):
        """The model to score `model`'s current weights with. For a sharded model every process must call it."""
        dtype = torch_dtype(self.config.dtype)
        if self.copy_ is None and not self.config.compile:
            return model if next(model.parameters()).dtype == dtype else cast_copy(model, dtype)
        if self.copy_ is None:
            self.keep_copy(model)
            return self.copy_
        current = full_state(model)[0] if is_sharded(model) else model.state_dict()
        with torch.no_grad():
            for name, mine in self.copy_.state_dict().items():
                if name in current:  # a tied weight may be listed once
                    mine.copy_(current[name])
        return self.copy_


def score_snapshot(model, tokenized: Sequence[TokenizedExample], store: TrajectoryStore, snapshot: int,
                   config: ScoreConfig, progress=None, group: ProcessGroup = ProcessGroup(),
                   scoring_model: ScoringModel | None = None) -> None:
    """Score every shard of `snapshot` that is not complete yet, one cell at a time (with several
    processes, this process's share of them): the loss, the top-1 probability and, with `config.ifd`, the
    loss of each response alone. Pass one `scoring_model` for a whole run."""
    n_shards = math.ceil(len(tokenized) / config.shard_size) or 1
    all_missing = store.missing_shards(snapshot, n_shards)
    missing = group.my_shards(all_missing)
    if not missing and not (all_missing and is_sharded(model)):  # gathering sharded weights takes everyone
        return
    scorer = (scoring_model or ScoringModel(config)).weights_of(model)
    if not missing:
        return
    todo = sum(len(tokenized[s * config.shard_size:(s + 1) * config.shard_size]) for s in missing)
    todo *= 2 if config.ifd else 1  # the prompted pass, then the responses alone
    task = progress.add_task(f"scoring snapshot {snapshot}", total=todo, info="") if progress else None
    for shard in missing:
        members = tokenized[shard * config.shard_size:(shard + 1) * config.shard_size]
        def on_batch(k: int) -> None:
            fault_point("scoring batch")  # mid-cell
            if progress:
                progress.advance(task, k)

        losses, n_tokens, measures = score_columns(scorer, members, config.max_batch_tokens, config.max_batch_size,
                                                   on_batch, config.ifd)
        store.write_cell(snapshot, shard, [t.example_id for t in members], losses, n_tokens, **measures)
    if progress:
        progress.update(task, completed=todo)
    del scorer


def _open_store(out, manifest: dict, pool: Pool, tokenized,
                group: ProcessGroup = ProcessGroup()) -> tuple[TrajectoryStore, dict]:
    """Create the run directory, or reopen it after checking its settings; call it holding the lock.
    With several processes, rank 0 does it and the others read the result after a barrier."""
    if group.is_main:
        store = TrajectoryStore(out)
        manifest = store.open_or_create(manifest)
        store.remove_leftovers()  # half-written files of a killed run (never trusted: they have no marker)
        store.write_examples(examples_table(pool, tokenized))
        report_exclusions(manifest)
    group.barrier()  # the run directory exists, checked, before any process writes into it
    if not group.is_main:
        store = TrajectoryStore(out)
        manifest = store.manifest
    return store, manifest


# -- the snapshot plan ----------------------------------------------------------------------------------
def snapshot_plan(total_steps: int, steps_per_epoch: int, snapshots: int, epoch_snapshots: bool) -> list[dict]:
    """Snapshot 0 is the base model; then `snapshots` steps spread evenly over the run, plus epoch ends."""
    steps = {round(k * total_steps / snapshots) for k in range(1, snapshots + 1)}
    if epoch_snapshots:
        steps |= {e * steps_per_epoch for e in range(1, total_steps // steps_per_epoch + 1)}
    plan = [{"step": 0, "epoch": 0.0, "epoch_end": True, "label": "base"}]
    for step in sorted(s for s in steps if s > 0):
        plan.append({"step": step, "epoch": round(step / steps_per_epoch, 4),
                     "epoch_end": step % steps_per_epoch == 0, "label": f"step-{step}"})
    return plan


def in_training_plan(steps_per_epoch: int, epochs: int) -> list[dict]:
    """Columns of an in-training capture: the base model (a pass), the loss at each epoch's visit, and the
    trained model (a pass). A visit in epoch e sees weights trained for e - 1 epochs plus a uniform share of
    epoch e, so its nominal epoch is e - 0.5."""
    plan = [{"step": 0, "epoch": 0.0, "epoch_end": True, "label": "base", "capture": "pass"}]
    for e in range(1, epochs + 1):
        plan.append({"step": e * steps_per_epoch, "epoch": e - 0.5, "epoch_end": False,
                     "label": f"visits-epoch-{e}", "capture": "visits"})
    plan.append({"step": epochs * steps_per_epoch, "epoch": float(epochs), "epoch_end": True, "label": "final",
                 "capture": "pass"})
    return plan


# -- the proxy's run ------------------------------------------------------------------------------------
def _write_visits(store: TrajectoryStore, snapshot: int, tokenized, visits: np.ndarray, shard_size: int) -> None:
    """An in-training column: the losses kept from one epoch's training batches, written shard by shard."""
    n_shards = math.ceil(len(tokenized) / shard_size) or 1
    for shard in store.missing_shards(snapshot, n_shards):
        members = tokenized[shard * shard_size:(shard + 1) * shard_size]
        losses = visits[shard * shard_size:shard * shard_size + len(members)]
        store.write_cell(snapshot, shard, [t.example_id for t in members], losses,
                         np.array([t.n_tokens for t in members], dtype=np.int64))


def _save_checkpoint(root: Path, snapshot: int, where: dict, model, tokenizer, weights: dict | None = None) -> None:
    """A Hugging Face folder, with the step and epoch in a Trainer-style trainer_state.json so that `s2l score`
    puts it in order and knows its epoch. `weights`: a sharded model's gathered weights."""
    folder = root / "checkpoints" / f"snapshot-{snapshot:03d}"
    if folder.exists():
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=weights)
    tokenizer.save_pretrained(tmp)
    write_json_atomic(tmp / "trainer_state.json", {"global_step": where["step"], "epoch": where["epoch"]})
    tmp.rename(folder)


class ProxyRun:
    """The proxy's fine-tuning, scoring the pool whenever it reaches a snapshot step.

    `run()` reads top to bottom: resume, then train step by step and take each snapshot as its step is
    reached. A snapshot scores every example with the live weights (or, captured in training, writes the
    losses kept from that epoch's forward passes), after saving the training state so that an interrupted
    run resumes there. With several processes each trains on a slice of every batch (`FineTuning`) and
    scores its share of each snapshot's cells."""

    def __init__(self, store: TrajectoryStore, manifest: dict, model_path: str, tokenizer, tokenized,
                 trainable: np.ndarray, config: RecordConfig, score_config: ScoreConfig, device: str,
                 group: ProcessGroup = ProcessGroup()):
        self.store, self.manifest, self.plan = store, manifest, manifest["snapshots"]
        self.tokenizer, self.tokenized, self.trainable = tokenizer, tokenized, trainable
        self.config, self.score_config, self.device, self.group = config, score_config, device, group
        # Wall seconds: this process's from here, plus (once resumed) what earlier ones spent up to their state.
        self.started, self.earlier_seconds = time.time(), 0.0
        torch.manual_seed(config.seed)
        model = load_model(model_path, "float32", device)
        model.config.use_cache = False
        self.scoring_model = ScoringModel(score_config)
        self.sharded = config.fsdp and group.world > 1
        if self.sharded:
            self.scoring_model.keep_copy(model)
            shard_model(model, device)
        self.model = model
        self.tuning = FineTuning(model, [tokenized[i] for i in trainable], config, device, group=group,
                                 sharded=self.sharded)
        self.saved_at: int | None = None  # the step of the state on disk (the same on every process)
        # This epoch's loss of each example, taken as it is trained on; kept on the device, so that keeping it
        # never waits for the GPU.
        self.visits = torch.full((len(tokenized),), float("nan"), dtype=torch.float64, device=device)
        self.n_tokens = torch.tensor([t.n_tokens for t in tokenized], dtype=torch.float64, device=device)
        # training: optimizer steps; capture: keeping visit losses; scoring: passes and writing columns;
        # saving: resume state and checkpoints.
        self.seconds = dict.fromkeys(("training", "capture", "scoring", "saving"), 0.0)

    def run(self, progress) -> dict:
        """Train to the end, taking every snapshot; returns where the run's time went, in seconds (a resumed
        run's earlier processes included, up to the state it resumed from)."""
        self.resume()
        tuning = self.tuning
        snapshot_at: dict[int, list[int]] = {}
        for k, s in enumerate(self.plan):
            snapshot_at.setdefault(s["step"], []).append(k)
        for k in snapshot_at.get(tuning.step, []):
            self.take_snapshot(k, progress)
        train_task = progress.add_task("training", total=tuning.total_steps, completed=tuning.step, info="")
        self.model.train()
        capture = self.keep_visits if self.config.capture == "in-training" else None
        while tuning.step < tuning.total_steps:
            clock, capture_before = time.perf_counter(), self.seconds["capture"]
            epoch = tuning.epoch
            loss = tuning.train_step(capture)
            fault_point("training step")
            progress.update(train_task, completed=tuning.step, info=f"epoch {epoch + 1} loss {loss.item():.3f}")
            self.seconds["training"] += time.perf_counter() - clock - (self.seconds["capture"] - capture_before)
            for k in snapshot_at.get(tuning.step, []):
                self.take_snapshot(k, progress)
                if progress.disable and self.group.is_main:  # no live bars (not a terminal): a line per snapshot
                    log.info(f"step {tuning.step}/{tuning.total_steps}: snapshot {k} ({self.plan[k]['label']}) "
                             f"written ({self.wall_seconds():.0f} s into the run)")
        return {name: round(value, 3) for name, value in self.seconds.items()}

    def resume(self) -> None:
        """Continue from the latest training state, if a killed run left one."""
        state = latest_state(self.store.root)
        if state is not None:
            saved = self.tuning.load_state(state)
            self.saved_at = self.tuning.step
            self.earlier_seconds = saved.get("wall_seconds", 0.0)  # 0 in states saved before the times were kept
            self.seconds.update(saved.get("seconds", {}))
            log.info(f"resuming {self.store.root} at step {self.tuning.step} of {self.tuning.total_steps}")
        for k, s in enumerate(self.plan):
            if s["step"] < self.tuning.step and self.store.missing_shards(k, self.manifest["n_shards"]):
                raise InputError(f"snapshot {k} (step {s['step']}) is incomplete and its weights are gone; "
                                 "record into a new --out", self.store.root)

    def take_snapshot(self, k: int, progress) -> None:
        if self.plan[k].get("capture") == "visits":
            self.write_visits(k)
            return
        if self.config.resume_state and k > 0 and self.store.missing_shards(k, self.manifest["n_shards"]):
            self.save_state()
        clock = time.perf_counter()
        score_snapshot(self.model, self.tokenized, self.store, k, self.score_config, progress, self.group,
                       self.scoring_model)
        self.group.barrier()  # every cell of this snapshot is written before anyone looks for missing ones
        self.seconds["scoring"] += time.perf_counter() - clock
        if self.config.keep_checkpoints:
            clock = time.perf_counter()
            weights = full_state(self.model)[0] if self.sharded else None  # every process takes part
            if self.group.is_main:
                _save_checkpoint(self.store.root, k, self.plan[k], self.model, self.tokenizer, weights)
            self.seconds["saving"] += time.perf_counter() - clock

    def wall_seconds(self) -> float:
        """The run's wall time so far, over all its processes (up to the state each resumed from)."""
        return self.earlier_seconds + time.time() - self.started

    def keep_visits(self, members: np.ndarray, token_ce: torch.Tensor, rows: torch.Tensor) -> None:
        """In-training capture: each example's mean response-token loss, from this very forward pass."""
        clock = time.perf_counter()
        where = torch.from_numpy(self.trainable[members]).to(self.device)
        sums = torch.zeros(len(members), dtype=torch.float64, device=token_ce.device)
        sums.index_add_(0, rows, token_ce.double())
        self.visits[where] = sums / self.n_tokens[where]
        self.seconds["capture"] += time.perf_counter() - clock

    def write_visits(self, k: int) -> None:
        """An in-training column: cells first, then the state, so a run resumed from this state never needs
        this epoch again."""
        clock, group, visits = time.perf_counter(), self.group, self.visits
        if group.world > 1:  # each process saw its slice of every batch
            seen = group.all_reduce_sum((~visits.isnan()).double())
            total = group.all_reduce_sum(visits.nan_to_num(0.0))
            visits.copy_(torch.where(seen > 0, total, float("nan")))
        if group.is_main:
            _write_visits(self.store, k, self.tokenized, visits.cpu().numpy(), self.score_config.shard_size)
        visits.fill_(float("nan"))
        group.barrier()
        self.seconds["scoring"] += time.perf_counter() - clock
        if self.config.resume_state:
            self.save_state()

    def save_state(self) -> None:
        """Every process holds the same state (or its shard); the first one writes it."""
        if self.saved_at == self.tuning.step:
            return
        clock = time.perf_counter()
        gathered = full_state(self.model, self.tuning.optimizer) if self.sharded else None  # all take part
        if self.group.is_main:
            self.tuning.save_state(self.store.root, gathered,
                                   extra={"wall_seconds": self.wall_seconds(), "seconds": self.seconds})
        self.group.barrier()
        self.saved_at = self.tuning.step
        self.seconds["saving"] += time.perf_counter() - clock


def _record_manifest(pool: Pool, tokenized, n_trainable: int, proxy: str, model_path: str, tokenizer_name: str,
                     config: RecordConfig, data_config: DataConfig, score_config: ScoreConfig) -> dict:
    """What identifies a proxy run (a resumed run must match it), with its snapshot plan."""
    steps_per_epoch, total_steps, warmup_steps = step_counts(n_trainable, config)
    if config.capture == "in-training":
        plan = in_training_plan(steps_per_epoch, config.epochs)
    else:
        plan = snapshot_plan(total_steps, steps_per_epoch, config.snapshots, config.epoch_snapshots)
    training = {**asdict(config), "optimizer": "AdamW", "schedule": "cosine", "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps, "warmup_steps": warmup_steps, "trained_examples": n_trainable}
    # Neither changes the numbers, so a resumed run may set them otherwise.
    for setting in ("keep_checkpoints", "resume_state"):
        training.pop(setting)
    if config.micro_batch_size >= config.batch_size:  # one forward pass a step, as stores recorded before it
        training.pop("micro_batch_size")
    if not config.fsdp:  # so that stores recorded before the option still resume
        training.pop("fsdp")
    if config.optim == "adamw_torch":  # (the same: what those stores used)
        training.pop("optim")
    if not config.chunked_loss:  # (the same: those stores' loss path)
        training.pop("chunked_loss")
    if not config.compile_training:  # (the same)
        training.pop("compile_training")
    if config.capture == "snapshots":
        training.pop("capture")  # so that stores recorded before the option still resume
    else:
        for setting in ("snapshots", "epoch_snapshots"):  # not used by this capture
            training.pop(setting)
    manifest = base_manifest("record", pool, tokenized, data_config, score_config, tokenizer_name)
    manifest.update({"model": proxy, "model_path": model_path, "model_revision": revision(model_path),
                     "training": training, "snapshots": plan})
    return manifest


def record(data: str | Path, proxy: str, out: str | Path, config: RecordConfig | None = None,
           data_config: DataConfig | None = None, score_config: ScoreConfig | None = None,
           tokenizer: str | None = None, device: str | None = None, show_progress: bool = True) -> TrajectoryStore:
    """Fine-tune `proxy` on the pool at `data` and write every example's loss trajectory to `out`."""
    config, data_config, score_config = config or RecordConfig(), data_config or DataConfig(), score_config or ScoreConfig()
    if is_url(out):
        raise InputError("record keeps its resume state beside the store, on a local disk: record into a local "
                         "--out and copy the run to object storage, or score checkpoints there with `s2l score`", out)
    group, device = join(device)
    device = device or default_device()
    # `auto` becomes what runs here before anything is written: the manifest records the choice.
    config = replace(config, precision=resolve_precision(config.precision, device))
    score_config = replace(score_config, dtype=resolve_dtype(score_config.dtype, device))
    model_path = resolve(proxy)
    tok = load_tokenizer(model_path, tokenizer)
    pool, tokenized = prepare_pool(data, tok, data_config)
    trainable = np.array([i for i, t in enumerate(tokenized) if t.n_tokens > 0])
    if len(trainable) == 0:
        raise InputError("no example has a response token left to train on", data)

    manifest = _record_manifest(pool, tokenized, len(trainable), proxy, model_path, tokenizer or proxy, config,
                                data_config, score_config)
    if (note := few_steps_note(len(trainable), config)) and group.is_main:
        log.warning(note)
    plan = manifest["snapshots"]
    # Disk, known up front: the resume state (weights and two AdamW moments, old and new copies briefly),
    # kept checkpoints, and the cells.
    weights = folder_bytes(model_path, "*.safetensors")
    need = (6 * weights if config.resume_state else 0) + (len(plan) * weights if config.keep_checkpoints else 0)
    if group.is_main:
        check_writable(out, need + len(plan) * len(tokenized) * 64, "recording")
    # One writer per run directory: the job's rank 0 holds the lock for all its processes.
    with directory_lock(out) if group.is_main else contextlib.nullcontext():
        store, manifest = _open_store(out, manifest, pool, tokenized, group)
        if manifest.get("complete"):
            if group.is_main:
                log.info(f"{out}: already complete ({len(plan)} snapshots); nothing to do")
            return store

        with make_progress(disable=not show_progress or not group.is_main) as progress:
            run = ProxyRun(store, manifest, model_path, tok, tokenized, trainable, config, score_config, device, group)
            seconds = run.run(progress)
        group.barrier()
        if group.is_main:
            for leftover in store.root.glob("train_state-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            store.update_manifest(complete=True, wall_seconds=round(run.wall_seconds(), 1), seconds=seconds,
                                  process_wall_seconds=round(time.time() - run.started, 1),
                                  processes=group.world)
        group.barrier()  # nobody reads a manifest rank 0 is still writing
        return store


# -- score existing checkpoints -------------------------------------------------------------------------
def _checkpoint_meta(path: Path) -> dict:
    """Step and epoch of a checkpoint folder, from a Trainer's trainer_state.json or a checkpoint-N name."""
    meta = {"path": str(path), "step": None, "epoch": None, "epoch_end": False, "label": path.name}
    state = path / "trainer_state.json"
    if state.is_file():
        info = json.loads(state.read_text())
        meta["step"], meta["epoch"] = info.get("global_step"), info.get("epoch")
    elif match := re.fullmatch(r"checkpoint-(\d+)", path.name):
        meta["step"] = int(match.group(1))
    if meta["epoch"] is not None:
        meta["epoch_end"] = abs(meta["epoch"] - round(meta["epoch"])) < 1e-6
    return meta


@dataclass
class ScoreJob:
    """What scoring checkpoints needs, checked and in step order: shared by every executor."""

    paths: list[str]
    tokenized: list[TokenizedExample]
    pool: Pool
    manifest: dict


def prepare_score(data: str | Path, checkpoints: Sequence[str], data_config: DataConfig, score_config: ScoreConfig,
                  tokenizer: str | None = None) -> ScoreJob:
    if not checkpoints:
        raise InputError("give at least one checkpoint", parameter="checkpoint")
    paths = [resolve(c) for c in checkpoints]
    metas = [_checkpoint_meta(Path(p)) for p in paths]
    # Step order: a shell glob puts checkpoint-1000 before checkpoint-500. Folders without a step keep
    # their place at the front (a base model, typically).
    order = sorted(range(len(metas)), key=lambda i: (-1 if metas[i]["step"] is None else metas[i]["step"], i))
    paths, metas = [paths[i] for i in order], [metas[i] for i in order]
    for m, p in zip(metas, paths):
        m["revision"] = revision(p)
    tok = load_tokenizer(paths[-1], tokenizer)
    pool, tokenized = prepare_pool(data, tok, data_config)
    manifest = base_manifest("score", pool, tokenized, data_config, score_config, tokenizer or paths[-1])
    manifest.update({"model": [str(c) for c in checkpoints], "model_revision": [m["revision"] for m in metas],
                     "training": None, "snapshots": metas})
    return ScoreJob(paths, tokenized, pool, manifest)


def score(data: str | Path, checkpoints: Sequence[str], out: str | Path, data_config: DataConfig | None = None,
          score_config: ScoreConfig | None = None, tokenizer: str | None = None, device: str | None = None,
          show_progress: bool = True) -> TrajectoryStore:
    """Score the pool with each checkpoint (one snapshot each, in step order) into a store at `out`.

    Launched by torchrun or accelerate, the processes share the cells of every snapshot."""
    data_config, score_config = data_config or DataConfig(), score_config or ScoreConfig()
    group, device = join(device)
    device = device or default_device()
    score_config = replace(score_config, dtype=resolve_dtype(score_config.dtype, device))
    job = prepare_score(data, checkpoints, data_config, score_config, tokenizer)
    paths, pool, tokenized, manifest = job.paths, job.pool, job.tokenized, job.manifest
    if group.is_main:
        check_writable(out, len(paths) * len(tokenized) * 64, "scoring")
    # One writer per run directory: the job's rank 0 holds the lock for all its processes.
    with directory_lock(out) if group.is_main else contextlib.nullcontext():
        store, manifest = _open_store(out, manifest, pool, tokenized, group)
        started = time.time()
        scoring_model = ScoringModel(score_config)
        with make_progress(disable=not show_progress or not group.is_main) as progress:
            for k, path in enumerate(paths):
                if not group.my_shards(store.missing_shards(k, manifest["n_shards"])):
                    continue
                model = load_model(path, score_config.dtype, device)
                score_snapshot(model, tokenized, store, k, score_config, progress, group, scoring_model)
                del model
        group.barrier()  # every process's cells are written
        if group.is_main:
            missing = [(k, s) for k in range(len(paths)) for s in store.missing_shards(k, manifest["n_shards"])]
            if missing:
                raise RuntimeError(f"cells {missing[:5]} were not written")  # a bug, not bad input
            store.update_manifest(complete=True, wall_seconds=round(time.time() - started, 1),
                                  processes=group.world)
        group.barrier()  # nobody reads a manifest rank 0 is still writing
        return store
