"""Selection speed and memory at scale: 1,000,000 synthetic trajectories x 12 snapshots, 14 sources.

Each method runs in a fresh child process, so its peak memory (ru_maxrss) is its own. Figures:
  seconds     fit + select, after the trajectories are in memory
  peak_mib    the child's peak resident memory, all of it (Python, numpy, faiss, the matrix)
  ratio       seconds over a baseline run in the same child: for s2l, faiss K-means alone on the same
              sources (the reference implementation's core); for lp, one argsort of the final losses
  embedding   texts/s of the all-MiniLM-L6-v2 embedding lp's diversity layer runs before clustering
Goal (issue 3): s2l and lp each <= 10 s and <= 1 GiB on the 2-core development machine.

    python bench/select_speed.py                      # 1M x 12, budget 10%
    python bench/select_speed.py --n 100000           # quicker
The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time

import numpy as np


def synthetic_trajectories(n: int, snapshots: int, n_sources: int, seed: int = 0):
    """Decaying loss curves a * exp(-b t) + c + noise, with source sizes from 1 to ~30 parts."""
    from s2l.trajectories.matrix import Trajectories

    rng = np.random.default_rng(seed)
    weights = np.geomspace(1, 30, n_sources)
    sizes = np.floor(weights / weights.sum() * n).astype(int)
    sizes[-1] += n - sizes.sum()
    sources = np.repeat(np.asarray([f"source-{i:02d}" for i in range(n_sources)], dtype=object), sizes)
    t = np.linspace(0, 3, snapshots + 1)  # base model, then the snapshots over 3 epochs
    a, b, c = rng.uniform(0.5, 2.0, n), rng.uniform(0.3, 3.0, n), rng.uniform(0.05, 0.8, n)
    losses = a[:, None] * np.exp(-b[:, None] * t[None, :]) + c[:, None]
    losses += 0.02 * rng.standard_normal(losses.shape)
    ids = np.asarray([f"ex{i:08d}" for i in range(n)], dtype=object)
    return Trajectories(ids=ids, losses=losses, n_tokens=rng.integers(5, 300, n), sources=sources,
                        snapshots=[{"epoch": float(e)} for e in t])


def _baseline(method: str, t) -> float:
    started = time.perf_counter()
    if method == "s2l":
        import faiss

        for name in np.unique(t.sources):
            x = np.ascontiguousarray(t.losses[t.sources == name, 1:], dtype=np.float32)
            km = faiss.Kmeans(x.shape[1], 100, niter=20, seed=0, verbose=False)  # faiss defaults: 256 points/centroid
            km.train(x)
            km.index.search(x, 1)
    else:
        np.argsort(t.losses[:, -1], kind="stable")
    return time.perf_counter() - started


def _child(method: str, n: int, snapshots: int, n_sources: int, budget: float, queue) -> None:
    from s2l.selection import make_selector

    t = synthetic_trajectories(n, snapshots, n_sources)
    params = {"diversity": False} if method == "lp" else {}
    baseline = _baseline(method, t)
    started = time.perf_counter()
    ids = make_selector(method, seed=0, **params).fit(t).select(budget)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"method": method, "seconds": round(seconds, 2), "baseline_seconds": round(baseline, 2),
               "ratio": round(seconds / baseline, 2) if baseline > 0 else None, "peak_mib": round(peak_mib),
               "selected": len(ids)})


def embedding_rate(n: int) -> dict:
    """Texts per second of the MiniLM embedding that lp's diversity layer runs first (math-like requests)."""
    from s2l.selection.embed import embed_texts

    rng = np.random.default_rng(0)
    texts = [f"What is {' + '.join(str(v) for v in rng.integers(1, 99, rng.integers(2, 6)))}? Show your steps."
             for _ in range(n)]
    embed_texts(texts[:64], progress=False)  # load and warm up
    started = time.perf_counter()
    embed_texts(texts, progress=False)
    seconds = time.perf_counter() - started
    return {"texts": n, "seconds": round(seconds, 2), "texts_per_s": round(n / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--sources", type=int, default=14)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--methods", default="s2l,lp")
    parser.add_argument("--embed", type=int, default=2000, help="texts to embed for lp's diversity rate (0: skip)")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")  # a clean process per method, so peak memory is the method's own
    results = []
    for method in args.methods.split(","):
        queue = ctx.Queue()
        child = ctx.Process(target=_child, args=(method, args.n, args.snapshots, args.sources, args.budget, queue))
        child.start()
        result = queue.get()
        child.join()
        results.append(result)
        print(f"{method:>4}: {result['seconds']:6.2f} s  (baseline {result['baseline_seconds']:.2f} s, "
              f"ratio {result['ratio']})  peak {result['peak_mib']} MiB  selected {result['selected']}", file=sys.stderr)
    embedding = embedding_rate(args.embed) if args.embed else None
    if embedding:
        print(f"MiniLM embedding: {embedding['texts_per_s']} texts/s", file=sys.stderr)
    print(json.dumps({"bench": "select_speed", "n": args.n, "snapshots": args.snapshots, "sources": args.sources,
                      "budget": args.budget, "results": results, "embedding": embedding}))


if __name__ == "__main__":
    main()
