#!/usr/bin/env python
"""How fast s2l scores examples, against the way the papers' code measured losses, in one process.

On one model and one set of examples it times:

  reference    one example at a time, float32, `model(input_ids, labels=labels).loss` with the prompt
               tokens labelled -100 (how the S2L / learning-percentage reference code measured losses);
  s2l fp32     `s2l.trajectories.scoring.score_examples` with float32 weights;
  s2l bf16     the same scorer with the weights cast to bfloat16;
  s2l bf16c    with --compile: that bf16 scorer torch.compile'd as `--compile` does it (compiled during
               the warm-up, over every batch shape, so the timed passes do not recompile);

and the machine's measured float32 and bf16 matmul peak (large square `torch.matmul`, best of several),
and the bf16 rate of this model's own matrix shapes (its nn.Linear layers on a batch of tokens), the
ceiling a scorer of this model could reach if it did nothing but its matmuls.
Model FLOPs are counted as 2 x parameters x input tokens (every input token of every example, padding
not counted), so GFLOP/s over the bf16 matmul peak is a model-FLOPs utilisation.

The machine is assumed shared and noisy, so only ratios measured here, in this process, are meant to
be compared: every variant gets one untimed warm-up pass (over a subset unless --warmup full), then
the timed work is interleaved, one scorer batch of each s2l variant and a slice of the reference loop
per round, with the peak's matmuls taken between rounds, so load from other processes falls on all of
them alike. It also reports the share of CPU time other processes took meanwhile: on a busy machine
the figures are suspect, because an OpenMP loop of many small ops (the reference) slows down far
more than large batched ones, which inflates the speedups.

It also checks that s2l fp32 agrees with the reference within 1e-4 on the examples both scored (exit
status 1 if not), and reports the largest |bf16 - fp32| loss difference. The last line of stdout is
one JSON object.

    python bench/score_speed.py                      # smollm2-135m-instruct, 256 examples (64 for the reference)
    python bench/score_speed.py --threads 1 --max-batch-tokens 4096 --out-json /tmp/speed.json
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import CpuShare, MatmulPeak, emit, math_pool
AGREEMENT_TOLERANCE = 1e-4
BUSY_SHARE = 0.05  # other processes' share of the CPUs above which the figures are flagged
WARMUP_REFERENCE = 4  # examples in the reference loop's warm-up pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="packaged model name or a local Hugging Face folder (default: smollm2-135m-instruct)")
    p.add_argument("--data", default=None,
                   help="a pool file to read examples from (default: generate one with examples/make_math_pool.py)")
    p.add_argument("--examples", type=int, default=256, help="examples scored by the s2l variants (default: 256)")
    p.add_argument("--reference-examples", type=int, default=64,
                   help="examples scored by the slow one-at-a-time reference loop, the first N of the set (default: 64)")
    p.add_argument("--max-batch-tokens", type=int, default=4096, help="scorer's padded-token budget per batch (default: 4096, as s2l's)")
    p.add_argument("--max-batch-size", type=int, default=64, help="scorer's most examples per batch (default: 64)")
    p.add_argument("--max-length", type=int, default=512, help="tokens kept per example (default: 512)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--warmup", choices=("subset", "full"), default="subset",
                   help="untimed warm-up pass per variant over a subset (the reference's first few examples, the "
                        "scorer's longest batch) or over everything (default: subset)")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed passes of the whole interleaved schedule; each piece keeps its fastest time (default: 1)")
    p.add_argument("--peak-sizes", default="1024,2048,4096", help="square matmul sizes for the peak (default: 1024,2048,4096)")
    p.add_argument("--peak-repeats", type=int, default=15,
                   help="timed matmuls per size and dtype, spread between the variants' rounds; the fastest counts "
                        "(default: 15; bf16 matmul speed here jumps between two levels, so few samples understate the peak)")
    p.add_argument("--compile", action="store_true",
                   help="also time the bf16 scorer compiled as `s2l record/score --compile` does (minutes to compile)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated pool (default: 0)")
    p.add_argument("--out-json", default=None, help="also write the result JSON here")
    args = p.parse_args(argv)
    if args.examples < 1 or args.reference_examples < 1:
        p.error("--examples and --reference-examples must be at least 1")
    return args


def quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# -- the examples ---------------------------------------------------------------------------------------
def load_examples(args, tokenizer):
    from s2l.data import load_pool, tokenize_examples

    with tempfile.TemporaryDirectory(prefix="s2l-bench-") as tmp:
        data = args.data
        if data is None:
            data = str(math_pool(Path(tmp), args.examples, seed=args.seed))
        pool = load_pool(data)
        tokenized = tokenize_examples(tokenizer, pool.examples[: args.examples], args.max_length)
    tokenized = [t for t in tokenized if t.n_tokens > 0]  # an example with no response token has no loss
    if not tokenized:
        sys.exit("no example has a response token to score")
    return tokenized


# -- the variants ---------------------------------------------------------------------------------------
@torch.no_grad()
def reference_losses(model, examples) -> np.ndarray:
    """The papers' way: one example per forward, prompt labelled -100, transformers' own mean loss."""
    model.eval()
    out = np.empty(len(examples))
    for i, e in enumerate(examples):
        input_ids = torch.from_numpy(e.input_ids.astype(np.int64))[None]
        labels = input_ids.clone()
        labels[0, ~torch.from_numpy(e.loss_mask)] = -100
        out[i] = model(input_ids=input_ids, labels=labels).loss.item()
    return out


def s2l_losses(model, examples, args) -> np.ndarray:
    from s2l.trajectories.scoring import score_examples

    losses, _ = score_examples(model, examples, args.max_batch_tokens, args.max_batch_size)
    return losses


def interleaved_times(variants: dict, rounds: int, repeats: int) -> dict:
    """Seconds per variant, timing the variants' pieces in alternation.

    `variants` maps a name to a list of `rounds` zero-argument callables (its share of the work, in
    order). Round k runs piece k of every variant, so load from other processes on a shared machine
    falls on all variants alike instead of on whichever ran while it lasted. With `repeats` > 1 the
    whole schedule runs again and each piece keeps its fastest time.
    """
    best = {name: [float("inf")] * rounds for name in variants}
    for _ in range(repeats):
        for k in range(rounds):
            for name, pieces in variants.items():
                start = time.perf_counter()
                pieces[k]()
                best[name][k] = min(best[name][k], time.perf_counter() - start)
    return {name: sum(times) for name, times in best.items()}


class ModelMatmuls:
    """The rate this model's own matrix products reach in bf16: every distinct nn.Linear of the transformer
    body, as [batch tokens x in] @ [in x out], timed like MatmulPeak (fastest sample of each) and weighted
    by how often a pass runs it. A small model's products are thin (SmolLM2: 576 wide), so this ceiling
    sits well under the square-matmul peak; a scorer's share of it says what is left beside the matmuls.
    """

    def __init__(self, model, tokens: int):
        body = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in name]
        shapes: dict[tuple[int, int], int] = {}
        for m in body:
            shapes[(m.in_features, m.out_features)] = shapes.get((m.in_features, m.out_features), 0) + 1
        self.tokens, self.uses = tokens, shapes
        self.operands = {k: (torch.randn(tokens, k[0]).to(torch.bfloat16), torch.randn(k[1], k[0]).to(torch.bfloat16))
                         for k in shapes}
        self.best = {k: float("inf") for k in shapes}
        self.sample()  # warm-up

    def sample(self) -> None:
        for key, (x, w) in self.operands.items():
            start = time.perf_counter()
            torch.nn.functional.linear(x, w)
            self.best[key] = min(self.best[key], time.perf_counter() - start)

    def sampler(self, times: int):
        def run():
            for _ in range(times):
                self.sample()
        return run

    def gflops(self) -> float:
        flops = sum(2 * self.tokens * i * o * n for (i, o), n in self.uses.items())
        return flops / sum(self.best[k] * n for k, n in self.uses.items()) / 1e9


# -- the report -----------------------------------------------------------------------------------------
def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_transformers()
    from s2l.models import load_model, load_tokenizer, resolve
    from s2l.trajectories.scoring import token_budget_batches

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    model_path = resolve(args.model)
    tokenizer = load_tokenizer(model_path)
    examples = load_examples(args, tokenizer)
    reference_set = examples[: args.reference_examples]
    model = load_model(model_path, "float32", "cpu")
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    bf16_model = copy.deepcopy(model).to(torch.bfloat16)
    compiled_model = None
    if args.compile:
        from s2l.config import ScoreConfig
        from s2l.trajectories.record import ScoringModel
        compiled_model = ScoringModel(ScoreConfig(dtype="bf16", compile=True)).weights_of(model)

    n_ex, n_ref = len(examples), len(reference_set)
    tokens = sum(len(e) for e in examples)
    ref_tokens = sum(len(e) for e in reference_set)
    loss_tokens = sum(e.n_tokens for e in examples)
    lengths = [len(e) for e in examples]
    batches = token_budget_batches(lengths, args.max_batch_tokens, args.max_batch_size)
    padded_tokens = sum(len(b) * max(lengths[i] for i in b) for b in batches)

    print(f"model {args.model}: {n_params / 1e6:.1f}M parameters; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load_before:.2f}")
    print(f"examples: {n_ex} ({tokens} input tokens, {loss_tokens} response tokens, lengths "
          f"{min(lengths)}-{max(lengths)}); reference loop on the first {n_ref} ({ref_tokens} input tokens)")
    print(f"s2l batches: {len(batches)} (max {args.max_batch_tokens} tokens, {args.max_batch_size} examples), "
          f"{padded_tokens} padded tokens ({tokens / padded_tokens:.1%} real)")

    ref = np.full(n_ref, np.nan)
    fp32 = np.full(n_ex, np.nan)
    bf16 = np.full(n_ex, np.nan)
    bf16c = np.full(n_ex, np.nan)

    def reference_piece(part):
        def run():
            ref[part] = reference_losses(model, [reference_set[i] for i in part])
        return run

    def s2l_piece(target, scorer, batch):
        members = np.sort(batch)  # one batch of the scorer's own plan: scored alone, it is batched the same way
        def run():
            target[members] = s2l_losses(scorer, [examples[i] for i in members], args)
        return run

    cpu_share = CpuShare()
    # One untimed warm-up pass per variant (over a warm-up subset unless --warmup full), then the timed
    # passes, interleaved batch by batch with the matmul-peak samples.
    warm = time.perf_counter()
    if args.warmup == "full":
        reference_losses(model, reference_set)
        s2l_losses(model, examples, args)
        s2l_losses(bf16_model, examples, args)
    else:
        reference_losses(model, reference_set[:WARMUP_REFERENCE])
        for scorer in (model, bf16_model):
            s2l_losses(scorer, [examples[i] for i in np.sort(batches[0])], args)  # the longest batch
    compile_seconds = None
    if compiled_model is not None:  # every batch of the plan, alone, as the timed passes run them
        clock = time.perf_counter()
        for b in batches:
            s2l_losses(compiled_model, [examples[i] for i in np.sort(b)], args)
        compile_seconds = time.perf_counter() - clock
        print(f"compiled: {compile_seconds:.0f} s for the first pass (compiling included)")
    sizes = [int(s) for s in args.peak_sizes.split(",") if s.strip()]
    peak = MatmulPeak([torch.bfloat16, torch.float32], sizes)
    shaped = ModelMatmuls(model, args.max_batch_tokens)
    warmup_seconds = time.perf_counter() - warm

    rounds = len(batches)
    per_round = -(-args.peak_repeats // rounds)
    seconds = interleaved_times({
        "reference": [reference_piece(part) for part in np.array_split(np.arange(n_ref), rounds)],
        "fp32": [s2l_piece(fp32, model, b) for b in batches],
        "bf16": [s2l_piece(bf16, bf16_model, b) for b in batches],
        **({"bf16c": [s2l_piece(bf16c, compiled_model, b) for b in batches]} if compiled_model is not None else {}),
        "peak": [peak.sampler(per_round) for _ in range(rounds)],
        "shaped": [shaped.sampler(per_round) for _ in range(rounds)],
    }, rounds, args.repeats)
    while min(peak.samples.values()) < args.peak_repeats:
        peak.sample()
        shaped.sample()
    shaped_bf16 = shaped.gflops()
    t_ref, t_fp32, t_bf16 = seconds["reference"], seconds["fp32"], seconds["bf16"]
    peak_bf16_sizes, peak_fp32_sizes = peak.gflops(torch.bfloat16), peak.gflops(torch.float32)
    peak_bf16, peak_fp32 = max(peak_bf16_sizes.values()), max(peak_fp32_sizes.values())
    load_after = os.getloadavg()[0]
    others = cpu_share.others()

    diff_fp32 = float(np.max(np.abs(fp32[:n_ref] - ref)))
    diff_bf16 = float(np.max(np.abs(bf16 - fp32)))
    agrees = diff_fp32 <= AGREEMENT_TOLERANCE

    def figures(seconds, n, toks):
        gflops = 2 * n_params * toks / seconds / 1e9
        return {"seconds": seconds, "examples_per_s": n / seconds, "tokens_per_s": toks / seconds, "gflops": gflops,
                "frac_bf16_peak": gflops / peak_bf16}

    variants = {
        "reference fp32, 1 at a time": (n_ref, figures(t_ref, n_ref, ref_tokens)),
        "s2l scorer fp32": (n_ex, figures(t_fp32, n_ex, tokens)),
        "s2l scorer bf16": (n_ex, figures(t_bf16, n_ex, tokens)),
    }
    if compiled_model is not None:
        variants["s2l scorer bf16c"] = (n_ex, figures(seconds["bf16c"], n_ex, tokens))
    ref_rate = variants["reference fp32, 1 at a time"][1]["examples_per_s"]
    rows = [[name, n, f"{f['seconds']:.2f}", f"{f['examples_per_s']:.2f}", f"{f['tokens_per_s']:.0f}",
             f"{f['gflops']:.1f}", f"{f['frac_bf16_peak']:.1%}", f"{f['examples_per_s'] / ref_rate:.2f}x"]
            for name, (n, f) in variants.items()]
    print(f"warm-up: {warmup_seconds:.1f} s ({args.warmup}); timed: {rounds} interleaved rounds x {args.repeats}; "
          f"load average {load_after:.2f} at the end")
    if others is not None:
        busy = others > BUSY_SHARE
        print(f"{'warning: ' if busy else ''}other processes used {others:.0%} of the CPUs' time while this ran"
              + ("; they slow the reference loop (many small ops) far more than the batched scorer, "
                 "so the speedups are inflated" if busy else ""))
    print()
    print(table(rows, ["variant", "examples", "seconds", "ex/s", "tok/s", "GFLOP/s", "of bf16 peak", "vs reference"]))
    print()
    print("model FLOPs = 2 x {:.1f}M parameters x input tokens; matmul peak GFLOP/s (best of {}): bf16 {}; fp32 {}".format(
        n_params / 1e6, min(peak.samples.values()),
        ", ".join(f"{n}: {g:.0f}" for n, g in peak_bf16_sizes.items()),
        ", ".join(f"{n}: {g:.0f}" for n, g in peak_fp32_sizes.items())))
    print(f"this model's own matmul shapes ({len(shaped.uses)} distinct nn.Linear, {args.max_batch_tokens}-token "
          f"batches) reach {shaped_bf16:.0f} GFLOP/s in bf16, {shaped_bf16 / peak_bf16:.0%} of the square peak; "
          f"the bf16 scorer is at {variants['s2l scorer bf16'][1]['gflops'] / shaped_bf16:.0%} of that"
          + (f", compiled at {variants['s2l scorer bf16c'][1]['gflops'] / shaped_bf16:.0%}" if compiled_model is not None
             else ""))
    print(f"s2l fp32 vs reference on {n_ref} examples: max |diff| {diff_fp32:.2e} "
          f"({'agrees' if agrees else 'DISAGREES'} within {AGREEMENT_TOLERANCE:g})")
    print(f"s2l bf16 vs s2l fp32 on {n_ex} examples: max |diff| {diff_bf16:.2e}, "
          f"mean |diff| {float(np.mean(np.abs(bf16 - fp32))):.2e}")
    diff_compiled = None
    if compiled_model is not None:
        diff_compiled = float(np.max(np.abs(bf16c - bf16)))
        print(f"s2l bf16 compiled vs eager bf16: max |diff| {diff_compiled:.2e}, vs fp32: max |diff| "
              f"{float(np.max(np.abs(bf16c - fp32))):.2e}, mean {float(np.mean(np.abs(bf16c - fp32))):.2e}")
    print(f"total {time.perf_counter() - started:.0f} s")

    fig = {name.split()[-1] if name.startswith("s2l") else "reference": f for name, (_, f) in variants.items()}
    speedup_fp32 = fig["fp32"]["examples_per_s"] / ref_rate
    speedup_bf16 = fig["bf16"]["examples_per_s"] / ref_rate
    result = {
        "benchmark": "score_speed",
        "model": args.model,
        "parameters": n_params,
        "threads": torch.get_num_threads(),
        "max_batch_tokens": args.max_batch_tokens,
        "max_batch_size": args.max_batch_size,
        "examples": n_ex,
        "reference_examples": n_ref,
        "input_tokens": tokens,
        "reference_input_tokens": ref_tokens,
        "response_tokens": loss_tokens,
        "padded_tokens": padded_tokens,
        "speedup_vs_reference": max(speedup_fp32, speedup_bf16),
        "best_variant": "bf16" if speedup_bf16 >= speedup_fp32 else "fp32",
        "speedup_fp32_vs_reference": speedup_fp32,
        "speedup_bf16_vs_reference": speedup_bf16,
        "reference_examples_per_s": ref_rate,
        "fp32_examples_per_s": fig["fp32"]["examples_per_s"],
        "bf16_examples_per_s": fig["bf16"]["examples_per_s"],
        "reference_tokens_per_s": fig["reference"]["tokens_per_s"],
        "fp32_tokens_per_s": fig["fp32"]["tokens_per_s"],
        "bf16_tokens_per_s": fig["bf16"]["tokens_per_s"],
        "reference_gflops": fig["reference"]["gflops"],
        "fp32_gflops": fig["fp32"]["gflops"],
        "bf16_gflops": fig["bf16"]["gflops"],
        "mfu_bf16": fig["bf16"]["gflops"] / peak_bf16,
        "mfu_fp32": fig["fp32"]["gflops"] / peak_fp32,
        **({"bf16_compiled_examples_per_s": fig["bf16c"]["examples_per_s"],
            "speedup_bf16_compiled_vs_reference": fig["bf16c"]["examples_per_s"] / ref_rate,
            "compiled_vs_eager_bf16": seconds["bf16"] / seconds["bf16c"],
            "mfu_bf16_compiled": fig["bf16c"]["gflops"] / peak_bf16,
            "compile_seconds": compile_seconds, "max_abs_diff_compiled_vs_bf16": diff_compiled}
           if compiled_model is not None else {}),
        "peak_bf16_gflops": peak_bf16,
        "model_shaped_bf16_gflops": shaped_bf16,
        "bf16_of_model_shaped": fig["bf16"]["gflops"] / shaped_bf16,
        **({"bf16_compiled_of_model_shaped": fig["bf16c"]["gflops"] / shaped_bf16} if compiled_model is not None else {}),
        "peak_fp32_gflops": peak_fp32,
        "max_abs_diff_fp32": diff_fp32,
        "fp32_agrees": agrees,
        "max_abs_diff_bf16": diff_bf16,
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "others_cpu_share": None if others is None else round(others, 3),
        "cpus": os.cpu_count(),
    }
    result = {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in result.items()}
    emit(result, args.out_json)
    return 0 if agrees else 1


if __name__ == "__main__":
    sys.exit(main())
