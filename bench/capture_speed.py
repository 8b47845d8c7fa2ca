#!/usr/bin/env python
"""What `record --capture in-training` saves, and what it changes, against the faithful capture.

Records the same proxy training run twice on one pool, in one process: the papers' capture (the whole
pool scored at every snapshot) and the in-training capture (each example's loss kept from the training
pass at every epoch's visit, plus one pass before and one after training). Training itself is the same
in both (same seed, order and arithmetic), so the difference in time is the cost of capturing.

It prints, per capture: wall time, the training loop's time, and what capture added on top of it
(scoring passes, keeping visit losses, writing columns), as a share of the training time. Then the
agreement of what selection does with each store:
  - overlap of the S2L subsets at 10% and 30% (same selector, same seed), beside the overlap the
    faithful store gives between two selector seeds (the noise floor) and the budget share (what two
    random subsets share on average);
  - adjusted Rand index of the two S2L clusterings (and between two seeds on the faithful store);
  - Spearman correlation of LP(1) between the stores, and of the final loss.
The last line of stdout is one JSON object.

    python bench/capture_speed.py                        # SmolLM2-135M-Instruct, 200 generated math examples
    python bench/capture_speed.py --size 96 --out-json /tmp/capture.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common import emit, math_pool


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxy", default="smollm2-135m-instruct", help="packaged name or model folder")
    p.add_argument("--data", help="a pool file (default: generate --size examples with examples/make_math_pool.py)")
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--snapshots", type=int, default=6, help="of the faithful capture")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--dtype", default="bf16", help="scoring weights of both captures")
    p.add_argument("--clusters", type=int, default=5, help="S2L clusters per source")
    p.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    p.add_argument("--out-json")
    return p.parse_args(argv)


def selections(store, clusters: int, seed: int) -> dict:
    from s2l.selection import make_selector

    t = store.load()
    out = {}
    for budget in (0.1, 0.3):
        selector = make_selector("s2l", n_clusters=clusters, seed=seed).fit(t)
        out[budget] = set(selector.select(budget))
    out["labels"] = selector.labels_
    return out


def selection_agreement(store_a, store_b, clusters: int) -> dict:
    """How alike selection is on two stores of the same pool: S2L subsets at 10% and 30% (beside two seeds
    on store_a, the noise floor), the clusterings' adjusted Rand index, Spearman of LP(1) and final loss."""
    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score

    from s2l.selection.lp import epoch_columns, learning_percentage

    ta, tb = store_a.load(), store_b.load()
    assert list(ta.ids) == list(tb.ids)
    a, b = selections(store_a, clusters, 0), selections(store_b, clusters, 0)
    floor = selections(store_a, clusters, 1)
    agreement = {"examples": len(ta.ids)}
    for budget in (0.1, 0.3):
        n = len(a[budget])
        agreement[f"s2l_overlap_{int(budget * 100)}"] = round(len(a[budget] & b[budget]) / n, 4)
        agreement[f"s2l_overlap_{int(budget * 100)}_two_seeds_faithful"] = round(len(a[budget] & floor[budget]) / n, 4)
        agreement[f"random_overlap_{int(budget * 100)}_expected"] = budget
    agreement["ari"] = round(float(adjusted_rand_score(a["labels"], b["labels"])), 4)
    agreement["ari_two_seeds_faithful"] = round(float(adjusted_rand_score(a["labels"], floor["labels"])), 4)
    lp_a = learning_percentage(ta.losses, *epoch_columns(store_a.manifest["snapshots"], 1))
    lp_b = learning_percentage(tb.losses, *epoch_columns(store_b.manifest["snapshots"], 1))
    ok = np.isfinite(lp_a) & np.isfinite(lp_b)
    agreement["lp_spearman"] = round(float(spearmanr(lp_a[ok], lp_b[ok]).statistic), 4)
    agreement["final_loss_spearman"] = round(float(spearmanr(ta.losses[:, -1], tb.losses[:, -1]).statistic), 4)
    return agreement


def main(argv=None) -> dict:
    args = parse_args(argv)
    from s2l.config import RecordConfig, ScoreConfig
    from s2l.trajectories.record import record

    work = Path(args.workdir or tempfile.mkdtemp(prefix="s2l-capture-"))
    work.mkdir(parents=True, exist_ok=True)
    pool = Path(args.data) if args.data else math_pool(work / "data", args.size)

    stores, figures = {}, {}
    for capture in ("snapshots", "in-training"):
        config = RecordConfig(epochs=args.epochs, snapshots=args.snapshots, batch_size=args.batch_size,
                              learning_rate=args.lr, capture=capture)
        started = time.perf_counter()
        store = record(pool, args.proxy, work / capture, config, score_config=ScoreConfig(dtype=args.dtype),
                       show_progress=False)
        wall = time.perf_counter() - started
        seconds = store.manifest["seconds"]
        added = seconds["capture"] + seconds["scoring"]
        figures[capture] = {"wall_seconds": round(wall, 1), "columns": len(store.manifest["snapshots"]),
                            **{f"{k}_seconds": v for k, v in seconds.items()},
                            "capture_share_of_training": round(added / seconds["training"], 4)}
        stores[capture] = store
        print(f"{capture:>12}: wall {wall:7.1f} s  training {seconds['training']:7.1f} s  scoring "
              f"{seconds['scoring']:6.1f} s  keeping visits {seconds['capture']:5.2f} s  saving state "
              f"{seconds['saving']:5.1f} s  -> capture adds {100 * added / seconds['training']:.1f}% to training",
              flush=True)

    agreement = selection_agreement(stores["snapshots"], stores["in-training"], args.clusters)
    for key, value in agreement.items():
        print(f"{key:>40}: {value}")

    result = {"bench": "capture_speed", "examples": agreement.pop("examples"), "proxy": args.proxy, "epochs": args.epochs,
              "snapshots": args.snapshots, "captures": figures, "agreement": agreement,
              "in_training_wall_vs_faithful": round(figures["in-training"]["wall_seconds"]
                                                    / figures["snapshots"]["wall_seconds"], 3)}
    return emit(result, args.out_json)


if __name__ == "__main__":
    main()
