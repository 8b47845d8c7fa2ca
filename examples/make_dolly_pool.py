#!/usr/bin/env python
"""Build a Dolly instruction pool and a held-out Dolly split (the learning-percentage paper's setting).

Reads databricks-dolly-15k as rebuilt in ``../shared/data/instruct/dolly_rebuilt.jsonl`` (14,989 rows of
``instruction``, ``input``, ``output``; CC BY-SA 3.0, see that folder's README.md) and writes Alpaca-shaped
rows. Dolly's ``category`` becomes the row's ``source`` when the file has one; the rebuilt file has none,
so every row's source is ``dolly``. The held-out split is for held-out response loss (``s2l evaluate
--no-generate``): Dolly's responses are free text with no gold answer to grade.

A prompt is ``instruction`` + ``input``, compared lower-cased (NFKC) with punctuation and whitespace
removed. Dolly asks some prompts more than once with different responses ("What are the primary causes
of inflation?" 8 times): the test split takes one row of each of ``--test-size`` distinct prompts, and
every other row with a test prompt is left out of the pool (counted as ``prompt_in_test``). Prompts that
repeat inside the pool stay (they are Dolly's own distinct examples) and are counted. Rows with an empty
instruction or output are left out and counted.

Output (UTF-8 JSONL; each file written to a temporary file and renamed into place, all at the end):

    DIR/pool.jsonl    {"instruction", "input", "output", "source"}, a seeded random sample of --size rows
    DIR/test.jsonl    the same keys and "ood": false
    DIR/info.json     arguments, seed, the source file's sha256, sizes per source per split, rows left out

Usage:

    python examples/make_dolly_pool.py --source ../shared/data/instruct/dolly_rebuilt.jsonl \\
        --out data/dolly --size 5000 --test-size 500 --seed 0

The same seed gives byte-identical files. A missing file is an error naming it (exit 2); a malformed row
names its file and line (exit 2). See docs/real-data.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

try:
    from s2l.fileio import atomic_path, sha256_file
except ImportError:  # run from a checkout without s2l installed: its source is beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from s2l.fileio import atomic_path, sha256_file

# The math builder's file reading, errors and output bytes (this folder is on sys.path when run as a script).
from make_real_math_pool import SourceError, jsonl_bytes, jsonl_rows  # noqa: E402

PROG = "make_dolly_pool"
DEFAULT_SOURCE = "dolly"


def read_dolly(path: Path) -> tuple[list[dict], Counter]:
    """Alpaca-shaped rows in file order, and the rows left out (by reason)."""
    if not path.is_file():
        raise SourceError(f"missing source file {path}")
    rows, left_out = [], Counter()
    for where, obj in jsonl_rows(path):
        fields = {}
        for name in ("instruction", "input", "output"):
            value = obj.get(name, "" if name == "input" else None)
            if not isinstance(value, str):
                raise SourceError(f"{where}: field {name!r} must be a string, got {value!r}")
            fields[name] = value  # as published; only an empty one is left out
        category = obj.get("category")
        fields["source"] = category if isinstance(category, str) and category.strip() else DEFAULT_SOURCE
        if not fields["instruction"].strip() or not fields["output"].strip():
            left_out["empty_instruction_or_output"] += 1
            continue
        rows.append(fields)
    return rows, left_out


def prompt_key(row: dict) -> str:
    """Equal keys = the same prompt, up to case, punctuation and spacing."""
    text = unicodedata.normalize("NFKC", f"{row['instruction']} {row['input']}").lower()
    return re.sub(r"\W+", "", text)


def derive_seed(seed: int, purpose: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{PROG}|{seed}|{purpose}".encode()).digest()[:8], "big")


def split(args, rows: list[dict], left_out: Counter) -> tuple[list[dict], list[dict]]:
    """(pool, test): the test takes the first row of each of the first --test-size distinct prompts in a
    seeded shuffle; the pool is a seeded sample of --size of the rows whose prompt is not in the test."""
    order = list(range(len(rows)))
    random.Random(derive_seed(args.seed, "shuffle")).shuffle(order)
    test, test_keys = [], set()
    for i in order:
        if len(test) == args.test_size:
            break
        key = prompt_key(rows[i])
        if key not in test_keys:
            test_keys.add(key)
            test.append(i)
    taken = set(test)
    rest = []
    for i in order:
        if i in taken:
            continue
        if prompt_key(rows[i]) in test_keys:
            left_out["prompt_in_test"] += 1
        else:
            rest.append(i)
    if len(test) < args.test_size:
        raise SourceError(f"--test-size {args.test_size}: only {len(test)} distinct prompts in {args.source}")
    size = len(rest) if args.size is None else args.size
    if size > len(rest):
        raise SourceError(f"--size {size}: only {len(rest)} rows are left for the pool after the test split")
    return [rows[i] for i in rest[:size]], [{**rows[i], "ood": False} for i in test]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Build a Dolly pool (pool.jsonl), a held-out split "
                                     "(test.jsonl) and info.json from databricks-dolly-15k.")
    parser.add_argument("--source", required=True, type=Path, help="dolly_rebuilt.jsonl (or any Dolly JSONL)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--size", type=int, default=None, help="pool rows (default: every row left)")
    parser.add_argument("--test-size", type=int, default=500, help="held-out rows, distinct prompts (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    args = parser.parse_args(argv)
    if args.size is not None and args.size < 1:
        parser.error("--size must be at least 1")
    if args.test_size < 0:
        parser.error("--test-size must be 0 or more")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows, left_out = read_dolly(args.source)
        pool, test = split(args, rows, left_out)
    except SourceError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    pool_keys = Counter(prompt_key(r) for r in pool)
    info = {
        "generator": "examples/make_dolly_pool.py",
        # --out is left out, so that the same arguments give the same bytes wherever they are written.
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "seed": args.seed,
        "source_file": {"name": args.source.name, "sha256": sha256_file(args.source), "rows_read": len(rows) + left_out[
            "empty_instruction_or_output"]},
        "sizes": {"pool": dict(sorted(Counter(r["source"] for r in pool).items())),
                  "test": dict(sorted(Counter(r["source"] for r in test).items()))},
        "left_out": dict(sorted(left_out.items())),
        "repeated_prompts_in_pool": sum(n - 1 for n in pool_keys.values()),
    }
    files = {"pool.jsonl": jsonl_bytes(pool), "test.jsonl": jsonl_bytes(test),
             "info.json": (json.dumps(info, ensure_ascii=False, indent=2) + "\n").encode("utf-8")}
    with contextlib.ExitStack() as stack:  # the renames happen only once every file is written
        for name, data in files.items():
            stack.enter_context(atomic_path(args.out / name)).write_bytes(data)
    print(f"pool.jsonl: {len(pool)} rows; test.jsonl: {len(test)} rows; left out: "
          f"{', '.join(f'{k} {n}' for k, n in info['left_out'].items()) or 'none'}")
    print(f"written to {args.out}/ (pool.jsonl, test.jsonl, info.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
