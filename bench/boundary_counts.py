#!/usr/bin/env python
"""How often the prompt/response boundary rules (`--boundary`) disagree on a pool.

For each pool, tokenises every example under each rule (reference, characters, separate; see
s2l.data.tokenize) and counts the examples whose number of loss-carrying tokens differs between two
rules, and what their responses start with. Tokenising only, no model: Dolly's 14,989 examples take
about 100 s on a shared 2-core machine. The last line of stdout is one JSON object.

    python bench/boundary_counts.py quickstart/data/pool.jsonl
    python bench/boundary_counts.py pool.jsonl other.parquet --tokenizer smollm2-135m-instruct --max-length 512

A pool is read as `s2l record` reads it (--format, --template); records of other shapes (GSM8K's
question/answer) need renaming to instruction/output first.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from itertools import combinations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pools", nargs="+", help="pool files or directories")
    parser.add_argument("--tokenizer", default="smollm2-135m-instruct", help="a packaged name, folder or hub id")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--format", default="auto")
    parser.add_argument("--template", default="alpaca")
    args = parser.parse_args()

    from s2l.config import BOUNDARIES
    from s2l.data import load_pool, tokenize_examples
    from s2l.models import load_tokenizer, resolve

    tokenizer = load_tokenizer(resolve(args.tokenizer))
    results = []
    for path in args.pools:
        pool = load_pool(path, format=args.format, template=args.template)
        counts = {rule: [t.n_tokens for t in tokenize_examples(tokenizer, pool.examples, args.max_length, rule)]
                  for rule in BOUNDARIES}
        differ = {f"{a}!={b}": sum(x != y for x, y in zip(counts[a], counts[b])) for a, b in combinations(BOUNDARIES, 2)}
        starts = Counter((e.response or "")[:1] for e, x, y in zip(pool.examples, counts["reference"],
                                                                   counts["characters"]) if x != y)
        result = {"pool": str(path), "examples": len(pool.examples), "differ": differ,
                  "any_differ": sum(len({counts[r][i] for r in BOUNDARIES}) > 1 for i in range(len(pool.examples))),
                  "loss_tokens": {rule: sum(v) for rule, v in counts.items()},
                  "reference_vs_characters_response_starts": dict(starts.most_common(10))}
        print(f"{path}: {len(pool.examples)} examples; " + ", ".join(f"{k} {v}" for k, v in differ.items())
              + f"; response starts where reference != characters: {result['reference_vs_characters_response_starts']}")
        results.append(result)
    print(json.dumps({"tokenizer": args.tokenizer, "max_length": args.max_length, "pools": results}))


if __name__ == "__main__":
    main()
