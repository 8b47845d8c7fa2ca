"""The one fine-tuning loop: what record's proxy run and train's target run share.

Both papers fine-tune with AdamW, a schedule with warm-up (cosine), 3 epochs; `OptimizationConfig` holds
those settings. Here they become one `FineTuning`: the model, its optimizer and schedule, and the step
the run has reached. Its pieces:

- batch order: epoch e visits the examples in `default_rng([seed, e]).permutation(n)`, cut into
  optimizer steps of `batch_size` (the last of an epoch may have fewer), each split into micro-batches of
  `micro_batch_size` whose gradients add up;
- loss: `token_losses` (the vocabulary projection and cross-entropy only at response positions), averaged
  over every response token of the step, so accumulated micro-batches and processes give the one-batch
  loss up to summation order;
- precision: float32 weights, the arithmetic under bfloat16 autocast for `bf16-mixed`; for `bf16-master`
  bfloat16 weights in the model and a float32 copy of each (`MasterWeights`) that AdamW updates, each
  micro-batch's bf16 gradients added into the copies' float32 gradients, the new values cast back after
  every step;
- the vocabulary projection and cross-entropy chunked forward and backward (`chunked_loss`,
  `trajectories.head_loss`), the transformer body compiled (`compile_training`);
- processes (torchrun): each takes an interleaved slice of every micro-batch; gradients are summed in one
  flat all-reduce (FSDP reduces its own);
- state: weights, AdamW moments, schedule and RNG saved in one folder, so a run resumes bit for bit.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.profiler import record_function

from s2l.config import OptimizationConfig
from s2l.data import TokenizedExample
from s2l.distributed import ProcessGroup, is_sharded, load_full_state
from s2l.errors import InputError
from s2l.fileio import write_json_atomic
from s2l.models import resolve_precision
from s2l.trajectories.scoring import pad_batch, token_losses

# Weights that AdamW's decay leaves alone (as transformers' Trainer does): biases and normalisation scales.
NO_DECAY = ("bias", "norm")


def step_counts(n_examples: int, config: OptimizationConfig) -> tuple[int, int, int]:
    """(optimizer steps per epoch, steps in all, warm-up steps) for `n_examples`."""
    per_epoch = math.ceil(n_examples / config.batch_size)
    total = per_epoch * config.epochs
    return per_epoch, total, math.ceil(config.warmup_ratio * total)


FEW_STEPS = 50  # below this many optimizer steps in all, a run hardly follows a schedule: say so


def few_steps_note(n_examples: int, config: OptimizationConfig) -> str | None:
    """A note when `n_examples` in batches of `batch_size` give fewer than FEW_STEPS optimizer steps, with the
    largest power-of-two batch that would give enough; None otherwise."""
    _, total, _ = step_counts(n_examples, config)
    if total >= FEW_STEPS:
        return None
    enough = [b for b in (2 ** k for k in range(16)) if math.ceil(n_examples / b) * config.epochs >= FEW_STEPS]
    suggestion = f"; --batch-size {max(enough)} would give {math.ceil(n_examples / max(enough)) * config.epochs}" \
        if enough and max(enough) < config.batch_size else ""
    return (f"{n_examples} examples in batches of {config.batch_size} give only {total} optimizer step(s) over "
            f"{config.epochs} epoch(s){suggestion} (the papers' batch of 128 is meant for pools of many thousands)")


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order in which epoch `epoch` visits `n` examples: the same for record and train."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def make_optimizer(model: torch.nn.Module, config: OptimizationConfig,
                   named: list[tuple[str, torch.Tensor]] | None = None) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters (or over `named`, their float32 masters)."""
    if named is None:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if config.weight_decay:
        decays = lambda name: not any(part in name.lower() for part in NO_DECAY)  # noqa: E731
        params = [{"params": [p for n, p in named if decays(n)], "weight_decay": config.weight_decay},
                  {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}]
    else:
        params = [p for _, p in named]
    fused = {"fused": True} if config.optim == "adamw_torch_fused" else {}
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, **fused)


def core_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model `token_losses` can call: under a PEFT wrapper, the base model with the
    adapter layers injected (PeftModel.base_model is the LoRA tuner, not the transformer)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


