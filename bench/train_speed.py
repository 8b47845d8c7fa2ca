#!/usr/bin/env python
"""Training speed of s2l's one training core against a plain transformers Trainer and against its previous
step, per model, in one process, with the bf16 matmul peak measured in that process.

Three variants train on the same examples in the same batch order (epoch 0's permutation), fused AdamW,
lr 2e-5, cosine, gradient clipping 1.0:

  trainer    a plain `transformers.Trainer`, batch 8, bf16 autocast: `model(input_ids, labels=...)` with the
             prompt labelled -100, so the vocabulary projection and the cross-entropy run at every position;
  previous   `s2l.fine_tuning.FineTuning` with the issue-16 options off (batch 8 in one forward pass, bf16
             autocast over float32 weights, the plain response-position loss): the step before this work;
  new        `FineTuning` at the new default: an effective batch of --batch-size (128) in micro-batches of
             --micro-batch-size (8), with TrainConfig's defaults for the options (chunked loss, precision,
             compile) unless --precision / --compile / --no-chunked-loss say otherwise.

Each round loads a fresh model per variant and trains all the examples once (loading is not timed); rounds
alternate the variants so load from other processes falls on all alike, and the first round is a warm-up
(it holds the compile time with --compile). Between variants the square-matmul peak is sampled
(common.MatmulPeak); model FLOPs are 6 x body parameters x input tokens + 6 x head parameters x response
tokens (the work the loss needs; the Trainer does more), so GFLOP/s over the bf16 peak is a model-FLOPs
utilisation. Peak RSS is the process's high-water mark during the variant (VmHWM, reset before each
through /proc/self/clear_refs), which includes what the allocator kept from earlier variants.

`--record-memory N` also runs `bench/record_memory.py` in a child process: `s2l record` on SmolLM2 with
the defaults, N examples, for `peak_rss_gib_record_smollm2`. `--profile` prints a per-phase profile of one
training step of each model instead (torch.profiler). The last line of stdout is one JSON object.

    python bench/train_speed.py --record-memory 256 --out-json runs/bench/train.json
    python bench/train_speed.py --models gemma-3-270m --profile
    python bench/train_speed.py --models smollm2-135m-instruct --examples 16 --batch-size 16 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import CpuShare, MatmulPeak, emit, math_pool

SHORT = {"smollm2-135m-instruct": "smollm2", "gemma-3-270m": "gemma"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m", help="comma-separated packaged names or folders")
    p.add_argument("--examples", type=int, default=128, help="examples each variant trains per round (default: 128)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the first is a warm-up (default: 3)")
    p.add_argument("--batch-size", type=int, default=128, help="the new default's effective batch (default: 128)")
    p.add_argument("--micro-batch-size", type=int, default=8, help="the new default's micro-batch (default: 8)")
    p.add_argument("--old-batch-size", type=int, default=8, help="the Trainer's and the previous step's batch (default: 8)")
    p.add_argument("--precision", default=None, help="the new variant's precision (default: TrainConfig's)")
    p.add_argument("--baseline-precision", default="bf16-mixed", choices=("bf16-mixed", "float32"),
                   help="the Trainer's and the previous step's arithmetic (default: bf16-mixed, as before this work; "
                        "float32 where the CPU has no bfloat16 hardware, whose emulation is ~100x slower)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="the new variant's compile_training (default: TrainConfig's)")
    p.add_argument("--chunked-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="the new variant's chunked_loss (default: TrainConfig's)")
    p.add_argument("--variants", default="trainer,previous,new")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--peak-repeats", type=int, default=9, help="square-matmul samples per size (default: 9)")
    p.add_argument("--peak-sizes", default="1024,2048,4096")
    p.add_argument("--record-memory", type=int, default=0, metavar="N",
                   help="also measure `record`'s peak RSS on SmolLM2 with N examples in a child process (0: skip)")
    p.add_argument("--profile", action="store_true", help="print a per-phase profile of one step of each model instead")
    p.add_argument("--profile-batch", type=int, default=16, help="examples in the profiled step (default: 16)")
    p.add_argument("--out-json")
    return p.parse_args(argv)


# -- memory ---------------------------------------------------------------------------------------------
def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


# -- the variants ---------------------------------------------------------------------------------------
def load(model_path: str):
    from s2l.models import load_model

    torch.manual_seed(0)
    model = load_model(model_path, "float32", "cpu")
    model.config.use_cache = False
    return model


def configs(args):
    from s2l.config import TrainConfig

    previous = TrainConfig(epochs=1, batch_size=args.old_batch_size, micro_batch_size=args.old_batch_size,
                           learning_rate=args.lr, precision=args.baseline_precision, chunked_loss=False,
                           compile_training=False)
    new = {k: v for k, v in (("precision", args.precision), ("compile_training", args.compile),
                             ("chunked_loss", args.chunked_loss)) if v is not None}
    return previous, TrainConfig(epochs=1, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                                 learning_rate=args.lr, **new)


def fine_tuning_seconds(model_path: str, tokenized, config) -> tuple[float, list[float]]:
    """Seconds of FineTuning's optimizer steps over all of `tokenized` once, and its step losses."""
    from s2l.fine_tuning import FineTuning

    tuning = FineTuning(load(model_path), tokenized, config, "cpu")
    tuning.model.train()
    seconds, losses = 0.0, []
    while tuning.step < tuning.total_steps:
        start = time.perf_counter()
        loss = tuning.train_step().item()
        seconds += time.perf_counter() - start
        losses.append(loss)
    return seconds, losses


