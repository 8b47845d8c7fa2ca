#!/usr/bin/env python
"""Build a small MathInstruct-shaped math SFT pool from reasoning-gym.

The pool mixes several procedurally generated task kinds of clearly UNEQUAL
sizes (like MathInstruct's sources): the first kind gets the largest share and
each further kind a geometrically smaller one, so that the largest source is
``--imbalance`` times (default 6x) the smallest.  Every row carries a worked,
step-by-step answer that ends in a ``#### <answer>`` line, and every worked
answer is checked against reasoning-gym's own gold answer (string equality and
the dataset's ``score_answer``); rows that cannot be verified are dropped and
counted.  A held-out test split, balanced over the kinds and disjoint from the
pool, carries the gold answer and the reasoning-gym metadata so an evaluator can
call reasoning-gym's scorer.

Output (UTF-8 JSONL, one object per line, each file written atomically):

    DIR/pool.jsonl       {"instruction", "output", "source"}
    DIR/test.jsonl       {"instruction", "output", "source", "answer", "task",
                          "metadata" (when JSON-serialisable), "ood"}
    DIR/pool_info.json   counts per source, seed, generator settings, drops

Usage:

    python examples/make_math_pool.py --out data/math_pool
    python examples/make_math_pool.py --out DIR --size 5000 --test-size 200 \\
        --kinds chain_sum,products,leg_counting --ood-kinds gcd,lcm

The output is a pure function of the arguments (and the reasoning-gym
version): the same ``--seed`` gives byte-identical files.  Rows are streamed to
disk, so large pools (``--size 50000``) need little memory.  Only the standard
library and reasoning_gym are used.  Tune the per-kind difficulty in
``KIND_SETTINGS`` below.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
from typing import Any, Callable, Iterator

# --------------------------------------------------------------------------
# Settings: per-kind reasoning-gym generator configs (EASY on purpose, so that
# a ~135M-parameter model can learn them from a few hundred examples).  Each
# dict is passed as keyword arguments to ``reasoning_gym.create_dataset``.
# --------------------------------------------------------------------------
KIND_SETTINGS: dict[str, dict[str, Any]] = {
    # "4 - 1 + 37 =": 2-3 terms, 1-2 digit non-negative numbers, + and -.
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    # "-2 - -9 / 3": 2-3 one-digit (possibly negative) numbers, + - * /, brackets.
    "basic_arithmetic": {
        "min_terms": 2,
        "max_terms": 3,
        "min_digits": 1,
        "max_digits": 1,
        "allow_parentheses": True,
        "allow_negation": True,
        "whitespace": "single",
        "format_style": "simple",
    },
    # "9*k + 1 = 91": linear equations with constants 1..10, integer solution.
    "simple_equations": {"min_terms": 2, "max_terms": 3, "min_value": 1, "max_value": 10},
    # "37 * 46": two factors, both 1-digit or both 2-digit.
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    # "3 chickens, 2 spiders": 2-3 kinds of animal, 1-5 of each.
    "leg_counting": {"min_animals": 2, "max_animals": 3, "min_instances": 1, "max_instances": 5},
    # Not used by default (good --ood-kinds candidates):
    "gcd": {"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 100},
    "lcm": {"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 20},
    # GSM8K-style word problems; the worked answer comes from the metadata.
    # Only difficulty 1.0 exists in reasoning-gym, and it is NOT easy.
    "gsm_symbolic": {},
}

# Default kinds, largest share first.
DEFAULT_KINDS = ["chain_sum", "basic_arithmetic", "simple_equations", "products", "leg_counting"]
# Largest pool share / smallest pool share (shares are geometric in between);
# with 5 kinds this gives ~0.40 / 0.26 / 0.16 / 0.10 / 0.07.
DEFAULT_IMBALANCE = 6.0
# A kind may use at most this many candidates per wanted row (plus a constant)
# before giving up; candidates are skipped as duplicates, test collisions or
# unverifiable rows.
ATTEMPTS_PER_ROW = 50
ATTEMPTS_SLACK = 1000


class Unverifiable(Exception):
    """A row whose worked solution could not be built or checked; the message is the reason."""


# --------------------------------------------------------------------------
# Worked solutions.  Each solver takes a reasoning-gym entry and returns
# (reasoning lines, final answer); the caller appends "#### <answer>" and
# checks the answer against the gold one.
# --------------------------------------------------------------------------
Solution = tuple[list[str], str]


def solve_chain_sum(entry: dict) -> Solution:
    """Running sum, left to right: one line per + or -."""
    tokens = entry["metadata"]["expression"].split()
    if len(tokens) % 2 != 1:
        raise Unverifiable("unparsable expression")
    try:
        acc = int(tokens[0])
        lines = ["Add and subtract from left to right."] if len(tokens) > 3 else []
        for op, num in zip(tokens[1::2], tokens[2::2]):
            value = int(num)
            if op == "+":
                new = acc + value
            elif op == "-":
                new = acc - value
            else:
                raise Unverifiable("unexpected operator")
            lines.append(f"{acc} {op} {value} = {new}")
            acc = new
    except ValueError as exc:
        raise Unverifiable("unparsable expression") from exc
    return lines, str(acc)


# ---- basic_arithmetic: a tiny parser that records each operation it performs.
_TOKEN_RE = re.compile(r"\s*(\d+|[-+*/()])")


def _tokenize(expression: str) -> list[str]:
    expression = expression.strip()
    tokens, pos = [], 0
    while pos < len(expression):
        match = _TOKEN_RE.match(expression, pos)
        if not match:
            raise Unverifiable("unparsable expression")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _StepEvaluator:
    """Evaluates + - * / ( ) and unary minus with Python's precedence.

    Division must be exact (reasoning-gym evaluates with ``//``; we refuse to
    teach floor division).  Every operation is recorded as a line such as
    ``-9 / 3 = -3``, in the order a person would do them.
    """

    def __init__(self, expression: str):
        self.tokens = _tokenize(expression)
        self.pos = 0
        self.lines: list[str] = []

    def evaluate(self) -> int:
        value = self._expr()
        if self.pos != len(self.tokens):
            raise Unverifiable("unparsable expression")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise Unverifiable("unparsable expression")
        self.pos += 1
        return token

    def _expr(self) -> int:
        value = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()
            right = self._term()
            result = value + right if op == "+" else value - right
            self.lines.append(f"{value} {op} {right} = {result}")
            value = result
        return value

    def _term(self) -> int:
        value = self._unary()
        while self._peek() in ("*", "/"):
            op = self._take()
            right = self._unary()
            if op == "*":
                result = value * right
            else:
                if right == 0:
                    raise Unverifiable("division by zero")
                if value % right != 0:
                    raise Unverifiable("inexact division")
                result = value // right
            self.lines.append(f"{value} {op} {right} = {result}")
            value = result
        return value

    def _unary(self) -> int:
        if self._peek() == "-":
            self._take()
            if self._peek() is not None and self._peek().isdigit():
                return -int(self._take())  # a negative literal such as -8
            value = self._unary()
            self.lines.append(f"-({value}) = {-value}")
            return -value
        return self._atom()

    def _atom(self) -> int:
        token = self._take()
        if token.isdigit():
            return int(token)
        if token == "(":
            value = self._expr()
            if self._take() != ")":
                raise Unverifiable("unparsable expression")
            return value
        raise Unverifiable("unparsable expression")


def solve_basic_arithmetic(entry: dict) -> Solution:
    """Brackets first, then * and /, then + and -, one operation per line."""
    evaluator = _StepEvaluator(entry["metadata"]["expression"])
    value = evaluator.evaluate()
    lines = ["Work out brackets first, then * and /, then + and - from left to right."]
    lines += evaluator.lines or [f"The expression is just {value}."]
    return lines, str(value)


# ---- simple_equations: linear equation a*x + b = c.
_LINEAR_TERM_RE = re.compile(r"([+-]?)(\d+\*[a-z]|\d+|[a-z])")


def _show_var_term(coef: int, var: str) -> str:
    if coef == 1:
        return var
    if coef == -1:
        return f"-{var}"
    return f"{coef}*{var}"


def solve_simple_equations(entry: dict) -> Solution:
    """Move the constant to the right-hand side, then divide by the coefficient."""
    meta = entry["metadata"]
    var, equation = meta["variable"], meta["equation"]
    if equation.count("=") != 1:
        raise Unverifiable("unparsable equation")
    lhs, rhs = (side.replace(" ", "") for side in equation.split("="))
    try:
        c = int(rhs)
    except ValueError as exc:
        raise Unverifiable("unparsable equation") from exc
    terms = _LINEAR_TERM_RE.findall(lhs)
    if "".join(sign + body for sign, body in terms) != lhs:
        raise Unverifiable("unparsable equation")
    a = b = 0
    for sign, body in terms:
        factor = -1 if sign == "-" else 1
        if body == var:
            a += factor
        elif body.endswith("*" + var):
            a += factor * int(body[: -len(var) - 1])
        elif body.isdigit():
            b += factor * int(body)
        else:
            raise Unverifiable("unparsable equation")
    if a == 0:
        raise Unverifiable("no unique solution")  # e.g. reasoning-gym's "0 = 0"
    lines = [f"We want {var} on its own: {equation}."]
    if b != 0:
        verb = f"Subtract {b} from" if b > 0 else f"Add {-b} to"
        lines.append(f"{verb} both sides: {_show_var_term(a, var)} = {c - b}.")
    if a != 1:
        if (c - b) % a != 0:
            raise Unverifiable("non-integer solution")
        lines.append(f"Divide both sides by {a}: {var} = {(c - b) // a}.")
    solution = (c - b) // a
    if a * solution + b != c:
        raise Unverifiable("solution does not check")
    return lines, str(solution)


# ---- products: long multiplication by place value.
def _multiply_lines(a: int, b: int) -> list[str]:
    """Lines computing a * b, splitting a multi-digit b by place value."""
    if a < 0 or b < 0:
        lines = _multiply_lines(abs(a), abs(b))
        if (a < 0) != (b < 0) and a * b != 0:
            lines.append(f"Exactly one factor is negative, so {a} * {b} = {a * b}.")
        return lines
    digits = str(b)
    parts = [int(d) * 10 ** (len(digits) - i - 1) for i, d in enumerate(digits) if d != "0"]
    if a < 10 or len(parts) <= 1:
        return [f"{a} * {b} = {a * b}"]
    partials = [a * part for part in parts]
    lines = [f"Split {b} into {' + '.join(map(str, parts))}."]
    lines += [f"{a} * {part} = {partial}" for part, partial in zip(parts, partials)]
    lines.append(f"{' + '.join(map(str, partials))} = {sum(partials)}")
    return lines


def solve_products(entry: dict) -> Solution:
    tokens = entry["metadata"]["expression"].split(" * ")
    try:
        factors = [int(t) for t in tokens]
    except ValueError as exc:
        raise Unverifiable("unparsable expression") from exc
    acc, lines = factors[0], []
    for factor in factors[1:]:
        lines += _multiply_lines(acc, factor)
        acc *= factor
    return lines or [f"The product is just {acc}."], str(acc)


# ---- leg_counting: legs per kind of animal, then the total.
def solve_leg_counting(entry: dict) -> Solution:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    lines, subtotals = [], []
    for animal, count in entry["metadata"]["animals"].items():
        if animal not in ANIMALS:
            raise Unverifiable("unknown animal")
        legs = ANIMALS[animal]
        name = f"{animal}{'s' if count > 1 else ''}"
        verb = "have" if count > 1 else "has"
        subtotals.append(count * legs)
        lines.append(f"Each {animal} has {legs} legs, so {count} {name} {verb} {count} * {legs} = {count * legs} legs.")
    total = sum(subtotals)
    if len(subtotals) > 1:
        lines.append(f"Total: {' + '.join(map(str, subtotals))} = {total} legs.")
    return lines, str(total)


# ---- gcd / lcm: Euclid's algorithm.
def _euclid_lines(a: int, b: int) -> tuple[list[str], int]:
    lines = []
    x, y = max(a, b), min(a, b)
    if y == 0:
        return [f"gcd({a}, {b}) = {x}."], x
    while y:
        lines.append(f"{x} = {x // y} * {y} + {x % y}")
        x, y = y, x % y
    lines.append(f"The last non-zero remainder is {x}, so gcd({a}, {b}) = {x}.")
    return lines, x


def solve_gcd(entry: dict) -> Solution:
    numbers = [int(n) for n in entry["metadata"]["numbers"]]
    lines = ["Use Euclid's algorithm."]
    g = numbers[0]
    for n in numbers[1:]:
        more, g_new = _euclid_lines(g, n)
        lines += more
        g = g_new
    return lines, str(g)


def solve_lcm(entry: dict) -> Solution:
    numbers = [int(n) for n in entry["metadata"]["numbers"]]
    lines, acc = [], numbers[0]
    for n in numbers[1:]:
        euclid, g = _euclid_lines(acc, n)
        lines += euclid
        new = acc * n // g
        lines.append(f"lcm({acc}, {n}) = {acc} * {n} / {g} = {acc * n} / {g} = {new}.")
        acc = new
    return lines, str(acc)


# ---- gsm_symbolic: reasoning-gym ships the worked solution in the metadata.
def solve_gsm_symbolic(entry: dict) -> Solution:
    cot = entry["metadata"].get("answer_cot")
    if not isinstance(cot, str):
        raise Unverifiable("no worked solution in metadata")
    lines = cot.strip().splitlines()
    if not lines or not lines[-1].startswith("####"):
        raise Unverifiable("worked solution has no #### line")
    final = lines[-1][4:].strip()
    try:
        same = float(final) == float(entry["answer"])
    except ValueError as exc:
        raise Unverifiable("unparsable final answer") from exc
    if not same:
        raise Unverifiable("worked solution disagrees with gold")
    # The metadata sometimes writes "16.0" where the gold answer is "16".
    body = [line for line in lines[:-1] if line.strip()]
    return body, entry["answer"]


SOLVERS: dict[str, Callable[[dict], Solution]] = {
    "chain_sum": solve_chain_sum,
    "basic_arithmetic": solve_basic_arithmetic,
    "simple_equations": solve_simple_equations,
    "products": solve_products,
    "leg_counting": solve_leg_counting,
    "gcd": solve_gcd,
    "lcm": solve_lcm,
    "gsm_symbolic": solve_gsm_symbolic,
}
assert set(SOLVERS) == set(KIND_SETTINGS)


def worked_solution(kind: str, dataset: Any, entry: dict) -> str:
    """Return the verified worked answer for an entry, or raise Unverifiable."""
    try:
        lines, final = SOLVERS[kind](entry)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise Unverifiable(f"solver error ({type(exc).__name__})") from exc
    gold = entry["answer"]
    if final != gold:
        raise Unverifiable("worked answer disagrees with gold")
    if dataset.score_answer(final, entry) != 1.0:
        raise Unverifiable("rejected by score_answer")
    return "\n".join(lines + [f"#### {final}"])


# --------------------------------------------------------------------------
# Sizes, seeds and sampling.
# --------------------------------------------------------------------------
def pool_quotas(size: int, n_kinds: int, imbalance: float) -> list[int]:
    """Split ``size`` rows over kinds with geometric shares (largest first).

    Every kind gets at least one row; the rest is shared out by largest
    remainder, so the counts sum to ``size`` exactly.
    """
    if n_kinds == 1:
        return [size]
    weights = [imbalance ** (-i / (n_kinds - 1)) for i in range(n_kinds)]
    total_w = sum(weights)
    spare = size - n_kinds
    ideal = [spare * w / total_w for w in weights]
    quotas = [1 + math.floor(x) for x in ideal]
    order = sorted(range(n_kinds), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    for i in order[: size - sum(quotas)]:
        quotas[i] += 1
    return quotas


def balanced_quotas(test_size: int, n_kinds: int) -> list[int]:
    """Equal counts per kind; the first kinds take the remainder."""
    base, extra = divmod(test_size, n_kinds)
    return [base + (1 if i < extra else 0) for i in range(n_kinds)]


def derive_seed(seed: int, kind: str, split: str) -> int:
    """A 63-bit dataset seed per (seed, kind, split).

    reasoning-gym seeds entry ``idx`` with ``Random(seed + idx)``, so nearby
    seeds would share entries; hashing keeps the splits' seeds far apart.
    """
    digest = hashlib.sha256(f"make_math_pool|{seed}|{kind}|{split}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def problem_key(kind: str, entry: dict) -> bytes:
    """Identity of a problem within a kind (ignores question templates)."""
    meta = entry.get("metadata") or {}
    core = meta.get("expression") or entry["question"].strip()
    if "equation" in meta and "variable" in meta:
        core = f"{meta['variable']}|{meta['equation']}"
    return hashlib.blake2b(f"{kind}\x00{core}".encode(), digest_size=16).digest()


def text_key(question: str) -> bytes:
    return hashlib.blake2b(question.encode(), digest_size=16).digest()


class Exhausted(Exception):
    pass


class KindSampler:
    """Draws verified rows of one kind from one reasoning-gym stream."""

    def __init__(self, kind: str, seed: int, split: str, wanted: int, stats: dict):
        import reasoning_gym

        self.kind = kind
        self.budget = wanted * ATTEMPTS_PER_ROW + ATTEMPTS_SLACK
        self.dataset_seed = derive_seed(seed, kind, split)
        self.dataset = reasoning_gym.create_dataset(
            kind, size=self.budget, seed=self.dataset_seed, **KIND_SETTINGS[kind]
        )
        self.index = 0
        self.stats = stats  # {"drawn": n, "skipped": {reason: n}}

    def _skip(self, reason: str) -> None:
        skipped = self.stats["skipped"]
        skipped[reason] = skipped.get(reason, 0) + 1

    def next_row(self, forbidden: Callable[[dict], str | None]) -> tuple[dict, str]:
        """Next entry that passes ``forbidden`` (returns a skip reason or None) and verifies."""
        while self.index < self.budget:
            entry = self.dataset[self.index]
            self.index += 1
            self.stats["drawn"] += 1
            reason = forbidden(entry)
            if reason:
                self._skip(reason)
                continue
            try:
                output = worked_solution(self.kind, self.dataset, entry)
            except Unverifiable as exc:
                self._skip(f"unverifiable: {exc}")
                continue
            return entry, output
        raise Exhausted(
            f"{self.kind}: no new verifiable row after {self.budget} candidates "
            f"(skipped: {self.stats['skipped']}); make the kind harder in KIND_SETTINGS, "
            "ask for fewer rows, or pass --allow-duplicates"
        )


def new_stats() -> dict:
    return {"drawn": 0, "skipped": {}}


# --------------------------------------------------------------------------
# Building the splits.
# --------------------------------------------------------------------------
def build_test(args, kinds: list[str], ood_kinds: list[str], info: dict) -> tuple[list[dict], dict[str, set]]:
    """Balanced, de-duplicated test rows (pool kinds, then OOD kinds), interleaved.

    Also returns each kind's set of problem keys, which the pool must avoid.
    """
    counts = balanced_quotas(args.test_size, len(kinds)) if args.test_size else [0] * len(kinds)
    per_ood = max(counts) if counts else 0
    plan = [(k, n, False) for k, n in zip(kinds, counts)] + [(k, per_ood, True) for k in ood_kinds]
    by_kind: list[list[dict]] = []
    keys_by_kind: dict[str, set] = {}
    for kind, wanted, ood in plan:
        stats = new_stats()
        info["skipped"].setdefault(kind, {})["test"] = stats
        sampler = KindSampler(kind, args.seed, "test", wanted, stats)
        info["dataset_seeds"].setdefault(kind, {})["test"] = sampler.dataset_seed
        keys = keys_by_kind[kind] = set()

        def forbidden(entry: dict, kind=kind, keys=keys) -> str | None:
            return "duplicate" if problem_key(kind, entry) in keys else None

        rows = []
        for _ in range(wanted):
            entry, output = sampler.next_row(forbidden)
            keys.add(problem_key(kind, entry))
            row = {
                "instruction": entry["question"].strip(),
                "output": output,
                "source": kind,
                "answer": entry["answer"],
                "task": entry["metadata"].get("source_dataset", kind),
            }
            try:
                json.dumps(entry["metadata"], allow_nan=False)
                row["metadata"] = entry["metadata"]
            except (TypeError, ValueError):
                pass
            row["ood"] = ood
            rows.append(row)
        by_kind.append(rows)
        info["test_counts"][kind] = len(rows)
    # Round-robin over kinds, so any prefix of the file stays balanced.
    interleaved = []
    for i in range(max((len(r) for r in by_kind), default=0)):
        interleaved += [rows[i] for rows in by_kind if i < len(rows)]
    return interleaved, keys_by_kind


def iter_pool(args, kinds: list[str], test_rows: list[dict], test_keys: dict[str, set], info: dict) -> Iterator[dict]:
    """Stream pool rows in a seeded random order, disjoint from the test rows."""
    quotas = pool_quotas(args.size, len(kinds), args.imbalance)
    test_texts = {text_key(r["instruction"]) for r in test_rows}
    samplers = []
    for kind, quota in zip(kinds, quotas):
        stats = new_stats()
        info["skipped"].setdefault(kind, {})["pool"] = stats
        sampler = KindSampler(kind, args.seed, "pool", quota, stats)
        info["dataset_seeds"].setdefault(kind, {})["pool"] = sampler.dataset_seed
        samplers.append(sampler)
        info["pool_counts"][kind] = 0
    seen: list[set] = [set() for _ in kinds]  # problems already in the pool, per kind

    def forbidden(entry: dict, i: int) -> str | None:
        key = problem_key(kinds[i], entry)
        if key in test_keys.get(kinds[i], ()) or text_key(entry["question"].strip()) in test_texts:
            return "in test split"
        if not args.allow_duplicates and key in seen[i]:
            return "duplicate"
        return None

    # Drawing the next kind with probability remaining_i / remaining gives a
    # uniformly random interleaving of exactly ``quotas`` rows, in O(1) memory.
    order_rng = random.Random(derive_seed(args.seed, "*", "order"))
    remaining = list(quotas)
    for left in range(args.size, 0, -1):
        pick = order_rng.randrange(left)
        i = 0
        while pick >= remaining[i]:
            pick -= remaining[i]
            i += 1
        remaining[i] -= 1
        entry, output = samplers[i].next_row(lambda e: forbidden(e, i))
        if not args.allow_duplicates:
            seen[i].add(problem_key(kinds[i], entry))
        info["pool_counts"][kinds[i]] += 1
        yield {"instruction": entry["question"].strip(), "output": output, "source": kinds[i]}


# --------------------------------------------------------------------------
# Files and command line.
# --------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_tmp(directory: str, name: str, write: Callable[[Any], None]) -> str:
    """Write a temp file next to ``name`` (in ``directory``) and return its path.

    The caller later moves it into place with ``os.replace``, which is atomic.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use normal permissions
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_jsonl_tmp(directory: str, name: str, rows) -> str:
    """JSONL (one object per line, UTF-8, non-ASCII kept) to a temp file; return its path."""

    def write(fh) -> None:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    return write_tmp(directory, name, write)


