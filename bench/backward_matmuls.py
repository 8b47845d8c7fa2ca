#!/usr/bin/env python
"""Do a training step's backward matmuls reach the forward's bf16 rate? The three products of one nn.Linear
(forward x @ W^T, input gradient g @ W, weight gradient g^T @ x) for each distinct linear shape of a model's
body and its vocabulary head, at a micro-batch's tokens, in bf16 and float32, with oneDNN on and off
(`torch.backends.mkldnn.flags`), and with 1 or all intra-op threads. Fastest of --repeats each.

    python bench/backward_matmuls.py --model smollm2-135m-instruct --tokens 800
"""

from __future__ import annotations

import argparse
import time

import torch

from common import emit


def best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--tokens", type=int, default=800, help="tokens in a micro-batch (8 x ~100)")
    p.add_argument("--head-tokens", type=int, default=344, help="response positions in a micro-batch (8 x ~43)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out-json")
    args = p.parse_args(argv)
    from s2l.models import load_model, resolve

    model = load_model(resolve(args.model), "float32", "cpu")
    shapes = sorted({(m.in_features, m.out_features) for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and "lm_head" not in n})
    head = tuple(model.get_output_embeddings().weight.shape[::-1])
    del model
    threads = torch.get_num_threads()
    rows = []
    for (i, o), tokens in [(s, args.tokens) for s in shapes] + [(head, args.head_tokens)]:
        for dtype in (torch.bfloat16, torch.float32):
            x, w, g = (torch.randn(tokens, i).to(dtype), torch.randn(o, i).to(dtype), torch.randn(tokens, o).to(dtype))
            products = {"forward x@W^T": lambda: x @ w.t(), "grad input g@W": lambda: g @ w,
                        "grad weight g^T@x": lambda: g.t() @ x}
            for onednn in (True, False):
                for n_threads in sorted({1, threads}):
                    torch.set_num_threads(n_threads)
                    with torch.backends.mkldnn.flags(enabled=onednn):
                        for name, fn in products.items():
                            s = best_seconds(fn, args.repeats)
                            rows.append({"shape": f"{tokens}x{i}->{o}", "dtype": str(dtype).split(".")[-1],
                                         "onednn": onednn, "threads": n_threads, "product": name,
                                         "gflops": round(2 * tokens * i * o / s / 1e9, 1)})
    torch.set_num_threads(threads)
    for r in rows:
        print(f"{r['shape']:>18} {r['dtype']:>9} oneDNN {'on ' if r['onednn'] else 'off'} threads {r['threads']} "
              f"{r['product']:<18} {r['gflops']:8.1f} GFLOP/s")
    return emit({"bench": "backward_matmuls", "model": args.model, "rows": rows}, args.out_json)


if __name__ == "__main__":
    main()
