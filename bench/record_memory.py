#!/usr/bin/env python
"""Peak resident memory of `s2l record` (the proxy's fine-tuning and its snapshot scoring), in this process.

Runs `record` on a generated math pool with the given settings and prints the process's peak RSS
(VmHWM) and, sampled every 50 ms, the RSS at the end of each phase (model loaded, training steps,
scoring passes). Run it in a fresh process per setting: the peak is the whole process's.

    python bench/record_memory.py                              # SmolLM2, 256 examples, the defaults
    MALLOC_ARENA_MAX=2 python bench/record_memory.py --options chunked_loss=false
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from common import emit, math_pool


def rss_gib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


class RssSampler(threading.Thread):
    """The highest RSS seen every `every` seconds (a finer view than VmHWM, which never resets)."""

    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        self.every, self.high, self.stop = every, 0.0, False

    def run(self):
        while not self.stop:
            self.high = max(self.high, rss_gib())
            time.sleep(self.every)

    def take(self) -> float:
        high, self.high = self.high, rss_gib()
        return high


def parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--snapshots", type=int, default=1)
    p.add_argument("--score-dtype", default="float32")
    p.add_argument("--options", nargs="*", default=[], help="RecordConfig fields as name=value")
    p.add_argument("--out-json")
    args = p.parse_args(argv)

    import torch

    from s2l import fine_tuning
    from s2l.config import RecordConfig, ScoreConfig
    from s2l.trajectories import record as record_module

    sampler = RssSampler()
    sampler.start()
    phases: dict[str, float] = {}

    def note(name: str) -> None:  # the highest RSS since the previous note, under this phase's name
        phases[name] = max(phases.get(name, 0.0), sampler.take())

    step = fine_tuning.FineTuning.train_step
    def timed_step(self, *a, **k):
        note("before step")
        out = step(self, *a, **k)
        note("training step")
        return out
    fine_tuning.FineTuning.train_step = timed_step
    score = record_module.score_columns
    def timed_score(*a, **k):
        note("before scoring")
        out = score(*a, **k)
        note("scoring pass")
        return out
    record_module.score_columns = timed_score

    work = Path(tempfile.mkdtemp(prefix="s2l-record-memory-"))
    pool = math_pool(work / "data", args.examples, test_size=5)
    options = dict(o.split("=", 1) for o in args.options)
    # One epoch and no resume state unless --options says otherwise (resume_state=true: record's default,
    # which writes weights and AdamW moments at every snapshot).
    settings = {"epochs": 1, "snapshots": args.snapshots, "resume_state": False}
    config = RecordConfig(**{**settings, **{k: parse_value(v) for k, v in options.items()}})
    started = time.perf_counter()
    record_module.record(pool, args.model, work / "run", config, score_config=ScoreConfig(dtype=args.score_dtype),
                         device="cpu", show_progress=False)
    seconds = time.perf_counter() - started
    sampler.stop = True
    note("end")
    result = {"bench": "record_memory", "model": args.model, "examples": args.examples, "options": options,
              "threads": torch.get_num_threads(), "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
              "seconds": round(seconds, 1), "peak_rss_gib": round(rss_gib("VmHWM"), 3),
              "phase_peak_rss_gib": {k: round(v, 3) for k, v in phases.items()}}
    print(f"{args.model}: peak RSS {result['peak_rss_gib']:.2f} GiB over {seconds:.0f} s; by phase: " +
          ", ".join(f"{k} {v:.2f}" for k, v in result["phase_peak_rss_gib"].items()))
    return emit(result, args.out_json)


if __name__ == "__main__":
    main()
