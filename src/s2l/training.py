"""Fine-tune a target model on a (selected) subset: the `train` step of the pipeline.

The run is `FineTuning`, the loop that record's proxy run uses: the examples `prepare_pool` tokenises as
record does, the same batch order, loss (`token_losses` averaged over every response token of a step),
AdamW, schedule and clipping. So the data a proxy saw and the data a target trains on go through one code
path, and the number the target minimises is the number the trajectories measured. Settings and their
defaults (the papers'): `s2l.config.TrainConfig`.

The model is written into a folder beside `out` (`.OUT.train-tmp`) and swapped into place last, with the
manifest `s2l_train.json` inside it: a folder that has the manifest is a finished training, and a killed
run leaves none. With `resume`, the training state is kept in that folder every `save_steps` steps, and
the same command run again continues from it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from s2l import __version__
from s2l.config import TrainConfig
from s2l.data import prepare_pool
from s2l.data.tokenize import NO_RESPONSE_TOKENS, exclusion_counts
from s2l.errors import InputError
from s2l.fileio import building_directory, fault_point, write_bytes_atomic, write_json_atomic
from s2l.fine_tuning import FineTuning, few_steps_note, latest_state
from s2l.models import default_device, load_model, load_tokenizer, resolve, resolve_precision, revision
from s2l.progress import make_progress

log = logging.getLogger(__name__)

MANIFEST = "s2l_train.json"  # written last: its presence marks a finished training
LOSS_LOG = "s2l_train_log.jsonl"  # one line per optimizer step
JOB = "s2l_train_job.json"  # inside the folder aside: what a resumed run must match

# Settings that do not change the trained weights: a finished output made with other values still counts
# as the same training.
_NOT_IN_JOB = ("logging_steps", "resume", "save_steps")


def _import_peft():
    try:
        import peft
    except ImportError:
        raise InputError("LoRA needs peft: pip install 's2l[lora]'", parameter="lora") from None
    return peft


# -- the output folder ------------------------------------------------------------------------------------
def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == "train" else None


def _check_out(out: Path, overwrite: bool) -> dict | None:
    """The manifest of a finished training already at `out` (None if `out` is absent or empty); refuse
    any other non-empty folder unless `overwrite`. Runs before any work, so a refusal writes nothing."""
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    finished = _read_manifest(out)
    if finished is None and not overwrite:
        raise InputError("folder exists, is not empty and holds no finished s2l training; choose another --out "
                         "or pass --overwrite", out)
    return finished


def _target_modules(text: str):
    text = text.strip()
    return text if text == "all-linear" else [m.strip() for m in text.split(",") if m.strip()]


def _add_lora(model, config: TrainConfig):
    peft = _import_peft()
    lora = peft.LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           target_modules=_target_modules(config.lora_target_modules), task_type="CAUSAL_LM")
    torch.manual_seed(config.seed)  # the adapter's initial A matrices are random
    with warnings.catch_warnings():
        # peft asks the model a question transformers 5 has renamed; nothing for the user to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, lora)


def _epoch_means(step_losses: dict[int, float], steps_per_epoch: int) -> list[float | None]:
    epochs = max(step_losses) // steps_per_epoch + (max(step_losses) % steps_per_epoch > 0) if step_losses else 0
    means = []
    for e in range(epochs):
        values = [v for s, v in step_losses.items() if e * steps_per_epoch < s <= (e + 1) * steps_per_epoch]
        means.append(round(float(np.mean(values)), 6) if values else None)  # None: trained before a resume
    return means


# -- train ------------------------------------------------------------------------------------------------
def train(data: str | Path, model: str, out: str | Path, config: TrainConfig | None = None, device: str | None = None,
          show_progress: bool = True, tokenizer: str | None = None, overwrite: bool = False) -> Path:
    """Fine-tune `model` (registry name, folder or hub id) on the pool at `data`; save it to `out`.

    `out` ends up a plain Hugging Face folder (safetensors weights, tokenizer) with `s2l_train.json` (what
    made it) and `s2l_train_log.jsonl` (the loss of every optimizer step); with LoRA, the adapter is in
    `out/adapter` and, when `save_merged`, the merged model at the top. If `out` already holds a finished
    training of the same data, model and settings, nothing is done. Returns `out`.
    """
    import os

    config = config or TrainConfig()
    out = Path(out).expanduser()
    finished = _check_out(out, overwrite)
    if config.lora:
        _import_peft()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("train runs in one process; launching it with torchrun or accelerate is not supported",
                         parameter="device")
    device = device or default_device()
    config = replace(config, precision=resolve_precision(config.precision, device))
    model_path = resolve(model)
    tok = load_tokenizer(model_path, tokenizer)
    pool, tokenized = prepare_pool(data, tok, config.data)
    trainable, excluded = _trainable(data, pool, tokenized, config.data.max_length)
    if note := few_steps_note(len(trainable), config):
        log.warning(note)

    job = {"dataset_fingerprint": pool.fingerprint, "model": str(model), "model_revision": revision(model_path),
           "tokenizer": str(tokenizer or model), "config": _job_config(config, pool.format)}
    if finished is not None:
        if finished.get("job") == job and not overwrite:
            log.info(f"{out}: already trained with this data, model and settings; nothing to do")
            return out
        if not overwrite:
            raise InputError("holds a finished training of other data, model or settings; choose another --out "
                             "or pass --overwrite", out)

    aside = aside_folder(out)
    resume_from = _state_to_resume(aside, job, config)
    started = time.time()
    with building_directory(out, name=aside.name, keep_on_error=config.resume) as tmp:
        write_json_atomic(tmp / JOB, job)
        torch.manual_seed(config.seed)
        net = load_model(model_path, "float32", device)  # float32 master weights
        use_cache = net.config.use_cache
        net.config.use_cache = False  # no KV cache while training
        if config.lora:
            net = _add_lora(net, config)
        tuning = FineTuning(net, trainable, config, device, schedule=config.lr_scheduler)
        history = _fit(tuning, tmp, resume_from, show_progress, started)
        saved = _save_model(tuning.trained_model(), tok, tmp, config, use_cache)
        for leftover in [tmp / JOB, *tmp.glob("train_state-*")]:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        manifest = _manifest(data, model, model_path, pool, tokenized, trainable, excluded, job, config, device,
                             tuning, history, saved, started)
        write_bytes_atomic(tmp / LOSS_LOG, _loss_log(history, tuning.steps_per_epoch))
        write_json_atomic(tmp / MANIFEST, manifest)  # last: from here the folder is a finished training
    log.info(f"trained {len(trainable)} examples for {manifest['steps']} steps in {manifest['wall_seconds']} s; "
             f"final loss {manifest['final_train_loss']}: {out}")
    return out


def _job_config(config: TrainConfig, format: str) -> dict:
    """The settings that make the weights what they are (a finished or interrupted training must match them)."""
    job = {k: v for k, v in asdict(config).items() if k not in _NOT_IN_JOB}
    job["data"].pop("strict")  # refuses a pool or trains exactly as without it
    # Where they are not used, as trainings made before the options: a finished one is still found finished.
    fields = job["data"].pop("fields")
    if fields:
        job["data"]["fields"] = config.data.field_map  # as JSON keeps it
    if job["data"].get("dataset_config") is None:
        job["data"].pop("dataset_config")
    if format == "chat" or config.data.boundary == "characters":
        # Chat masks by characters whatever the option says: what trainings made before the option used.
        job["data"].pop("boundary")
    return job


def _trainable(data, pool, tokenized, max_length: int) -> tuple[list, dict]:
    """The examples with a response token to train on, and what was left out (counted and said)."""
    trainable = [t for t in tokenized if t.n_tokens > 0]
    counts = exclusion_counts(tokenized)  # no_response_tokens, and empty_response etc. where there are any
    excluded = {"duplicate": len(pool.duplicates), "no_response_tokens": counts.pop(NO_RESPONSE_TOKENS, 0), **counts}
    if excluded["no_response_tokens"]:
        log.warning(f"{excluded['no_response_tokens']} example(s) have no response token after truncation to "
                    f"{max_length} tokens: left out of training (ids in {MANIFEST})")
    for reason in counts:
        log.warning(f"{counts[reason]} example(s) excluded: {reason.replace('_', ' ')}; left out of training "
                    f"(ids in {MANIFEST}; --strict refuses them)")
    if excluded["duplicate"]:
        log.warning(f"{excluded['duplicate']} duplicate record(s) trained on once")
    if not trainable:
        raise InputError("no example has a response token left to train on", data)
    return trainable, excluded


def aside_folder(out: Path) -> Path:
    """Where a training into `out` is built, and where an interrupted one keeps its state: a fixed name, so that
    a resumed run finds it."""
    return out.with_name(f".{out.name}.train-tmp")


def saved_step(out: Path) -> int | None:
    """The step an interrupted training into `out` saved its state at, if it did."""
    aside = aside_folder(out)
    state = latest_state(aside) if (aside / JOB).is_file() else None
    return None if state is None else _step_of(state)


def _step_of(state: Path) -> int:
    return int(state.name.rsplit("-", 1)[-1])  # the state's folder is named after its step


def _state_to_resume(aside: Path, job: dict, config: TrainConfig) -> Path | None:
    """The training state an interrupted run of the same job left in the folder aside; anything else there
    is discarded."""
    if not aside.exists():
        return None
    state = latest_state(aside)
    if config.resume and _read_json(aside / JOB) == job and state is not None:
        log.info(f"resuming an interrupted training at step {_step_of(state)}")
        return state
    if state is not None:
        log.warning("discarding the state of an interrupted training "
                    + ("of other data, model or settings" if config.resume else "(pass --resume to continue one)"))
    shutil.rmtree(aside)
    return None


def _fit(tuning: FineTuning, folder: Path, resume_from: Path | None, show_progress: bool, started: float) -> dict:
    """Train to the last step (from a saved state, if given), keeping every step's loss and learning rate;
    with `resume`, save the state every `save_steps`. Returns the history.

    The times are the whole training's: a saved state keeps the seconds spent up to it (`started`: when this
    process began), so a resumed training reports what an uninterrupted one would, plus its restarts."""
    config = tuning.config
    history = {"losses": {}, "rates": {}, "resumed_from": None, "training_seconds": 0.0, "earlier_wall_seconds": 0.0}
    if resume_from is not None:
        saved = tuning.load_state(resume_from)
        history["resumed_from"] = tuning.step
        history["losses"] = {int(k): v for k, v in saved.get("losses", {}).items()}
        history["rates"] = {int(k): v for k, v in saved.get("rates", {}).items()}
        history["training_seconds"] = saved.get("training_seconds", 0.0)  # states saved before the times were kept: 0
        history["earlier_wall_seconds"] = saved.get("wall_seconds", 0.0)
    pending: dict[int, torch.Tensor] = {}  # losses still on the device: read in one go, no wait per step
    with make_progress(disable=not show_progress) as progress:
        task = progress.add_task("training", total=tuning.total_steps, completed=tuning.step, info="")
        tuning.model.train()
        while tuning.step < tuning.total_steps:
            clock, step = time.perf_counter(), tuning.step + 1
            history["rates"][step] = tuning.scheduler.get_last_lr()[0]  # the rate this step uses
            pending[step] = tuning.train_step()
            history["training_seconds"] += time.perf_counter() - clock
            fault_point("target training step")
            progress.update(task, completed=tuning.step, info=f"epoch {tuning.step / tuning.steps_per_epoch:.2f}")
            done = tuning.step == tuning.total_steps
            if tuning.step % config.logging_steps == 0 or done or (config.resume and tuning.step % config.save_steps == 0):
                history["losses"].update(zip(pending, torch.stack(list(pending.values())).tolist()))
                pending.clear()  # (read every logging_steps: one wait for the device, not one per step)
            if show_progress and progress.disable and tuning.step % config.logging_steps == 0:
                recent = [history["losses"][s] for s in range(tuning.step - config.logging_steps + 1, tuning.step + 1)
                          if s in history["losses"]]
                log.info(f"step {tuning.step}/{tuning.total_steps}  epoch {tuning.step / tuning.steps_per_epoch:.2f}  "
                         f"loss {np.mean(recent):.4f}")
            if config.resume and tuning.step % config.save_steps == 0 and not done:
                wall = history["earlier_wall_seconds"] + time.time() - started
                tuning.save_state(folder, extra={"losses": history["losses"], "rates": history["rates"],
                                                 "training_seconds": history["training_seconds"], "wall_seconds": wall})
    return history


def _save_model(trained, tokenizer, folder: Path, config: TrainConfig, use_cache: bool) -> str:
    """Write the final weights (safetensors) and tokenizer; returns what was saved: full, merged or adapter."""
    saved = "full"
    if config.lora:
        trained.save_pretrained(folder / "adapter")
        saved = "adapter"
        if config.save_merged:
            trained = trained.merge_and_unload()
            saved = "merged"
    if saved != "adapter":
        trained.config.use_cache = use_cache
        trained.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return saved


def _loss_log(history: dict, steps_per_epoch: int) -> bytes:
    lines = [json.dumps({"step": s, "epoch": round(s / steps_per_epoch, 4), "loss": round(v, 6),
                         "learning_rate": history["rates"].get(s)}) for s, v in sorted(history["losses"].items())]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _manifest(data, model, model_path, pool, tokenized, trainable, excluded, job, config, device, tuning, history,
              saved, started) -> dict:
    losses = history["losses"]
    epoch_means = _epoch_means(losses, tuning.steps_per_epoch)
    return {
        "kind": "train",
        "s2l_version": __version__,
        "torch_version": torch.__version__,
        "transformers_version": _version("transformers"),
        "peft_version": _version("peft") if config.lora else None,
        "data": str(data),
        "dataset": pool.summary(),
        "dataset_fingerprint": pool.fingerprint,
        "model": str(model),
        "model_path": model_path,
        "model_revision": job["model_revision"],
        "tokenizer": job["tokenizer"],
        "config": json.loads(json.dumps(asdict(config))),  # tuples as the lists JSON gives back
        "job": job,
        "device": str(device),
        "saved": saved,  # full | merged (LoRA merged into the weights; adapter in adapter/) | adapter
        "n_examples": len(pool.examples),
        "n_trained": len(trainable),
        "excluded": excluded,
        "excluded_ids": {reason: [t.example_id for t in tokenized if t.exclusion == reason][:1000]
                         for reason in excluded if reason != "duplicate"},
        "truncated_kept": sum(1 for t in trainable if t.truncated),
        "response_tokens": int(sum(t.n_tokens for t in trainable)),
        "input_tokens": int(sum(len(t.input_ids) for t in trainable)),  # per epoch: the training's cost is 6 x params x this x epochs
        "steps": tuning.step,
        "steps_per_epoch": tuning.steps_per_epoch,
        "warmup_steps": tuning.warmup_steps,
        "resumed_from_step": history["resumed_from"],
        "final_train_loss": epoch_means[-1] if epoch_means else None,  # mean step loss over the last epoch
        "last_step_loss": round(losses[max(losses)], 6) if losses else None,
        "epoch_mean_loss": epoch_means,
        "run_mean_loss": round(float(np.mean(list(losses.values()))), 6) if losses else None,
        # Over every process of a resumed training: earlier ones up to the state this one resumed from.
        "wall_seconds": round(history["earlier_wall_seconds"] + time.time() - started, 1),
        "process_wall_seconds": round(time.time() - started, 1),
        "seconds": {"training": round(history["training_seconds"], 3)},  # in optimizer steps
    }


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