def parse_kinds(text: str, parser: argparse.ArgumentParser, flag: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KIND_SETTINGS]
    if unknown:
        parser.error(f"{flag}: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KIND_SETTINGS)}")
    if len(set(kinds)) != len(kinds):
        parser.error(f"{flag}: a kind is listed twice")
    return kinds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build a MathInstruct-shaped math SFT pool (pool.jsonl, test.jsonl, pool_info.json) "
        "from reasoning-gym, with verified step-by-step answers.",
        epilog=f"Kinds available: {', '.join(KIND_SETTINGS)}. Difficulty settings live in KIND_SETTINGS "
        "at the top of this script.",
    )
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--size", type=int, default=300, help="pool rows (default: 300)")
    parser.add_argument(
        "--test-size", type=int, default=60, help="test rows, balanced over the pool kinds; OOD rows come on top (default: 60)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    parser.add_argument(
        "--kinds",
        default=",".join(DEFAULT_KINDS),
        help="comma-separated pool kinds, largest share first (default: %(default)s)",
    )
    parser.add_argument(
        "--ood-kinds",
        default="",
        help="comma-separated test-only kinds (absent from the pool, marked \"ood\": true); "
        "each gets as many test rows as the best-served pool kind",
    )
    parser.add_argument(
        "--imbalance",
        type=float,
        default=DEFAULT_IMBALANCE,
        help="largest / smallest pool share; shares are geometric in between (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="allow repeated problems inside the pool (never across pool and test)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KIND.KEY=VALUE",
        help="override one generator setting, e.g. --set chain_sum.max_terms=2 (repeatable; values are JSON)",
    )
    args = parser.parse_args(argv)
    for override in args.set:
        apply_override(override, parser)
    args.kinds = parse_kinds(args.kinds, parser, "--kinds")
    args.ood_kinds = parse_kinds(args.ood_kinds, parser, "--ood-kinds")
    if not args.kinds:
        parser.error("--kinds: give at least one kind")
    both = sorted(set(args.kinds) & set(args.ood_kinds))
    if both:
        parser.error(f"--ood-kinds must not repeat pool kinds: {', '.join(both)}")
    if args.size < len(args.kinds):
        parser.error(f"--size ({args.size}) must be at least the number of kinds ({len(args.kinds)})")
    if args.test_size < 0 or 0 < args.test_size < len(args.kinds):
        parser.error(f"--test-size ({args.test_size}) must be 0 or at least the number of kinds ({len(args.kinds)})")
    if not (args.imbalance >= 1.0 and math.isfinite(args.imbalance)):
        parser.error("--imbalance must be a number >= 1")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out!r} exists and is not a directory")
    return args


