"""Calibration for the real-data benchmark (bench/quality/real-cpu/real-cpu.yaml), run before any method is compared.

The question it answers: can Gemma-3-270M learn from a 10% subset of a 400-example pool at the papers'
settings (3 epochs, lr 2e-5, cosine, 3% warm-up, effective batch 128), or does the batch leave it too few
optimizer steps (40 examples at batch 128 are 3 steps in all)? And which test sets can the target partly
solve, and how long are its answers (the generation caps per test set)?

Data: its own pool and test split, built with seed 1 (the benchmark's seed is 20261201); the two share 7
pool questions and 35 SVAMP test questions, which only matters for choosing training settings, not methods.
Subsets are uniform random draws; no selection method is run here.

    python bench/quality/real-cpu/calibrate.py            # resumable; about 1.5 hours on 2 CPU cores

Writes runs/real-cpu-calibration/ and bench/quality/real-cpu/calibration.json (the committed summary).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = ROOT / "runs" / "real-cpu-calibration"
SHARED = ROOT.parent / "shared" / "data" / "math"
SUBSET_SIZE = 40  # 10% of the 400-example pool
RUNS = {  # name: training settings (None: the base model, untrained)
    "random40-batch8": {"batch_size": 8},
    "random40-batch128": {"batch_size": 128},
    "base": None,
}
TESTS = {"in_domain": "test/in_domain.jsonl", "svamp": "test/ood_svamp.jsonl"}
# Generation is most of an evaluation's cost here: the in-domain answers are generated for the first run only
# (which sources can the trained target partly solve, how long are its answers), SVAMP's for the trained runs;
# the base model has its losses (it does not stop: every answer runs to the cap).
GENERATE = {"random40-batch8": {"in_domain", "svamp"}, "random40-batch128": {"svamp"}, "base": set()}


def main() -> None:
    from s2l.config import EvalConfig, TrainConfig
    from s2l.evaluation import evaluate
    from s2l.fileio import write_bytes_atomic, write_json_atomic
    from s2l.training import train

    data = OUT / "data"
    if not (data / "info.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "examples" / "make_real_math_pool.py"), "--source-dir", str(SHARED),
                        "--out", str(data), "--size", "400", "--seed", "1", "--test-per-source", "30",
                        "--ood-limit", "100"], check=True)
    subset = OUT / "subset.jsonl"
    if not subset.is_file():
        rows = (data / "pool.jsonl").read_bytes().splitlines(keepends=True)
        chosen = sorted(random.Random(0).sample(range(len(rows)), SUBSET_SIZE))
        write_bytes_atomic(subset, b"".join(rows[i] for i in chosen))

    summary = {}
    for name, settings in RUNS.items():
        model = "gemma-3-270m"
        if settings is not None:
            model_dir = OUT / name / "model"
            config = TrainConfig(epochs=3, learning_rate=2e-5, micro_batch_size=8, seed=0, **settings)
            if not (model_dir / "s2l_train.json").is_file():
                started = time.perf_counter()
                train(subset, model, model_dir, config, show_progress=False)
                print(f"{name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
            model = model_dir
        summary[name] = {"train": settings}
        for test, path in TESTS.items():
            out = OUT / name / f"eval-{test}" / "metrics.json"
            if not out.is_file():
                generate = test in GENERATE[name]
                evaluate(model, data / path, EvalConfig(max_new_tokens=256, batch_size=64, generate=generate), out=out,
                         show_progress=False)
            metrics = json.loads(out.read_text())
            rows = [json.loads(line) for line in out.with_name("predictions.jsonl").open()]
            summary[name][test] = {
                "loss": metrics["overall"]["loss"], "accuracy": metrics["overall"]["accuracy"],
                "accuracy_by_source": {s: m["accuracy"] for s, m in metrics["by_source"].items()},
                "cut_at_256_tokens": metrics["excluded"]["generation_cut_at_max_new_tokens"],
                "seconds": metrics["seconds"],
                "completion_chars_p90": sorted(len(r["completion"] or "") for r in rows)[int(0.9 * len(rows))],
                "loss_by_source": {s: m["loss"] for s, m in metrics["by_source"].items()},
            }
            print(name, test, json.dumps(summary[name][test]), flush=True)
        if settings is not None:
            log = [json.loads(line) for line in (OUT / name / "model" / "s2l_train_log.jsonl").open()]
            summary[name]["optimizer_steps"] = len(log)
    write_json_atomic(HERE / "calibration.json", summary)


if __name__ == "__main__":
    main()