def trainer_seconds(model_path: str, tokenized, args, work: Path) -> float:
    """Seconds of a plain Trainer's optimizer steps over `tokenized`, one epoch, s2l's batch order."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from s2l.fine_tuning import epoch_order

    class StepTimer(TrainerCallback):
        seconds = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            StepTimer.seconds += time.perf_counter() - self._started

    class FirstEpochOrder(torch.utils.data.Sampler):
        def __init__(self, n: int):
            self.n = n

        def __len__(self) -> int:
            return self.n

        def __iter__(self):
            return iter(epoch_order(0, 0, self.n).tolist())

    class SameOrder(Trainer):  # only the order differs from a stock Trainer (so the batches match)
        def _get_train_sampler(self, train_dataset=None):
            return FirstEpochOrder(len(self.train_dataset))

    rows = [{"input_ids": e.input_ids, "labels": [t if m else -100 for t, m in zip(e.input_ids, e.loss_mask)]}
            for e in tokenized]

    def collate(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n], labels[i, :n], attention[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": attention}

    training_args = TrainingArguments(
        output_dir=str(work / "trainer"), num_train_epochs=1, per_device_train_batch_size=args.old_batch_size,
        learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0.03, max_grad_norm=1.0,
        bf16=args.baseline_precision == "bf16-mixed",
        use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no",
        dataloader_num_workers=0, seed=0, remove_unused_columns=False)
    StepTimer.seconds = 0.0
    SameOrder(model=load(model_path), args=training_args, train_dataset=rows, data_collator=collate,
              callbacks=[StepTimer()]).train()
    return StepTimer.seconds


def model_flops(model_path: str, tokenized) -> float:
    """6 x body parameters x input tokens + 6 x head parameters x response tokens."""
    model = load(model_path)
    head = model.get_output_embeddings().weight.numel()
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    body = sum(p.numel() for p in model.parameters()) - embedding - (0 if tied else head)
    return 6 * body * sum(len(t) for t in tokenized) + 6 * head * sum(t.n_tokens for t in tokenized)


# -- one model ------------------------------------------------------------------------------------------
def examples_of(model_path: str, n: int, work: Path):
    from s2l.data import load_pool, tokenize_examples
    from s2l.models import load_tokenizer

    pool = load_pool(math_pool(work / "data", n, test_size=5))
    tokenized = [t for t in tokenize_examples(load_tokenizer(model_path), pool.examples) if t.n_tokens > 0][:n]
    return tokenized


def bench_model(name: str, args, peak: MatmulPeak, work: Path) -> dict:
    from s2l.models import resolve

    model_path = resolve(name)
    tokenized = examples_of(model_path, args.examples, work)
    tokens, response = sum(len(t) for t in tokenized), sum(t.n_tokens for t in tokenized)
    print(f"{name}: {len(tokenized)} examples, {tokens} input tokens ({tokens / len(tokenized):.0f} per example, "
          f"{response / len(tokenized):.0f} response) per variant and round", flush=True)
    previous, new = configs(args)
    wanted = args.variants.split(",")
    run = {"trainer": lambda: (trainer_seconds(model_path, tokenized, args, work), None),
           "previous": lambda: fine_tuning_seconds(model_path, tokenized, previous),
           "new": lambda: fine_tuning_seconds(model_path, tokenized, new)}
    seconds = {v: [] for v in wanted}
    rss = {v: 0.0 for v in wanted}
    losses = {}
    per_round = -(-args.peak_repeats // max(1, args.rounds * len(wanted)))
    for r in range(args.rounds):
        for v in wanted:
            reset_peak_rss()
            s, step_losses = run[v]()
            rss[v] = max(rss[v], peak_rss_gib())
            seconds[v].append(s)
            losses[v] = step_losses
            print(f"  round {r}: {v:<8} {s:7.2f} s ({tokens / s:6.0f} tok/s, peak RSS {peak_rss_gib():.2f} GiB)", flush=True)
            for _ in range(per_round):
                peak.sample()
    flops = model_flops(model_path, tokenized)
    counted = {v: s[1:] if len(s) > 1 else s for v, s in seconds.items()}
    median = {v: float(np.median(s)) for v, s in counted.items()}
    return {"model": name, "model_path": model_path, "examples": len(tokenized), "tokens": tokens,
            "response_tokens": response, "model_gflop": flops / 1e9, "seconds": median, "rounds": seconds,
            "tokens_per_second": {v: tokens / s for v, s in median.items()},
            "gflops": {v: flops / s / 1e9 for v, s in median.items()}, "peak_rss_gib": rss,
            "compile_seconds": (seconds["new"][0] - median["new"]) if "new" in seconds and new.compile_training
            and len(seconds["new"]) > 1 else None,
            "new_config": {"batch_size": new.batch_size, "micro_batch_size": new.micro_batch_size,
                           "precision": new.precision, "chunked_loss": new.chunked_loss,
                           "compile_training": new.compile_training},
            "step_losses": losses}


def record_memory(n: int) -> float | None:
    script = Path(__file__).with_name("record_memory.py")
    out = subprocess.run([sys.executable, str(script), "--examples", str(n)], capture_output=True, text=True)
    if out.returncode:
        print(f"record_memory.py failed:\n{out.stderr[-2000:]}", flush=True)
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"record (SmolLM2, {n} examples, defaults): peak RSS {result['peak_rss_gib']:.2f} GiB; by phase "
          f"{result['phase_peak_rss_gib']}", flush=True)
    return result["peak_rss_gib"]


# -- the profile ----------------------------------------------------------------------------------------
PHASES = ("forward", "vocab projection", "backward", "vocab projection backward", "master gradients", "update",
          "zero gradients")
OP_GROUPS = {  # self CPU time of aten ops, grouped
    "matmuls": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul"),
    "attention backward": ("attention_backward", "flash_attention_for_cpu_backward", "efficient_attention_backward"),
    "attention forward": ("scaled_dot_product", "flash_attention_for_cpu"),
    "embedding gradient": ("embedding_dense_backward", "embedding_backward"),
    "dtype casts": ("aten::_to_copy", "aten::copy_", "aten::to"),
    "zeroing": ("aten::zero_", "aten::fill_", "aten::zeros"),
    "softmax / cross-entropy": ("log_softmax", "_softmax", "nll_loss", "logsumexp", "aten::exp"),
    "optimizer": ("_fused_adamw", "adamw", "_foreach"),
}


def op_group(name: str) -> str:
    for group, keys in OP_GROUPS.items():
        if group == "attention forward" and "backward" in name:
            continue
        if any(k in name for k in keys):
            return group
    return "other"


def profile_model(name: str, args, work: Path) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from s2l.fine_tuning import FineTuning
    from s2l.models import resolve

    model_path = resolve(name)
    tokenized = examples_of(model_path, 2 * args.profile_batch, work)
    _, new = configs(args)
    from dataclasses import replace

    config = replace(new, batch_size=args.profile_batch, micro_batch_size=min(args.micro_batch_size, args.profile_batch))
    tuning = FineTuning(load(model_path), tokenized, config, "cpu")
    tuning.model.train()
    tuning.train_step()  # warm-up (and compiling, with --compile)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tuning.train_step()
    wall = time.perf_counter() - start
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e6 for e in events if e.key in PHASES}
    groups: dict[str, float] = {}
    for e in events:
        if e.key.startswith("aten::") or "backward" in e.key.lower() or "Backward" in e.key:
            if e.key in PHASES:
                continue
            groups[op_group(e.key)] = groups.get(op_group(e.key), 0.0) + e.self_cpu_time_total / 1e6
    top = sorted(((e.key, e.self_cpu_time_total / 1e6) for e in events if e.key not in PHASES),
                 key=lambda kv: -kv[1])[:15]
    print(f"\n{name}: one step of {args.profile_batch} examples in micro-batches of {config.micro_batch_size} "
          f"({config.precision}, chunked_loss={config.chunked_loss}, compile={config.compile_training}): "
          f"{wall:.2f} s wall under the profiler")
    print("  phase (inclusive)             seconds   share")
    for k in PHASES:
        if k in phases:
            print(f"  {k:<28} {phases[k]:8.3f} {phases[k] / wall:7.1%}")
    print("  op group (self time)          seconds   share")
    for k, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<28} {v:8.3f} {v / wall:7.1%}")
    print("  top ops (self time)")
    for k, v in top:
        print(f"  {k[:60]:<60} {v:8.3f}")
    return {"model": name, "wall_seconds": wall, "phases": phases, "op_groups": groups, "top_ops": top}


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="s2l-train-speed-"))
    models = [m for m in args.models.split(",") if m]
    print(f"threads: intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}; "
          f"oneDNN (mkldnn) available {torch.backends.mkldnn.is_available()}, enabled {torch.backends.mkldnn.enabled}",
          flush=True)
    if args.profile:
        result = {"bench": "train_profile", "profiles": [profile_model(m, args, work) for m in models]}
        return emit(result, args.out_json)

    cpu = CpuShare()
    # The peak the shares are of: bf16 (the training arithmetic where the hardware has it), or float32 when
    # everything measured trains in float32 (sampling an emulated bf16 peak alone would take minutes).
    all_float32 = args.baseline_precision == "float32" and args.precision == "float32"
    peak_dtype, peak_name = (torch.float32, "float32") if all_float32 else (torch.bfloat16, "bf16")
    peak = MatmulPeak([peak_dtype], [int(s) for s in args.peak_sizes.split(",")])
    per_model = [bench_model(m, args, peak, work) for m in models]
    while min(peak.samples.values()) < args.peak_repeats:
        peak.sample()
    peak_gflops = max(peak.gflops(peak_dtype).values())
    result = {"bench": "train_speed", f"peak_{peak_name}_gflops": round(peak_gflops, 1), "other_processes_cpu_share":
              cpu.others(), "threads": torch.get_num_threads(), "models": per_model}
    print(f"\n{peak_name} matmul peak in this process: {peak_gflops:.0f} GFLOP/s; other processes took "
          f"{(cpu.others() or 0):.0%} of the CPUs meanwhile")
    for m in per_model:
        short = SHORT.get(m["model"], Path(m["model"]).name)
        rates = m["tokens_per_second"]
        for v, rate in rates.items():
            share = m["gflops"][v] / peak_gflops
            print(f"  {short:<8} {v:<8} {rate:7.0f} tok/s  {m['gflops'][v]:6.0f} GFLOP/s  {share:6.1%} of {peak_name} "
                  f"peak  peak RSS {m['peak_rss_gib'][v]:.2f} GiB")
            result[f"mfu_{peak_name}_train_{short}_{v}"] = round(share, 4)
        if "new" in rates:
            result[f"mfu_{peak_name}_train_{short}"] = round(m["gflops"]["new"] / peak_gflops, 4)
            for base in ("previous", "trainer"):
                if base in rates:
                    result[f"speedup_vs_{base}_{short}"] = round(rates["new"] / rates[base], 3)
        if m["compile_seconds"] is not None:
            result[f"compile_seconds_{short}"] = round(m["compile_seconds"], 1)
    if args.record_memory:
        result["peak_rss_gib_record_smollm2"] = record_memory(args.record_memory)
    return emit(result, args.out_json)


if __name__ == "__main__":
    main()
