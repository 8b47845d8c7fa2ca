"""Fine-tune a target model on a (selected) subset: the `train` step of the pipeline.

The run is a transformers `Trainer` whose loss is the proxy's: `token_losses` (the output projection
and cross-entropy only at response positions) averaged over every response token of the batch, on the
examples `prepare_pool` tokenises exactly as `record` does. So the data a proxy saw and the data a
target trains on go through one code path, and the number the target minimises is the number the
trajectories measured.

Defaults follow the S2L and learning-percentage papers: 3 epochs, learning rate 2e-5, cosine schedule
with 3% warm-up, batch 8, max length 512, Alpaca template. Weights are float32 (the master copy);
`bf16-mixed` runs the arithmetic under bfloat16 autocast, as `record` does.

The model is written into a temporary folder beside `out` and renamed into place last, with the
manifest `s2l_train.json` inside it: a folder that has the manifest is a finished training, and a killed
run leaves none.
"""

from __future__ import annotations

import logging
import json
import math
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from s2l import __version__
from s2l.config import TrainConfig
from s2l.data import TokenizedExample, prepare_pool
from s2l.errors import InputError
from s2l.fileio import fault_point, swap_into_place, write_bytes_atomic, write_json_atomic
from s2l.models import default_device, load_model, load_tokenizer, resolve, revision
from s2l.trajectories.scoring import pad_batch, token_losses

log = logging.getLogger(__name__)

MANIFEST = "s2l_train.json"  # written last: its presence marks a finished training
LOSS_LOG = "s2l_train_log.jsonl"  # one line per optimizer step
JOB = "s2l_train_job.json"  # inside the temporary folder: what a resumed run must match
TRAINER_DIR = "trainer"  # the Trainer's own output_dir (checkpoints), inside the temporary folder


# Settings that do not change the trained weights: a finished output made with other values still counts
# as the same training.
_NOT_IN_JOB = ("logging_steps", "resume", "save_steps")


def _import_peft():
    try:
        import peft
    except ImportError:
        raise InputError("LoRA needs peft: pip install 's2l[lora]'", parameter="lora") from None
    return peft


