#!/usr/bin/env python
"""Training-step speed of s2l against a plain transformers Trainer, on the same model, data and settings,
in one process.

Three variants train on the same examples, in the same batch order (record's epoch permutation), with
the same settings (fused AdamW, lr 2e-5, cosine, bf16 autocast over float32 weights, batch 8):

  trainer      a plain `transformers.Trainer`: `model(input_ids, labels=...)` with the prompt labelled
               -100, so the vocabulary projection and the cross-entropy run at every position;
  s2l train    `s2l.training.train` (a Trainer whose loss projects to the vocabulary only at the
               positions that predict a response token);
  record       `s2l record`'s own training loop (the same loss, no Trainer), timed by its manifest.

Rounds alternate the variants so load from other processes falls on all of them alike; the first round
is a warm-up and is not counted (unless --rounds 1). Speed is input tokens per second of optimizer-step
time. The last line of stdout is one JSON object.

    python bench/train_speed.py                           # SmolLM2-135M-Instruct, 4 steps per variant and round
    python bench/train_speed.py --model gemma-3-270m --steps 3 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import emit, math_pool  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="packaged name or model folder")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per variant and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the first is a warm-up")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--out-json")
    return p.parse_args(argv)


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._started)

    return StepTimer()


def plain_trainer(model_path: str, tokenized, args, work: Path) -> float:
    """Seconds of optimizer steps of a plain Trainer over `tokenized`, one epoch, record's batch order."""
    from transformers import Trainer, TrainingArguments

    from s2l.fine_tuning import epoch_order
    from s2l.models import load_model

    class FirstEpochOrder(torch.utils.data.Sampler):  # s2l's order for epoch 0 (the bench runs one epoch)
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

    torch.manual_seed(0)
    model = load_model(model_path, "float32", "cpu")
    model.config.use_cache = False
    training_args = TrainingArguments(
        output_dir=str(work / "trainer"), num_train_epochs=1, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0.03, max_grad_norm=1.0, bf16=True,
        use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True, logging_strategy="no",
        dataloader_num_workers=0, seed=0, remove_unused_columns=False)
    timer = step_timer()
    trainer = SameOrder(model=model, args=training_args, train_dataset=rows, data_collator=collate, callbacks=[timer])
    trainer.train()
    return sum(timer.seconds)


def s2l_train(model_path: str, subset: Path, args, work: Path) -> float:
    import json

    from s2l.config import TrainConfig
    from s2l.training import MANIFEST, train

    out = train(subset, model_path, work / "s2l-train", TrainConfig(epochs=1, batch_size=args.batch_size,
                                                                     learning_rate=args.lr), device="cpu",
                show_progress=False, overwrite=True)
    return json.loads((out / MANIFEST).read_text())["seconds"]["training"]


def record_loop(model_path: str, subset: Path, args, work: Path, round_: int) -> float:
    from s2l.config import RecordConfig, ScoreConfig
    from s2l.trajectories.record import record

    store = record(subset, model_path, work / f"record-{round_}",
                   RecordConfig(epochs=1, batch_size=args.batch_size, learning_rate=args.lr, capture="in-training",
                                resume_state=False), score_config=ScoreConfig(dtype="bf16"), device="cpu",
                   show_progress=False)
    return store.manifest["seconds"]["training"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    from s2l.data import load_pool, tokenize_examples
    from s2l.models import load_tokenizer, resolve

    model_path = resolve(args.model)
    work = Path(tempfile.mkdtemp(prefix="s2l-train-speed-"))
    n = args.steps * args.batch_size
    subset = math_pool(work / "data", n, test_size=5)
    pool = load_pool(subset)
    tokenized = tokenize_examples(load_tokenizer(model_path), pool.examples)
    assert all(t.n_tokens > 0 for t in tokenized) and len(tokenized) == n
    tokens = sum(len(t) for t in tokenized)
    print(f"{args.model}: {n} examples, {tokens} input tokens ({tokens / n:.0f} per example, "
          f"{sum(t.n_tokens for t in tokenized) / n:.0f} response), {args.steps} steps per variant and round",
          flush=True)

    variants = {"trainer": lambda r: plain_trainer(model_path, tokenized, args, work),
                "s2l train": lambda r: s2l_train(model_path, subset, args, work),
                "record": lambda r: record_loop(model_path, subset, args, work, r)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            seconds[name].append(run(r))
            print(f"  round {r}: {name:<9} {seconds[name][-1]:7.2f} s for {args.steps} steps "
                  f"({tokens / seconds[name][-1]:6.0f} tok/s)", flush=True)
    counted = {name: s[1:] if len(s) > 1 else s for name, s in seconds.items()}
    rates = {name: tokens / float(np.median(s)) for name, s in counted.items()}
    result = {"bench": "train_speed", "model": args.model, "examples": n, "tokens": tokens, "steps": args.steps,
              "rounds_counted": len(next(iter(counted.values()))),
              "tokens_per_second": {k: round(v, 1) for k, v in rates.items()},
              "seconds_per_step": {k: round(float(np.median(s)) / args.steps, 3) for k, s in counted.items()},
              "s2l_train_vs_trainer": round(rates["s2l train"] / rates["trainer"], 3),
              "record_vs_trainer": round(rates["record"] / rates["trainer"], 3)}
    for name, rate in rates.items():
        print(f"{name:>10}: {rate:7.0f} tok/s  {result['seconds_per_step'][name]:.2f} s/step  "
              f"{rate / rates['trainer']:.2f}x the Trainer")
    return emit(result, args.out_json)


if __name__ == "__main__":
    main()
