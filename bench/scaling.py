#!/usr/bin/env python
"""One process against several (torchrun) for `s2l record` and `s2l score`, on the same work.

Each round runs every variant once, alternating, in fresh run directories:
  score, 1 process     `s2l score` of --examples pool examples with --checkpoints copies of the model
  score, N processes   the same under `torchrun --nproc-per-node N` (each process takes its share of the
                       (snapshot, shard) cells)
  record, 1 process    `s2l record` for one epoch with --snapshots snapshots
  record, N processes  the same, data-parallel under torchrun
Times are the manifests' wall_seconds (the run itself: loading, training, scoring, writing; not Python's
start-up). On a CPU machine the processes share its cores: each gets cores / N threads, so the figure
says what splitting the same cores into processes costs or gains; on a GPU machine give one GPU per
process (--device cuda) and it is the scaling figure. The fastest round counts. The last line of stdout
is one JSON object.

    python bench/scaling.py                               # SmolLM2-135M-Instruct, 2 processes, CPU
    python bench/scaling.py --processes 4 --device cuda --examples 4096
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import emit, math_pool  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="packaged name or model folder")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--checkpoints", type=int, default=2, help="snapshots scored by `score`")
    p.add_argument("--record-examples", type=int, default=64)
    p.add_argument("--snapshots", type=int, default=2, help="of `record`")
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir")
    p.add_argument("--out-json")
    return p.parse_args(argv)


def run(command: list[str], processes: int, threads: int, out: Path) -> float:
    launcher = [sys.executable, "-m", "s2l.cli"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes), "-m", "s2l.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(launcher + command + ["--out", str(out), "--no-progress"], env=env, capture_output=True,
                            text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return json.loads((out / "manifest.json").read_text())["wall_seconds"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    from s2l.models import resolve

    work = Path(args.workdir or tempfile.mkdtemp(prefix="s2l-scaling-"))
    pool = math_pool(work / "data", args.examples)
    small = pool.with_name("record.jsonl")
    small.write_text("".join(pool.read_text().splitlines(keepends=True)[:args.record_examples]))
    model = resolve(args.model)
    cores = os.cpu_count() or 1
    device = ["--device", args.device] if args.device else []
    score = ["score", "--data", str(pool), "--dtype", args.dtype, "--shard-size", str(args.shard_size), *device]
    for _ in range(args.checkpoints):
        score += ["--checkpoint", model]
    record = ["record", "--data", str(small), "--proxy", model, "--epochs", "1", "--snapshots", str(args.snapshots),
              "--dtype", args.dtype, "--shard-size", str(args.shard_size), *device]
    variants = {(job, n): command for job, command in (("score", score), ("record", record))
                for n in (1, args.processes)}
    best: dict = {}
    for r in range(args.rounds):
        for (job, n), command in variants.items():
            seconds = run(command, n, max(1, cores // n), work / f"{job}-{n}-{r}")
            best[(job, n)] = min(best.get((job, n), float("inf")), seconds)
            print(f"round {r + 1}: {job} with {n} process(es): {seconds:.1f} s", flush=True)
    result = {"bench": "scaling", "model": args.model, "processes": args.processes, "cores": cores,
              "device": args.device or "default", "score_examples": args.examples * args.checkpoints,
              "record_examples": args.record_examples}
    for job in ("score", "record"):
        one, many = best[(job, 1)], best[(job, args.processes)]
        result[f"{job}_seconds_1"], result[f"{job}_seconds_{args.processes}"] = one, many
        result[f"{job}_speedup"] = round(one / many, 3)
        print(f"{job}: 1 process {one:.1f} s, {args.processes} processes {many:.1f} s -> {one / many:.2f}x")
    return emit(result, args.out_json)


if __name__ == "__main__":
    main()
