#!/usr/bin/env python
"""Does scoring in bf16 change what gets selected? The same proxy run's checkpoints scored in float32 and in
bf16, compared loss by loss and selection by selection.

Records one proxy run with `--keep-checkpoints` (float32 scoring), then scores its kept checkpoints again
with bf16 weights (`s2l score --dtype bf16`), so both stores hold the same training run and differ only in
the scoring arithmetic. It prints the loss differences (largest, mean, and per snapshot), then the
agreement of selection on the two stores (bench/capture_speed.py's measures: S2L subsets at 10% and 30%
beside two seeds on the float32 store, ARI of the clusterings, Spearman of LP(1) and final loss).
The last line of stdout is one JSON object.

    python bench/dtype_agreement.py                          # SmolLM2-135M-Instruct, 200 generated math examples
    python bench/dtype_agreement.py --size 120 --epochs 2 --snapshots 4
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import emit, math_pool
from capture_speed import selection_agreement


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxy", default="smollm2-135m-instruct", help="packaged name or model folder")
    p.add_argument("--data", help="a pool file (default: generate --size examples with examples/make_math_pool.py)")
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--snapshots", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--clusters", type=int, default=5, help="S2L clusters per source")
    p.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    p.add_argument("--out-json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from s2l.config import RecordConfig, ScoreConfig
    from s2l.trajectories.record import record, score

    work = Path(args.workdir or tempfile.mkdtemp(prefix="s2l-dtype-"))
    work.mkdir(parents=True, exist_ok=True)
    pool = Path(args.data) if args.data else math_pool(work / "data", args.size)

    config = RecordConfig(epochs=args.epochs, snapshots=args.snapshots, batch_size=args.batch_size,
                          learning_rate=args.lr, keep_checkpoints=True)
    fp32 = record(pool, args.proxy, work / "fp32", config, score_config=ScoreConfig(dtype="float32"),
                  show_progress=False)
    checkpoints = sorted(str(p) for p in (fp32.root / "checkpoints").iterdir())
    bf16 = score(pool, checkpoints, work / "bf16", score_config=ScoreConfig(dtype="bf16"), show_progress=False)

    a, b = fp32.load().losses, bf16.load().losses
    diff = np.abs(a - b)
    losses = {"max_abs_diff": round(float(np.nanmax(diff)), 5), "mean_abs_diff": round(float(np.nanmean(diff)), 5),
              "max_abs_diff_per_snapshot": [round(float(x), 5) for x in np.nanmax(diff, axis=0)],
              "mean_loss": round(float(np.nanmean(a)), 4)}
    print(f"bf16 vs float32 losses: max |diff| {losses['max_abs_diff']}, mean {losses['mean_abs_diff']} "
          f"(mean loss {losses['mean_loss']}); per snapshot max: {losses['max_abs_diff_per_snapshot']}")
    agreement = selection_agreement(fp32, bf16, args.clusters)
    for key, value in agreement.items():
        print(f"{key:>40}: {value}")
    result = {"bench": "dtype_agreement", "proxy": args.proxy, "examples": agreement.pop("examples"),
              "epochs": args.epochs, "snapshots": len(checkpoints), "losses": losses, "agreement": agreement}
    return emit(result, args.out_json)


if __name__ == "__main__":
    main()
