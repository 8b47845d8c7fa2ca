#!/usr/bin/env python
"""Speed of the chunked vocabulary projection + cross-entropy (forward and backward) at a model's head shape,
against the same function at an earlier commit, in one process, alternating.

The inputs are random bf16-autocast tensors of the head's shape (Gemma-3-270M: 262,144 x 640) and a
micro-batch's response positions; the loss's gradient is given up front, as training gives it, so the
forward pass makes both gradients. The baseline is `src/s2l/trajectories/head_loss.py` as it stood at
`--baseline` (read with `git show`, imported under another name), so a change is measured against what it
replaced, not against a copy kept in this script. The last line of stdout is one JSON object.

    python bench/head_loss_speed.py --baseline 64aee26            # Gemma's head, 344 positions, bf16 autocast
    python bench/head_loss_speed.py --baseline 64aee26 --vocab 49152 --hidden 576   # SmolLM2's
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from s2l.trajectories import head_loss

ROOT = Path(__file__).resolve().parents[1]


def load_baseline(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:src/s2l/trajectories/head_loss.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory(prefix="s2l-head-baseline-") as folder:
        path = Path(folder) / "head_loss_baseline.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("head_loss_baseline", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # the module lives on once imported; its file need not
    return module


def one_pass(module, hidden0, weight0, targets, scale) -> float:
    hidden, weight = hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = module.chunked_head_losses(hidden, weight, targets, None, scale)
    (losses.sum() * scale).backward()
    return time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the commit whose head_loss.py is the baseline")
    p.add_argument("--vocab", type=int, default=262144, help="vocabulary size (default: Gemma-3-270M's)")
    p.add_argument("--hidden", type=int, default=640, help="hidden size (default: Gemma-3-270M's)")
    p.add_argument("--positions", type=int, default=344, help="response positions in the micro-batch (8 x 43)")
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds; the first is a warm-up")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    hidden0 = torch.randn(args.positions, args.hidden)
    weight0 = torch.randn(args.vocab, args.hidden) / args.hidden**0.5
    targets = torch.randint(0, args.vocab, (args.positions,))
    scale = 1.0 / args.positions
    variants = {"baseline": load_baseline(args.baseline), "current": head_loss}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(args.rounds):
        for name, module in variants.items():
            seconds = one_pass(module, hidden0, weight0, targets, scale)
            if round_:
                times[name].append(seconds)
            print(f"round {round_}{' (warm-up)' if not round_ else ''}: {name:<8} {seconds:.3f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    result = {"bench": "head_loss_speed", "baseline": args.baseline, "vocab": args.vocab, "hidden": args.hidden,
              "positions": args.positions, "seconds": times, "best": best,
              "speedup_vs_baseline": best["baseline"] / best["current"], "threads": torch.get_num_threads()}
    print(f"best: baseline {best['baseline']:.3f} s, current {best['current']:.3f} s: "
          f"{result['speedup_vs_baseline']:.2f}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
