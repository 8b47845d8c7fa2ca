"""Facility-location speed: 100,000 synthetic trajectories x 12 snapshots, 10% selected (issue 15: <= 60 s).

In one process, on the trajectories of bench/select_speed.py (decaying loss curves, 14 sources):
  facility-location   fit + select: stochastic greedy (epsilon 0.1) with blockwise exact gains, the pool as one;
                      wall and CPU seconds (on a busy machine the CPU time is the steadier figure)
  dense reference     the same stochastic greedy computing every similarity (the candidates against all N
                      examples, one float32 matrix product a step, one BLAS thread), timed on its first
                      --dense-steps steps and extrapolated to the budget: its cost per step does not fall
  s2l                 S2L's fit + select on the same trajectories, for scale
Coverage F(S) / N, the mean best similarity to the subset, is exact for facility location and estimated on
2,000 examples for S2L's subset and a random one of the same size. Other processes' share of the CPUs
meanwhile is reported; above 5% the times are flagged.

    python bench/facility_location_speed.py                 # 100,000 x 12, budget 10%
    python bench/facility_location_speed.py --n 20000       # quicker
The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from common import CpuShare, emit
from select_speed import synthetic_trajectories

BUSY_SHARE = 0.05


def dense_seconds_per_step(z: np.ndarray, k: int, epsilon: float, steps: int, seed: int = 0) -> float:
    """Stochastic greedy computing all N similarities of every candidate: seconds per step over `steps` steps."""
    n = len(z)
    centred = z.astype(np.float64) - z.mean(axis=0)
    norms = (centred ** 2).sum(axis=1)
    as_candidate = np.column_stack([2 * centred, -norms, -np.ones(n)]).astype(np.float32)
    members = np.ascontiguousarray(np.column_stack([centred, np.ones(n), norms]).astype(np.float32).T)
    cover = np.zeros(n, np.float32)
    rng = np.random.default_rng(seed)
    size = math.ceil(n / k * math.log(1 / epsilon))
    remaining = np.arange(n)
    started = time.perf_counter()
    for step in range(steps):
        drawn = rng.choice(len(remaining) - step, size=size, replace=False)
        e = as_candidate[remaining[drawn]] @ members  # -|z_c - z_i|^2
        np.exp(np.minimum(e, 0, out=e), out=e)
        best = int(np.argmax(np.maximum(e - cover, 0).sum(axis=1, dtype=np.float64)))
        np.maximum(cover, e[best], out=cover)
        at = drawn[best]
        remaining[at], remaining[len(remaining) - step - 1] = remaining[len(remaining) - step - 1], remaining[at]
    return (time.perf_counter() - started) / steps


def estimated_coverage(z: np.ndarray, chosen: np.ndarray, sample: int = 2000, seed: int = 1) -> float:
    """Mean over `sample` examples of the best similarity exp(-|z_i - z_j|^2) to the chosen rows."""
    rows = np.random.default_rng(seed).choice(len(z), size=min(sample, len(z)), replace=False)
    best = np.zeros(len(rows))
    for start in range(0, len(chosen), 2048):
        c = z[chosen[start:start + 2048]].astype(np.float64)
        d2 = ((z[rows, None, :].astype(np.float64) - c[None]) ** 2).sum(axis=2)
        best = np.maximum(best, np.exp(-d2).max(axis=1))
    return float(best.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--sources", type=int, default=14)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--dense-steps", type=int, default=100, help="steps of the dense reference to time")
    parser.add_argument("--out-json", default=None)
    args = parser.parse_args()

    from s2l.selection import make_selector

    t = synthetic_trajectories(args.n, args.snapshots, args.sources)
    k = max(1, math.floor(args.budget * args.n + 0.5))
    load = CpuShare()

    started, cpu = time.perf_counter(), time.process_time()
    fl = make_selector("facility-location", epsilon=args.epsilon, seed=0).fit(t)
    fl_ids = fl.select(k)
    fl_seconds, fl_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"facility-location: {fl_seconds:.1f} s ({fl_cpu:.1f} s of CPU) for {len(fl_ids)} of {args.n} "
          f"(bandwidth {fl.bandwidth_:.4f}, coverage {fl.coverage_:.4f})", file=sys.stderr)

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # as facility-location runs its products
        dense = dense_seconds_per_step(fl._z, k, args.epsilon, min(args.dense_steps, k))
    print(f"dense reference: {1e3 * dense:.1f} ms a step, about {dense * k:.0f} s for {k} steps", file=sys.stderr)

    started = time.perf_counter()
    s2l = make_selector("s2l", seed=0).fit(t)
    s2l.select(k)
    s2l_seconds = time.perf_counter() - started
    print(f"s2l: {s2l_seconds:.1f} s", file=sys.stderr)
    others = load.others()

    random_rows = np.random.default_rng(0).choice(args.n, size=k, replace=False)
    coverage = {"facility_location": round(fl.coverage_, 4),
                "s2l_estimated": round(estimated_coverage(fl._z, s2l.selected_), 4),
                "random_estimated": round(estimated_coverage(fl._z, random_rows), 4)}
    print(f"coverage F(S)/N: facility-location {coverage['facility_location']}, s2l ~{coverage['s2l_estimated']}, "
          f"random ~{coverage['random_estimated']}", file=sys.stderr)
    if others is not None:
        busy = others > BUSY_SHARE
        print(f"{'warning: ' if busy else ''}other processes used {others:.0%} of the CPUs' time while this ran"
              + (", so the times are inflated" if busy else ""), file=sys.stderr)
    emit({"bench": "facility_location_speed", "n": args.n, "snapshots": args.snapshots, "budget": k,
          "epsilon": args.epsilon, "seconds": round(fl_seconds, 1), "cpu_seconds": round(fl_cpu, 1),
          "goal_seconds": 60,
          "dense_reference_seconds_estimated": round(dense * k, 1),
          "speedup_vs_dense": round(dense * k / fl_seconds, 1), "s2l_seconds": round(s2l_seconds, 1),
          "coverage": coverage, "others_cpu_share": None if others is None else round(others, 3)}, args.out_json)


if __name__ == "__main__":
    main()