class MasterWeights:
    """`bf16-master`: the model's trainable parameters become bfloat16 (what the passes compute with, no
    autocast casts), and a float32 copy of each is what AdamW updates. Buffers (rotary frequencies) stay
    as they are."""

    def __init__(self, model: torch.nn.Module):
        self.pairs: list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]] = []
        for name, p in model.named_parameters():  # a tied weight once
            if p.requires_grad:
                self.pairs.append((name, p, torch.nn.Parameter(p.detach().float().clone())))
        for p in model.parameters():
            if p.is_floating_point():
                p.data = p.data.to(torch.bfloat16)

    @property
    def named(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(name, master) for name, _, master in self.pairs]

    def take_gradients(self) -> None:
        """Add the model's (bf16) gradients into the masters' float32 ones, and clear them."""
        for _, p, master in self.pairs:
            if p.grad is not None:
                if master.grad is None:
                    master.grad = p.grad.float()
                else:
                    master.grad.add_(p.grad)
                p.grad = None

    @torch.no_grad()
    def copy_back(self) -> None:
        for _, p, master in self.pairs:
            p.copy_(master)

    @torch.no_grad()
    def restore_float32(self) -> None:
        """Give the model its float32 weights back (to save or use it after training)."""
        for _, p, master in self.pairs:
            p.data = master.data.clone()