def apply_override(text: str, parser: argparse.ArgumentParser) -> None:
    """--set kind.key=value: change one entry of KIND_SETTINGS (recorded in pool_info.json)."""
    target, sep, value = text.partition("=")
    kind, dot, key = target.partition(".")
    if not (sep and dot and kind and key):
        parser.error(f"--set {text!r}: expected KIND.KEY=VALUE")
    if kind not in KIND_SETTINGS:
        parser.error(f"--set {text!r}: unknown kind {kind!r}")
    try:
        KIND_SETTINGS[kind][key] = json.loads(value)
    except json.JSONDecodeError:
        KIND_SETTINGS[kind][key] = value


def reasoning_gym_version() -> str:
    try:
        from importlib.metadata import version

        return version("reasoning-gym")
    except Exception:  # not installed as a distribution
        import reasoning_gym

        return getattr(reasoning_gym, "__version__", "unknown")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    info: dict[str, Any] = {
        "generator": "examples/make_math_pool.py",
        "reasoning_gym_version": reasoning_gym_version(),
        "seed": args.seed,
        "size": args.size,
        "test_size": args.test_size,
        "imbalance": args.imbalance,
        "allow_duplicates": args.allow_duplicates,
        "kinds": args.kinds,
        "ood_kinds": args.ood_kinds,
        "pool_counts": {},
        "test_counts": {},
        "settings": {k: KIND_SETTINGS[k] for k in args.kinds + args.ood_kinds},
        "dataset_seeds": {},
        "skipped": {},
    }
    temps: list[tuple[str, str]] = []
    try:
        test_rows, test_keys = build_test(args, args.kinds, args.ood_kinds, info)
        temps.append((write_jsonl_tmp(args.out, "test.jsonl", test_rows), "test.jsonl"))
        pool_rows = iter_pool(args, args.kinds, test_rows, test_keys, info)
        temps.append((write_jsonl_tmp(args.out, "pool.jsonl", pool_rows), "pool.jsonl"))
        info_text = json.dumps(info, ensure_ascii=False, indent=2) + "\n"
        temps.append((write_tmp(args.out, "pool_info.json", lambda fh: fh.write(info_text)), "pool_info.json"))
    except Exhausted as exc:
        for tmp, _ in temps:
            os.unlink(tmp)
        print(f"make_math_pool: error: {exc}", file=sys.stderr)
        return 1
    except BaseException:
        for tmp, _ in temps:
            os.unlink(tmp)
        raise
    # Each file is replaced atomically; all three only once everything is built.
    for tmp, name in temps:
        os.replace(tmp, os.path.join(args.out, name))

    def fmt(counts: dict) -> str:
        return ", ".join(f"{k} {n}" for k, n in counts.items())

    print(f"pool.jsonl: {sum(info['pool_counts'].values())} rows ({fmt(info['pool_counts'])})")
    print(f"test.jsonl: {sum(info['test_counts'].values())} rows ({fmt(info['test_counts'])})")
    dropped = {
        f"{kind}/{split}": {r: n for r, n in s["skipped"].items() if r.startswith("unverifiable")}
        for kind, splits in info["skipped"].items()
        for split, s in splits.items()
    }
    dropped = {k: v for k, v in dropped.items() if v}
    print(f"unverifiable rows dropped: {json.dumps(dropped) if dropped else 'none'}")
    print(f"written to {args.out}/ (pool.jsonl, test.jsonl, pool_info.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
