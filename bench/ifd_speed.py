#!/usr/bin/env python
"""What the store's measures cost: the top-1 probability kept from every scoring pass, and `--ifd`'s pass
over the responses alone, against the plain scoring pass, in one process.

Three variants score the same examples with the same weights, their pieces interleaved (round k runs
piece k of each; with --repeats the schedule runs again and each piece keeps its fastest time), so load
from other processes falls on all of them alike:
  plain     `score_examples`: the mean response loss only (what a cell held before the measures);
  cells     `score_columns`: the loss and the mean top-1 probability, from the same logits (a cell now);
  cells+ifd `score_columns(ifd=True)`: that, then each response scored alone (`record`/`score --ifd`).
It prints the seconds of each and the ratios cells / plain (the top-1 probability's cost) and
cells+ifd / cells (what --ifd adds to a scoring pass), with the token counts of the two passes, and checks
that keeping the top-1 probability leaves the losses bit for bit. The last line of stdout is one JSON object.

    python bench/ifd_speed.py                                   # SmolLM2-135M-Instruct, 96 math examples
    python bench/ifd_speed.py --proxy path/to/model --examples 256 --dtype bf16 --out-json /tmp/ifd.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import emit, math_pool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxy", default="smollm2-135m-instruct", help="packaged name or model folder")
    p.add_argument("--data", help="a pool file (default: generate --examples with examples/make_math_pool.py)")
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--dtype", default="float32", help="scoring weights (float32, the default of record/score, or bf16)")
    p.add_argument("--max-batch-tokens", type=int, default=4096)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=4, help="pieces the examples are split into, interleaved")
    p.add_argument("--repeats", type=int, default=2, help="runs of the whole schedule; each piece keeps its fastest")
    p.add_argument("--out-json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from s2l.data import load_pool, tokenize_examples
    from s2l.models import load_model, load_tokenizer, resolve
    from s2l.trajectories.scoring import response_alone, score_columns, score_examples

    path = resolve(args.proxy)
    model = load_model(path, args.dtype, "cpu")
    tokenizer = load_tokenizer(path)
    with tempfile.TemporaryDirectory(prefix="s2l-bench-") as tmp:
        pool = load_pool(args.data or math_pool(Path(tmp), args.examples))
        examples = [t for t in tokenize_examples(tokenizer, pool.examples[: args.examples]) if t.n_tokens > 0]
    if not examples:
        sys.exit("no example has a response token to score")
    alone = response_alone(examples, model.config.bos_token_id)
    budget = (args.max_batch_tokens, args.max_batch_size)
    variants = {
        "plain": lambda part: score_examples(model, part, *budget),
        "cells": lambda part: score_columns(model, part, *budget),
        "cells+ifd": lambda part: score_columns(model, part, *budget, ifd=True),
    }
    pieces = np.array_split(np.arange(len(examples)), args.rounds)
    parts = [[examples[i] for i in piece] for piece in pieces]
    for run in variants.values():  # warm-up: first-call allocations and kernel selection
        run(parts[0][:4])
    best = {name: [float("inf")] * len(parts) for name in variants}
    outputs: dict[str, list] = {name: [None] * len(parts) for name in variants}
    for _ in range(args.repeats):
        for k, part in enumerate(parts):
            for name, run in variants.items():
                started = time.perf_counter()
                outputs[name][k] = run(part)
                best[name][k] = min(best[name][k], time.perf_counter() - started)
    seconds = {name: sum(times) for name, times in best.items()}

    plain = np.concatenate([o[0] for o in outputs["plain"]])
    cells = np.concatenate([o[0] for o in outputs["cells"]])
    ifd = np.concatenate([o[0] / o[2]["loss_alone"] for o in outputs["cells+ifd"]])
    assert np.array_equal(plain, cells), "keeping the top-1 probability changed the losses"
    tokens = {"prompted_input": sum(len(e) for e in examples), "alone_input": sum(len(e) for e in alone),
              "response": sum(e.n_tokens for e in examples)}
    result = {
        "bench": "ifd_speed", "proxy": args.proxy, "dtype": args.dtype, "examples": len(examples),
        "threads": torch.get_num_threads(), "tokens": tokens,
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
        "top1_vs_plain": round(seconds["cells"] / seconds["plain"], 3),
        "ifd_vs_plain_pass": round(seconds["cells+ifd"] / seconds["cells"], 3),
        "ifd_below_1": round(float(np.mean(ifd < 1)), 3),
    }
    for name, value in seconds.items():
        print(f"{name:>10}: {value:7.2f} s  {len(examples) / value:6.2f} ex/s")
    print(f"input tokens: prompted {tokens['prompted_input']}, responses alone {tokens['alone_input']} "
          f"({tokens['alone_input'] / tokens['prompted_input']:.0%})")
    print(f"top-1 probability: {result['top1_vs_plain']:.3f}x the plain pass; --ifd: {result['ifd_vs_plain_pass']:.3f}x "
          f"a scoring pass; IFD < 1 for {result['ifd_below_1']:.0%} of the examples")
    return emit(result, args.out_json)


if __name__ == "__main__":
    main()
