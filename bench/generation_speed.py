#!/usr/bin/env python
"""How fast `s2l evaluate` generates answers, against transformers' `generate`, in one process.

On one model and one set of test prompts (greedy, left-padded batches sorted by prompt length, as
`s2l.evaluation.generate_completions` makes them) it times:

  generate     `model.generate(do_sample=False)` on each batch: every row runs until the batch's last
               row has stopped (how s2l generated before 2026-12);
  s2l          `s2l.evaluation.greedy_decode`: the same forward passes, but a row that has emitted its
               EOS leaves the batch (its key-value cache rows are dropped).

Both produce the same tokens (checked: exit status 1 if any completion differs). The gain depends on
how the answers' lengths spread within a batch, so measure it on a model that has learnt to stop: a
fine-tuned one (`--model runs/.../model`). An untrained base model runs every row to
--max-new-tokens, and then the two cost the same.

The machine is assumed shared and noisy: the variants alternate, batch by batch, and the share of
CPU time other processes took meanwhile is reported. The last line of stdout is one JSON object.

    python bench/generation_speed.py --model runs/real-cpu-calibration/random40-batch8/model \\
        --data runs/real-cpu/tests/gsm8k.jsonl --examples 200 --max-new-tokens 192
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import CpuShare, emit, math_pool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma-3-270m", help="packaged model name or a local folder (default: gemma-3-270m)")
    p.add_argument("--data", default=None, help="test records to take prompts from (default: a generated math test split)")
    p.add_argument("--examples", type=int, default=100, help="prompts generated for (default: 100)")
    p.add_argument("--batch-size", type=int, default=100, help="prompts per batch (default: 100, as real-cpu.yaml)")
    p.add_argument("--max-new-tokens", type=int, default=192, help="cap on new tokens per prompt (default: 192)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--out-json", default=None, help="also write the JSON result here")
    return p.parse_args(argv)


@torch.inference_mode()
def generate_batch(model, input_ids, attention, max_new_tokens, eos, pad) -> list[list[int]]:
    """transformers' greedy `generate`, cut as greedy_decode cuts: up to and including the first EOS."""
    width = input_ids.shape[1]
    generated = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                               do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                               eos_token_id=eos, pad_token_id=pad)[:, width:].tolist()
    rows = []
    for tokens in generated:
        stop = next((k for k, t in enumerate(tokens) if t in eos), None)
        rows.append(tokens if stop is None else tokens[: stop + 1])
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from s2l.config import EvalConfig
    from s2l.data.tokenize import load_pool_as
    from s2l.evaluation import _eos_ids, greedy_decode, left_pad, prompt_ids
    from s2l.models import load_model, load_tokenizer, resolve

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else math_pool(Path(tmp), 20, test_size=args.examples).with_name("test.jsonl")
        path = resolve(args.model)
        tokenizer = load_tokenizer(path)
        examples = load_pool_as(data, EvalConfig().data).examples[: args.examples]
    prompts = [prompt_ids(tokenizer, e) for e in examples]
    model = load_model(path, "float32", "cpu").eval()
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))

    seconds = {"generate": 0.0, "s2l": 0.0}
    outputs = {"generate": [], "s2l": []}
    load = CpuShare()
    for k, start in enumerate(range(0, len(order), args.batch_size)):
        input_ids, attention = left_pad([prompts[i] for i in order[start : start + args.batch_size]], pad)
        variants = [("generate", generate_batch), ("s2l", lambda *a: greedy_decode(*a[:5]))]
        for name, run in variants if k % 2 == 0 else variants[::-1]:  # alternate which goes first
            began = time.perf_counter()
            outputs[name] += run(model, input_ids, attention, args.max_new_tokens, eos, pad)
            seconds[name] += time.perf_counter() - began
        print(f"batch {k + 1}: generate {seconds['generate']:.1f}s, s2l {seconds['s2l']:.1f}s so far", file=sys.stderr)

    lengths = [len(t) for t in outputs["s2l"]]
    differing = sum(a != b for a, b in zip(outputs["generate"], outputs["s2l"]))
    result = {
        "model": args.model, "data": str(args.data or "generated math test split"), "examples": len(prompts),
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "mean_new_tokens": round(sum(lengths) / len(lengths), 1),
        "cut_at_max_new_tokens": sum(1 for t in outputs["s2l"] if not t or t[-1] not in eos),
        "generate_seconds": round(seconds["generate"], 1), "s2l_seconds": round(seconds["s2l"], 1),
        "speedup": round(seconds["generate"] / seconds["s2l"], 2),
        "completions_differing": differing, "other_processes_cpu_share": load.others(),
    }
    emit(result, args.out_json)
    if differing:
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