def _sum_gradients(params: list[torch.Tensor], group: ProcessGroup) -> None:
    """Sum every parameter's gradient over the processes, in one flat all-reduce (a parameter a process's
    slice did not reach counts as zero there)."""
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    group.all_reduce_sum(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


# Called after each micro-batch's forward pass with (example positions, token losses, their batch rows).
OnForward = Callable[[np.ndarray, torch.Tensor, torch.Tensor], None]


class FineTuning:
    """A model, its AdamW and schedule, and the optimizer step a run over `examples` has reached."""

    def __init__(self, model: torch.nn.Module, examples: Sequence[TokenizedExample], config: OptimizationConfig,
                 device: str, schedule: str = "cosine", group: ProcessGroup = ProcessGroup(), sharded: bool = False):
        from transformers import get_scheduler

        # `auto` resolved here too, so a caller that passes the default config does not train in float32 unawares.
        config = replace(config, precision=resolve_precision(config.precision, device))
        self.model, self.examples, self.config, self.device = model, examples, config, device
        self.group, self.sharded = group, sharded
        self.steps_per_epoch, self.total_steps, self.warmup_steps = step_counts(len(examples), config)
        self.master: MasterWeights | None = None
        if config.precision == "bf16-master":
            if sharded:
                raise InputError("bf16-master is not available with FSDP (use bf16-mixed)", parameter="precision")
            self.master = MasterWeights(model)
        self.optimizer = make_optimizer(model, config, self.master.named if self.master else None)
        self.scheduler = get_scheduler(schedule, self.optimizer, self.warmup_steps, self.total_steps)
        self.step = 0
        self._response_tokens = np.array([e.n_tokens for e in examples], dtype=np.int64)
        self._order: tuple[int, np.ndarray] | None = None
        self._autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                                        enabled=config.precision == "bf16-mixed")
        # A compiled wrapper of the transformer body, used by training only (scoring calls the module itself).
        self.body = torch.compile(core_model(model).base_model, dynamic=True) if config.compile_training else None

    @property
    def epoch(self) -> int:
        """The epoch the next step belongs to (0-based)."""
        return self.step // self.steps_per_epoch

    def micro_batches(self, step: int) -> list[np.ndarray]:
        """The example positions of each micro-batch of optimizer step `step`."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:  # drawn once per epoch (millions take a while)
            self._order = (epoch, epoch_order(self.config.seed, epoch, len(self.examples)))
        batch = self._order[1][within * self.config.batch_size:(within + 1) * self.config.batch_size]
        size = self.config.micro_batch_size
        return [batch[start:start + size] for start in range(0, len(batch), size)]

    def train_step(self, on_forward: OnForward | None = None) -> torch.Tensor:
        """One optimizer step; returns its loss (detached, on the device: reading it waits for the device)."""
        batches, group = self.micro_batches(self.step), self.group
        one_batch = len(batches) == 1 and group.world == 1
        step_tokens = int(sum(self._response_tokens[m].sum() for m in batches))
        total = torch.zeros((), device=self.device)
        for members in batches:
            idle = False
            if group.world > 1:
                whole, members = members, members[group.rank::group.world]
                # Fewer examples than processes: under FSDP every process still takes part in each layer's
                # gathering, so an idle one runs an example it then weighs 0.
                idle = len(members) == 0
                if idle and self.sharded:
                    members = whole[:1]
            # The gradient each token's loss gets (the chunked loss makes the vocabulary's gradients in the forward
            # pass when it knows it).
            scale = 1.0 / int(self._response_tokens[members].sum()) if one_batch else 1.0 / step_tokens
            token_ce, rows = self._forward(members, scale * (group.world if self.sharded else 1))
            if one_batch:
                loss = token_ce.mean()  # mean over the batch's response tokens, as transformers' loss
            else:  # this micro-batch's (and process's) share of the step's mean
                loss = token_ce.sum() / step_tokens * (0.0 if idle else 1.0)
                if self.sharded:  # FSDP averages the gradients over processes; a share times their number sums
                    loss = loss * group.world
            if on_forward is not None and not idle:
                on_forward(members, token_ce.detach(), rows)
            if loss.requires_grad:
                with record_function("backward"):
                    loss.backward()
            if self.master is not None:
                with record_function("master gradients"):
                    self.master.take_gradients()
            total += loss.detach()
        params = [m for _, m in self.master.named] if self.master else \
            [p for p in self.model.parameters() if p.requires_grad]
        if group.world > 1:
            if not self.sharded:
                _sum_gradients(params, group)
            total = group.all_reduce_sum(total.clone()) / (group.world if self.sharded else 1)
        with record_function("update"):
            if self.config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            if self.master is not None:
                self.master.copy_back()
        with record_function("zero gradients"):
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total

    def trained_model(self) -> torch.nn.Module:
        """The model to save when training is over: with bf16-master, given its float32 weights back."""
        if self.master is not None:
            self.master.restore_float32()
        return self.model

    def _forward(self, members: np.ndarray, grad_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not len(members):  # an idle process (see train_step)
            return torch.zeros(0, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        input_ids, attention, loss_mask = pad_batch([self.examples[i] for i in members], self.device)
        with self._autocast, record_function("forward"):
            return token_losses(core_model(self.model), input_ids, attention, loss_mask,
                                chunked=self.config.chunked_loss, body=self.body, grad_scale=grad_scale)

    # -- state, for resuming -------------------------------------------------------------------------------
    def save_state(self, root: Path, gathered: tuple | None = None, extra: dict | None = None) -> None:
        """Write `root/train_state-STEP` whole (built aside, then renamed), then delete older ones.
        `gathered`: a sharded model's full_state, saved whole (so a run may resume on another process
        count). `extra`: JSON-ready values to keep with the state (read back by `load_state`)."""
        from safetensors.torch import save_model

        folder = root / f"train_state-{self.step:07d}"
        tmp = root / f".train_state-{self.step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.master is not None:  # the float32 weights (the model holds their bf16 rounding)
            from safetensors.torch import save_file

            save_file({name: m.detach() for name, m in self.master.named}, str(tmp / "master.safetensors"))
            optimizer_state = self.optimizer.state_dict()
        elif gathered is None:
            save_model(self.model, str(tmp / "model.safetensors"))
            optimizer_state = self.optimizer.state_dict()
        else:
            weights, optimizer_state = gathered
            torch.save(weights, tmp / "model.pt")
        torch.save({"optimizer": optimizer_state, "scheduler": self.scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        write_json_atomic(tmp / "state.json", {"step": self.step, **(extra or {})})
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        for older in root.glob("train_state-*"):
            if older != folder:
                shutil.rmtree(older, ignore_errors=True)

    def load_state(self, folder: Path) -> dict:
        """Continue from a saved state; returns what was saved with it (`step` and the `extra` values)."""
        from safetensors.torch import load_model as load_weights

        # Our own files, but loaded as data only all the same.
        state = torch.load(folder / "optimizer.pt", weights_only=True)
        if self.master is not None:
            from safetensors.torch import load_file

            saved_weights = load_file(str(folder / "master.safetensors"))
            with torch.no_grad():
                for name, m in self.master.named:
                    m.copy_(saved_weights[name])
            self.master.copy_back()
            self.optimizer.load_state_dict(state["optimizer"])
        elif is_sharded(self.model):
            load_full_state(self.model, self.optimizer, torch.load(folder / "model.pt", weights_only=True),
                            state["optimizer"])
        else:
            load_weights(self.model, str(folder / "model.safetensors"))
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        saved = json.loads((folder / "state.json").read_text())
        self.step = saved["step"]
        return saved


def latest_state(root: Path) -> Path | None:
    """The newest complete `train_state-*` folder under `root`, if any."""
    done = sorted(p for p in root.glob("train_state-*") if (p / "state.json").is_file())
    return done[-1] if done else None