# -- data: the tokenised examples, batched as record batches them ----------------------------------------
class TokenizedDataset(torch.utils.data.Dataset):
    """The examples to train on, as `TokenizedExample`s (the collator pads them)."""

    def __init__(self, examples: Sequence[TokenizedExample]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> TokenizedExample:
        return self.examples[i]


def collate(examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
    """`pad_batch` (right padding) as a dict; the Trainer moves it to the device."""
    input_ids, attention_mask, loss_mask = pad_batch(examples, "cpu")
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


class EpochPermutation(torch.utils.data.Sampler):
    """Epoch e visits the examples in `default_rng([seed, e]).permutation(n)`: record's order, so the
    same data and seed give the same batches in both, independent of any global random state."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by accelerate's data loader at each epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())


def batch_loss(model, batch: dict[str, torch.Tensor], precision: str = "float32",
               n_tokens: int | torch.Tensor | None = None) -> torch.Tensor:
    """record's training loss: token cross-entropy at the response positions, averaged over the batch's
    response tokens (or summed and divided by `n_tokens`, the response tokens of every micro-batch of
    one optimizer step, so gradient accumulation gives the same loss as one large batch)."""
    device_type = batch["input_ids"].device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        token_ce, _ = token_losses(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    return token_ce.mean() if n_tokens is None else token_ce.sum() / n_tokens


def _core_model(model):
    """The transformers model `token_losses` can call: under a PEFT wrapper, the base model with the
    adapter layers injected (PeftModel.base_model is the LoRA tuner, not the transformer)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def _make_trainer_class():
    from transformers import Trainer

    class ResponseLossTrainer(Trainer):
        """A Trainer whose loss is `batch_loss`, and which keeps every optimizer step's loss."""

        # compute_loss already divides by the response tokens of the whole accumulated step.
        loss_is_scaled_for_ga = True

        def __init__(self, *args, precision: str = "float32", sampler_seed: int = 0, **kwargs):
            super().__init__(*args, **kwargs)
            self.precision, self.sampler_seed = precision, sampler_seed
            self.step_losses: dict[int, torch.Tensor] = {}  # optimizer step -> loss (a tensor: no sync per step)
            self.step_lrs: dict[int, float] = {}

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return EpochPermutation(len(dataset), self.sampler_seed)

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            # Count response tokens over all micro-batches of the step (the Trainer only counts `labels`).
            batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
            n_tokens = sum(b["loss_mask"][:, 1:].sum() for b in batches) if batches else None
            return batches, n_tokens

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = batch_loss(_core_model(model), inputs, self.precision, num_items_in_batch)
            return (loss, None) if return_outputs else loss

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            step = self.state.global_step + 1  # the optimizer step this micro-batch belongs to
            self.step_losses[step] = self.step_losses[step] + loss if step in self.step_losses else loss
            if step not in self.step_lrs:
                self.step_lrs[step] = self.lr_scheduler.get_last_lr()[0]  # the rate this step uses
            return loss

    return ResponseLossTrainer


def _line_callback(total_steps: int):
    """One line per logging step, for when there are no live bars (not a terminal)."""
    from transformers import TrainerCallback

    class Lines(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log.info(f"step {state.global_step}/{total_steps}  epoch {state.epoch:.2f}  loss {logs['loss']:.4f}")

    return Lines()


def _fault_callback():
    """A fault point after every optimizer step, for the fault-injection tests (inert otherwise)."""
    from transformers import TrainerCallback

    class FaultPoints(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            fault_point("target training step")

    return FaultPoints()


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


def _device_kwargs(device: str) -> dict:
    kind = torch.device(device)
    if kind.type == "cpu":
        return {"use_cpu": True}
    if kind.type == "cuda" and (kind.index or 0) != 0:
        # The Trainer always takes the first visible GPU.
        raise InputError(f"train runs on the first visible GPU; for {device} set CUDA_VISIBLE_DEVICES={kind.index} "
                         "and pass --device cuda", "--device")
    return {}


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
          show_progress: bool = True, tokenizer: str | None = None, overwrite: bool = False,
          callbacks: Sequence | None = None) -> Path:
    """Fine-tune `model` (registry name, folder or hub id) on the pool at `data`; save it to `out`.

    `out` ends up a plain Hugging Face folder (safetensors weights, tokenizer) with `s2l_train.json` (what
    made it) and `s2l_train_log.jsonl` (the loss of every optimizer step); with LoRA, the adapter is in
    `out/adapter` and, when `save_merged`, the merged model at the top. If `out` already holds a finished
    training of the same data, model and settings, nothing is done. `callbacks`: transformers
    TrainerCallbacks to add (loggers, timers). Returns `out`.
    """
    from transformers import PrinterCallback, TrainingArguments

    config = config or TrainConfig()
    out = Path(out).expanduser()
    finished = _check_out(out, overwrite)
    if config.lora:
        _import_peft()
    device = device or default_device()
    device_kwargs = _device_kwargs(device)

    model_path = resolve(model)
    tok = load_tokenizer(model_path, tokenizer)
    pool, tokenized = prepare_pool(data, tok, config.data)
    trainable = [t for t in tokenized if t.n_tokens > 0]
    excluded = {"duplicate": len(pool.duplicates), "no_response_tokens": len(tokenized) - len(trainable)}
    if excluded["no_response_tokens"]:
        log.warning(f"{excluded['no_response_tokens']} example(s) have no response token after truncation to "
                    f"{config.data.max_length} tokens: left out of training (ids in {MANIFEST})")
    if excluded["duplicate"]:
        log.warning(f"{excluded['duplicate']} duplicate record(s) trained on once")
    if not trainable:
        raise InputError("no example has a response token left to train on", data)

    job = {
        "dataset_fingerprint": pool.fingerprint,
        "model": str(model),
        "model_revision": revision(model_path),
        "tokenizer": str(tokenizer or model),
        "config": {k: v for k, v in asdict(config).items() if k not in _NOT_IN_JOB},
    }
    if finished is not None:
        if finished.get("job") == job and not overwrite:
            log.info(f"{out}: already trained with this data, model and settings; nothing to do")
            return out
        if not overwrite:
            raise InputError("holds a finished training of other data, model or settings; choose another --out "
                             "or pass --overwrite", out)

    batches_per_epoch = math.ceil(len(trainable) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation)  # as the Trainer counts them
    total_steps = steps_per_epoch * config.epochs

    # The temporary folder has a fixed name so that a resumed run finds its checkpoints.
    tmp = out.parent / f".{out.name}.train-tmp"
    args = TrainingArguments(
        output_dir=str(tmp / TRAINER_DIR),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps, rounded up
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        seed=config.seed,
        # bf16-mixed is our own autocast in compute_loss: accelerate's autocast wraps model.forward, which
        # token_losses does not call (it calls the transformer body and the head separately).
        bf16=False,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.resume else "no",
        save_steps=config.save_steps,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=not (show_progress and _interactive()),
        remove_unused_columns=False,  # the batch carries loss_mask, which no model's forward takes
        dataloader_num_workers=0,
        **device_kwargs,
    )
    if args.device.type != torch.device(device).type:
        raise InputError(f"the Trainer chose {args.device}, not {device}", parameter="device")
    if args.world_size > 1:
        # token_losses calls the model's parts, not its forward, which is where DDP syncs gradients.
        raise InputError("train runs in one process; launching it with torchrun or accelerate is not supported", parameter="device")
    if args.n_gpu > 1:
        # Several GPUs in one process: the Trainer would wrap the model in DataParallel and multiply the
        # batch by the GPU count; token_losses calls the model's parts, not its forward, so use one GPU.
        args._n_gpu = 1

    resume_from = None
    if tmp.exists():
        previous = _read_json(tmp / JOB)
        checkpoints = sorted((tmp / TRAINER_DIR).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if config.resume and previous == job and checkpoints:
            resume_from = str(checkpoints[-1])
            log.info(f"resuming an interrupted training at {checkpoints[-1].name}")
        else:
            if checkpoints:
                log.warning("discarding the checkpoints of an interrupted training "
                            + ("of other data, model or settings" if config.resume else "(pass --resume to continue one)"))
            shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    write_json_atomic(tmp / JOB, job)

    started = time.time()
    try:
        torch.manual_seed(config.seed)
        net = load_model(model_path, "float32", str(args.device))  # float32 master weights
        use_cache = net.config.use_cache
        net.config.use_cache = False  # no KV cache while training
        if config.lora:
            net = _add_lora(net, config)
        trainer = _make_trainer_class()(
            model=net, args=args, train_dataset=TokenizedDataset(trainable), data_collator=collate,
            processing_class=tok, precision=config.precision, sampler_seed=config.seed)
        trainer.remove_callback(PrinterCallback)  # it prints raw dicts when the bars are off
        trainer.add_callback(_fault_callback())
        for callback in callbacks or ():
            trainer.add_callback(callback)
        if show_progress and args.disable_tqdm:
            trainer.add_callback(_line_callback(total_steps))
        result = trainer.train(resume_from_checkpoint=resume_from)
        steps = sorted(trainer.step_losses)
        values = torch.stack([trainer.step_losses[s] for s in steps]).tolist() if steps else []  # one transfer
        step_losses = dict(zip(steps, values))

        # Save the final weights (transformers 5 writes safetensors only).
        trained = trainer.model
        saved = "full"
        if config.lora:
            trained.save_pretrained(tmp / "adapter")
            saved = "adapter"
            if config.save_merged:
                trained = trained.merge_and_unload()
                saved = "merged"
        if saved != "adapter":
            trained.config.use_cache = use_cache
            trained.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(tmp / TRAINER_DIR, ignore_errors=True)
        (tmp / JOB).unlink()

        log_lines = [json.dumps({"step": s, "epoch": round(s / steps_per_epoch, 4), "loss": round(v, 6),
                                 "learning_rate": trainer.step_lrs.get(s)}) for s, v in step_losses.items()]
        write_bytes_atomic(tmp / LOSS_LOG, ("\n".join(log_lines) + "\n").encode() if log_lines else b"")
        epoch_means = _epoch_means(step_losses, steps_per_epoch)
        manifest = {
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
            "config": asdict(config),
            "job": job,
            "device": str(args.device),
            "saved": saved,  # full | merged (LoRA merged into the weights; adapter in adapter/) | adapter
            "n_examples": len(pool.examples),
            "n_trained": len(trainable),
            "excluded": excluded,
            "excluded_ids": {"no_response_tokens": [t.example_id for t in tokenized if t.n_tokens == 0][:1000]},
            "truncated_kept": sum(1 for t in trainable if t.truncated),
            "response_tokens": int(sum(t.n_tokens for t in trainable)),
            "steps": int(result.global_step),
            "steps_per_epoch": steps_per_epoch,
            "warmup_steps": args.get_warmup_steps(total_steps),
            "resumed_from_step": int(resume_from.rsplit("-", 1)[-1]) if resume_from else None,
            # Step losses are kept in memory: after a resume they cover only the steps run since.
            "final_train_loss": epoch_means[-1] if epoch_means else None,  # mean step loss over the last epoch
            "last_step_loss": round(step_losses[max(step_losses)], 6) if step_losses else None,
            "epoch_mean_loss": epoch_means,
            "run_mean_loss": round(float(result.training_loss), 6),  # the Trainer's mean over the whole run
            "wall_seconds": round(time.time() - started, 1),
        }
        write_json_atomic(tmp / MANIFEST, manifest)  # last: from here the folder is a finished training
    except BaseException:
        if not config.resume:  # nothing to resume from: leave no temporary folder behind
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_into_place(tmp, out)
    log.info(f"trained {len(trainable)} examples for {manifest['steps']} steps in {manifest['wall_seconds']} s; "
             f"final loss {manifest['final_train_loss']}: {out}")
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
