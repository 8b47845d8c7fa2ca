#!/usr/bin/env python
"""Build a MathInstruct-shaped math SFT pool, and held-out test sets, from real published data.

The S2L paper's pool (MathInstruct) mixes sources of very unequal size, most with chain-of-thought
answers. This script does the same with the public sets in ``--source-dir`` (``../shared/data/math``
in this project; its README.md lists every file, its fields and its licence). Nothing is generated:
every question and worked solution is the publisher's own; what this script adds is a final-answer
line where a source has none in that form, and the options written into the question.

Pool sources (priority order: when two rows ask the same question, the earlier source keeps it):

    source  file(s)                            response                                 grading
    gsm8k   gsm8k_train.jsonl                  the worked answer, its `#### N` line     gsm8k
    math    math_test5000.jsonl minus MATH-500 the LaTeX solution (its last \\boxed{}) boxed
    mathqa  mathqa_test.jsonl                  the rationale, then `#### X`             choice
    aqua    aqua_dev.jsonl + aqua_test.jsonl   the rationale, then `#### X`             choice
    tabmwp  tabmwp_dev1k.json + _test1k.json   the worked solution, then `#### answer`  number / text
    asdiv   asdiv.jsonl                        the formula, then `#### N`               number
    mawps   mawps.jsonl                        `#### N` alone (MAWPS has no solution)   number

Out-of-domain test sets (never in the pool): gsm8k_test (gsm8k_test.jsonl, grading gsm8k),
math500 (math500.jsonl, boxed), svamp (svamp.jsonl, number), gsm_hard (gsm_hard.jsonl, number).

Final-answer forms. Every response ends in a form a grader can read, one per grading kind:
  - gsm8k:  the last line is ``#### N`` (GSM8K's own; N may carry thousands separators, as published).
  - boxed:  the answer is the content of the LAST ``\\boxed{...}`` (MATH's own; the solution is kept
            as published, so text may follow the box, as in "... is $\\boxed{2}$.").
  - choice: the last line is ``#### X``, X the option letter, upper case (A-E); the options are
            written under the question as ``Answer Choices: (A) ... (B) ...``.
  - number: the last line is ``#### N``, N a plain decimal number (no separators).
  - text:   the last line is ``#### answer``, the answer text as published (TabMWP's non-numeric
            answers, e.g. a name, a time, "nonlinear", or a fraction such as 1/12).

Sets that carry only a formula or a final answer (no worked solution):
  - ASDiv (formula + answer): the response is the published formula, then ``#### N`` (for example
    ``7+2=9`` / ``#### 9``). Only rows whose answer is a number (with an optional unit in brackets,
    "9 (apples)") are used; the others (ratios, yes/no, names, clock times) are dropped and counted.
  - SVAMP (equation + answer, test only): ``( 290.0 / 2.0 ) = 145`` / ``#### 145``: a formula
    without ``=`` gets `` = N`` appended.
  - MAWPS and GSM-hard (a final answer only; GSM-hard's program is not a solution in words): the
    response is the line ``#### N`` alone. Leave MAWPS out with ``--sources`` if answer-only SFT rows
    are not wanted.
GSM8K's calculator notes (``<<48/2=24>>``) are removed: they are tool calls, not reasoning.

Test rows (``test/*.jsonl``) carry ``instruction``, ``output`` (the gold solution text, or the short
response above), ``source``, ``answer`` (the gold final answer as a string: the number without
separators for gsm8k/number, the box's content for boxed, the letter for choice, the text for text),
``grading`` (gsm8k | boxed | choice | number | text), ``options`` (choice rows only: letter -> option
text) and ``ood`` (true for the out-of-domain sets). Pool rows carry the same keys but ``ood``.

De-duplication, across every source and split. A question's key is its text lower-cased (NFKC),
with thousands separators and ``.0`` endings removed from numbers, sentence punctuation (``.,;:!?``
not between digits), quotes and ``$`` dropped, braces around one character removed (``4^{a}`` is
``4^a``), and all whitespace removed. In order:
  1. ``ood_duplicate:SET``: a pool source's row whose key equals an out-of-domain question's. The
     out-of-domain sets keep all their rows (this is also how MATH-500 leaves the MATH pool).
  2. ``svamp_variant``: SVAMP's problems are edits of ASDiv-A/MAWPS problems (numbers changed, a
     sentence added, the question changed), so exact keys match none of them. An ASDiv or MAWPS row
     whose word trigrams (numbers and number words masked) have a Jaccard similarity of at least
     ``--variant-threshold`` (default 0.3) with some SVAMP question is removed.
  3. ``duplicate:SOURCE``: the key of a row already kept (same source, or an earlier one; MAWPS
     and ASDiv overlap).
What remains of each source is shuffled (seeded); the first ``--test-per-source`` rows are its
in-domain test rows, and the pool takes a prefix of the rest: sources keep shares proportional to
what they have left (``--max-per-source M`` counts a source as at most M rows), split by largest
remainder so the pool has exactly ``--size`` rows.

Output (UTF-8 JSONL; every file written to a temporary file and renamed into place, all at the end):

    DIR/pool.jsonl                 the pool, sources interleaved in a seeded random order
    DIR/test/in_domain.jsonl       --test-per-source rows of each pool source, round-robin
    DIR/test/ood_<set>.jsonl       gsm8k_test, math500, svamp, gsm_hard (--ood-limit rows at most)
    DIR/test/all.jsonl             in_domain then every ood file (one file for `s2l evaluate`)
    DIR/info.json                  arguments, seed, source files' sha256, sizes per source per split,
                                   rows removed by source and reason, overlaps between the ood sets

Usage:

    python examples/make_real_math_pool.py --source-dir ../shared/data/math --out data/real_math \\
        --size 5000 --seed 0 [--max-per-source 2000] [--test-per-source 100] [--ood-limit 500]

The output is a function of the arguments and the source files: the same seed gives byte-identical
files. Only ``--source-dir`` is read. A missing file is an error naming it (exit 2); a malformed row
is an error naming its file and line (exit 2). See docs/real-data.md.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import hashlib
import json
import math
import random
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

try:
    from s2l.fileio import atomic_path, sha256_file
except ImportError:  # run from a checkout without s2l installed: its source is beside this folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from s2l.fileio import atomic_path, sha256_file

PROG = "make_real_math_pool"


class SourceError(Exception):
    """A source file that is missing or malformed; the message names the file (and line)."""


@dataclass
class Problem:
    source: str
    question: str  # the problem text compared for duplicates (without the options we add)
    instruction: str
    output: str
    answer: str
    grading: str
    options: dict[str, str] | None = None

    def row(self) -> dict:
        row = {"instruction": self.instruction, "output": self.output, "source": self.source,
               "answer": self.answer, "grading": self.grading}
        if self.options is not None:
            row["options"] = self.options
        return row


@dataclass
class SourceRows:
    problems: list[Problem] = field(default_factory=list)
    unusable: Counter = field(default_factory=Counter)  # reason -> rows dropped while reading


# --------------------------------------------------------------------------
# Reading files: every problem names its file and line.
# --------------------------------------------------------------------------
def jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, object) for each non-blank line; where is ``FILE:LINE``."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise SourceError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def json_object_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """TabMWP's files: one JSON object keyed by problem id; where is ``FILE: problem ID``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected one JSON object keyed by problem id")
    for key, obj in data.items():
        where = f"{path}: problem {key!r}"
        if not isinstance(obj, dict):
            raise SourceError(f"{where}: expected a JSON object")
        yield where, obj


def text_field(obj: dict, name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        problem = "missing field" if value is None else "empty or not a string:"
        raise SourceError(f"{where}: {problem} {name!r}")
    return value.strip()


def number_field(obj: dict, name: str, where: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SourceError(f"{where}: field {name!r} must be a finite number, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------
# Answers.
# --------------------------------------------------------------------------
PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
SEPARATED_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def number_text(value: float) -> str:
    """A plain decimal: 43.0 -> "43", 11.5 -> "11.5"; 12 significant digits (GSM-hard's floats)."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


def canonical_number(text: str) -> str | None:
    """"1,080" -> "1080", "2.50" -> "2.50", "-3" -> "-3"; None when ``text`` is not one number."""
    text = text.strip()
    if not SEPARATED_NUMBER.fullmatch(text):
        return None
    return text.replace(",", "")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (braces matched), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len("\\boxed{"): i]
    return None


def final_line(answer: str) -> str:
    return f"#### {answer}"


def choices_block(options: dict[str, str]) -> str:
    return "Answer Choices: " + " ".join(f"({letter}) {text}" for letter, text in options.items())


# --------------------------------------------------------------------------
# One reader per source. Each returns the source's problems in file order, and the rows it could
# not use (a counted reason) apart from malformed rows (an error).
# --------------------------------------------------------------------------
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")


def read_gsm8k(paths: list[Path], source: str) -> SourceRows:
    """GSM8K (train or test): the worked answer without calculator notes; it ends in ``#### N``."""
    out = SourceRows()
    for path in paths:
        for where, obj in jsonl_rows(path):
            question = text_field(obj, "question", where)
            solution = CALCULATOR_NOTE.sub("", text_field(obj, "answer", where))
            last = solution.splitlines()[-1]
            answer = canonical_number(last[4:]) if last.startswith("####") else None
            if answer is None:
                raise SourceError(f"{where}: the answer does not end in a '#### N' line")
            out.problems.append(Problem(source, question, question, solution, answer, "gsm8k"))
    return out


def read_math(paths: list[Path], source: str, answer_field: str | None = None) -> SourceRows:
    """MATH (Hendrycks et al.): the solution as published; the answer is its last \\boxed{}, or the published
    `answer_field` where the set has one (MATH-500's ``answer``)."""
    out = SourceRows()
    for path in paths:
        for where, obj in jsonl_rows(path):
            problem = text_field(obj, "problem", where)
            solution = text_field(obj, "solution", where)
            answer = text_field(obj, answer_field, where) if answer_field else last_boxed(solution)
            if answer is None:
                raise SourceError(f"{where}: the solution has no \\boxed{{...}} answer")
            out.problems.append(Problem(source, problem, problem, solution, answer, "boxed"))
    return out


MATHQA_MARKER = re.compile(r"\b([a-e]) \)")


def parse_mathqa_options(text: str) -> dict[str, str] | None:
    """``"a ) 12 , b ) 16 , ..."`` -> {"A": "12", "B": "16", ...}; None unless exactly A-E.

    Some rows double the markers (``a ) a ) 1055``) or hold a Python list's text: both are read."""
    if text.startswith("["):
        try:
            text = " , ".join(ast.literal_eval(text))
        except (ValueError, SyntaxError, TypeError):
            return None
    markers = list(MATHQA_MARKER.finditer(text))
    options: dict[str, str] = {}
    for marker, following in zip(markers, markers[1:] + [None]):
        end = following.start() if following else len(text)
        value = text[marker.end(): end].strip().rstrip(",").strip()
        if value:  # an empty value is a doubled marker
            options[marker.group(1).upper()] = value
    return options if list(options) == list("ABCDE") else None


def read_mathqa(paths: list[Path], source: str) -> SourceRows:
    """MathQA: the rationale (its surrounding quotes removed), then ``#### X``."""
    out = SourceRows()
    for path in paths:
        for where, obj in jsonl_rows(path):
            problem = text_field(obj, "problem", where)
            rationale = text_field(obj, "rationale", where).strip('"').strip()
            correct = text_field(obj, "correct", where).upper()
            options = parse_mathqa_options(text_field(obj, "options", where))
            if options is None:
                out.unusable["unusable:options not five (a)-(e)"] += 1
                continue
            if correct not in options:
                raise SourceError(f"{where}: 'correct' is {correct!r}, not one of the options A-E")
            instruction = f"{problem}\n{choices_block(options)}"
            output = f"{rationale}\n{final_line(correct)}"
            out.problems.append(Problem(source, problem, instruction, output, correct, "choice", options))
    return out


def parse_aqua_options(items: object) -> dict[str, str] | None:
    """``["A)32400", "B)6000", ...]`` -> {"A": "32400", ...}; None unless exactly A-E."""
    if not isinstance(items, list):
        return None
    options = {}
    for item in items:
        letter, paren, value = str(item).partition(")")
        if not paren:
            return None
        options[letter.strip().upper()] = value.strip()
    return options if list(options) == list("ABCDE") else None


def read_aqua(paths: list[Path], source: str) -> SourceRows:
    """AQuA-RAT: the rationale, then ``#### X``."""
    out = SourceRows()
    for path in paths:
        for where, obj in jsonl_rows(path):
            question = text_field(obj, "question", where)
            rationale = text_field(obj, "rationale", where)
            correct = text_field(obj, "correct", where).upper()
            options = parse_aqua_options(obj.get("options"))
            if options is None:
                raise SourceError(f"{where}: 'options' must be five strings 'A)...' to 'E)...'")
            if correct not in options:
                raise SourceError(f"{where}: 'correct' is {correct!r}, not one of the options A-E")
            instruction = f"{question}\n{choices_block(options)}"
            output = f"{rationale}\n{final_line(correct)}"
            out.problems.append(Problem(source, question, instruction, output, correct, "choice", options))
    return out


def tabmwp_instruction(obj: dict, where: str) -> str:
    """The table as text above the question (TabMWP's own plain-text rendering, ``a | b`` rows)."""
    title = obj.get("table_title")
    table = text_field(obj, "table", where)
    parts = ["Use the table to answer the question.", ""]
    parts.append(f"Table: {title.strip()}" if isinstance(title, str) and title.strip() else "Table:")
    parts += [table, "", f"Question: {text_field(obj, 'question', where)}"]
    choices = obj.get("choices")
    if isinstance(choices, list) and choices:
        parts.append("Choices: " + ", ".join(str(c) for c in choices))
    return "\n".join(parts)


def read_tabmwp(paths: list[Path], source: str) -> SourceRows:
    """TabMWP: the solution, then ``#### answer``; numeric answers grade as numbers, the rest as text."""
    out = SourceRows()
    for path in paths:
        for where, obj in json_object_rows(path):
            instruction = tabmwp_instruction(obj, where)
            solution = text_field(obj, "solution", where)
            published = str(obj.get("answer", "")).strip()
            if not published:
                raise SourceError(f"{where}: missing field 'answer'")
            number = canonical_number(published) if obj.get("ans_type") in ("integer_number", "decimal_number") else None
            answer, grading = (number, "number") if number is not None else (published, "text")
            output = f"{solution}\n{final_line(published)}"
            # The question alone repeats across tables ("What is the mode?"): the table is part of it.
            out.problems.append(Problem(source, instruction, instruction, output, answer, grading))
    return out


ASDIV_NUMERIC_ANSWER = re.compile(r"(-?[\d,]*\.?\d+)(?:\s*\(.*\))?")


def formula_response(formula: str, answer: str) -> str:
    """The ASDiv/SVAMP rule: the formula (``= N`` appended when it has no ``=``), then ``#### N``."""
    formula = " ".join(formula.split())
    if "=" not in formula:
        formula = f"{formula} = {answer}"
    return f"{formula}\n{final_line(answer)}"


def read_asdiv(paths: list[Path], source: str) -> SourceRows:
    """ASDiv: body + question; the formula, then ``#### N``; numeric answers only."""
    out = SourceRows()
    for path in paths:
        for where, obj in jsonl_rows(path):
            question = f"{text_field(obj, 'body', where)} {text_field(obj, 'question', where)}"
            formula = text_field(obj, "formula", where)
            match = ASDIV_NUMERIC_ANSWER.fullmatch(text_field(obj, "answer", where))
            answer = canonical_number(match.group(1)) if match else None
            if answer is None:
                out.unusable["unusable:non-numeric answer"] += 1
                continue
            out.problems.append(Problem(source, question, question, formula_response(formula, answer), answer, "number"))
    return out


def detokenize(text: str) -> str:
    """MAWPS writes ``beach . How many ?``: close up the space before punctuation."""
    return re.sub(r"\s+([.,?!;:])", r"\1", " ".join(text.split()))


def read_answer_only(question_field: str, answer_field: str) -> Callable[[list[Path], str], SourceRows]:
    """MAWPS and GSM-hard: a question and a numeric answer; the response is ``#### N`` alone."""

    def read(paths: list[Path], source: str) -> SourceRows:
        out = SourceRows()
        for path in paths:
            for where, obj in jsonl_rows(path):
                question = detokenize(text_field(obj, question_field, where))
                answer = number_text(number_field(obj, answer_field, where))
                out.problems.append(Problem(source, question, question, final_line(answer), answer, "number"))
        return out

    return read


def read_svamp(paths: list[Path], source: str) -> SourceRows:
    """SVAMP: Body + Question; ``Equation = N``, then ``#### N``."""
    out = SourceRows()
    for path in paths:
        for where, obj in jsonl_rows(path):
            question = f"{text_field(obj, 'Body', where)} {text_field(obj, 'Question', where)}"
            answer = number_text(number_field(obj, "Answer", where))
            output = formula_response(text_field(obj, "Equation", where), answer)
            out.problems.append(Problem(source, question, question, output, answer, "number"))
    return out


# Pool sources in priority order (a duplicate question stays with the earlier source).
POOL_SOURCES: dict[str, tuple[tuple[str, ...], Callable[[list[Path], str], SourceRows]]] = {
    "gsm8k": (("gsm8k_train.jsonl",), read_gsm8k),
    "math": (("math_test5000.jsonl",), read_math),
    "mathqa": (("mathqa_test.jsonl",), read_mathqa),
    "aqua": (("aqua_dev.jsonl", "aqua_test.jsonl"), read_aqua),
    "tabmwp": (("tabmwp_dev1k.json", "tabmwp_test1k.json"), read_tabmwp),
    "asdiv": (("asdiv.jsonl",), read_asdiv),
    "mawps": (("mawps.jsonl",), read_answer_only("input", "target")),
}
OOD_SETS: dict[str, tuple[tuple[str, ...], Callable[[list[Path], str], SourceRows]]] = {
    "gsm8k_test": (("gsm8k_test.jsonl",), read_gsm8k),
    "math500": (("math500.jsonl",), functools.partial(read_math, answer_field="answer")),
    "svamp": (("svamp.jsonl",), read_svamp),
    "gsm_hard": (("gsm_hard.jsonl",), read_answer_only("input", "target")),
}
# SVAMP's problems are edits of these sources' problems: near-duplicates are removed too.
SVAMP_PARENTS = ("asdiv", "mawps")


# --------------------------------------------------------------------------
# De-duplication.
# --------------------------------------------------------------------------
def question_key(text: str) -> str:
    """Equal keys = the same question, up to case, spacing, punctuation and number formatting."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,000 -> 1000
    text = re.sub(r"(?<=\d)\.0+(?!\d)", "", text)  # 2.0 -> 2
    text = re.sub(r"[.,;:!?](?!\d)|(?<!\d)[.,;:!?]", "", text)  # sentence punctuation, not 2.5 or 3:2
    text = re.sub(r"[\"'`$\u2018\u2019\u201c\u201d]", "", text)
    text = re.sub(r"\{(\w)\}", r"\1", text)  # LaTeX: 4^{a} -> 4^a
    return "".join(text.split())


NUMBER = re.compile(
    r"\d+(?:\.\d+)?|\b(?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:-(?:one|two|three|four|five"
    r"|six|seven|eight|nine))?|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen"
    r"|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|hundred|thousand)\b")


def variant_trigrams(text: str) -> frozenset:
    """Word trigrams with every number (digits or words, ASDiv writes "forty-nine") masked as 0."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = NUMBER.sub(" 0 ", re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text))
    words = re.sub(r"[^a-z0-9]+", " ", text).split()
    return frozenset(zip(words, words[1:], words[2:])) or frozenset([tuple(words)])


class VariantIndex:
    """Finds, for a question, the most similar of a fixed set of questions by trigram Jaccard."""

    def __init__(self, questions: list[str]):
        self.grams = [variant_trigrams(q) for q in questions]
        self.index: dict[tuple, list[int]] = defaultdict(list)
        for i, grams in enumerate(self.grams):
            for gram in grams:
                self.index[gram].append(i)

    def best(self, question: str) -> float:
        grams = variant_trigrams(question)
        shared = Counter(i for gram in grams for i in self.index.get(gram, ()))
        return max((n / (len(grams) + len(self.grams[i]) - n) for i, n in shared.items()), default=0.0)


def deduplicate(pool: dict[str, SourceRows], ood: dict[str, SourceRows], threshold: float) -> dict[str, Counter]:
    """Remove, in place, the pool sources' rows that repeat an OOD question, are SVAMP variants, or repeat a
    row already kept (earlier sources first). Returns the rows removed, by source and reason."""
    ood_keys = {}
    for name, rows in ood.items():
        for problem in rows.problems:
            ood_keys.setdefault(question_key(problem.question), name)
    svamp = VariantIndex([p.question for p in ood["svamp"].problems]) if "svamp" in ood else None
    kept: dict[str, str] = {}  # key -> source that kept it
    removed: dict[str, Counter] = {}
    for name, rows in pool.items():
        removed[name] = Counter(rows.unusable)
        survivors = []
        for problem in rows.problems:
            key = question_key(problem.question)
            if key in ood_keys:
                reason = f"ood_duplicate:{ood_keys[key]}"
            elif svamp is not None and name in SVAMP_PARENTS and svamp.best(problem.question) >= threshold:
                reason = "svamp_variant"
            elif key in kept:
                reason = f"duplicate:{kept[key]}"
            else:
                kept[key] = name
                survivors.append(problem)
                continue
            removed[name][reason] += 1
        rows.problems = survivors
    return {name: dict(sorted(c.items())) for name, c in removed.items()}


def ood_overlaps(ood: dict[str, SourceRows]) -> dict[str, int]:
    """Questions two OOD sets share (GSM-hard keeps some GSM8K test questions unchanged); both keep them."""
    keys = {name: {question_key(p.question) for p in rows.problems} for name, rows in ood.items()}
    names = list(keys)
    return {f"{a}~{b}": len(keys[a] & keys[b]) for i, a in enumerate(names) for b in names[i + 1:]
            if keys[a] & keys[b]}


# --------------------------------------------------------------------------
# Sampling.
# --------------------------------------------------------------------------
def derive_seed(seed: int, *parts: str) -> int:
    """A seed per (seed, purpose): the streams stay apart and do not depend on each other's draws."""
    digest = hashlib.sha256("|".join([PROG, str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def proportional_quotas(size: int, weights: dict[str, int]) -> dict[str, int]:
    """``size`` split in proportion to ``weights`` by largest remainder; no quota exceeds its weight."""
    total = sum(weights.values())
    ideal = {name: size * w / total for name, w in weights.items()}
    quotas = {name: int(x) for name, x in ideal.items()}
    by_remainder = sorted(weights, key=lambda n: (-(ideal[n] - quotas[n]), n))
    for name in by_remainder[: size - sum(quotas.values())]:
        quotas[name] += 1
    assert all(quotas[n] <= weights[n] for n in weights) and sum(quotas.values()) == size
    return quotas


def round_robin(groups: list[list[dict]]) -> list[dict]:
    """One row from each group in turn, so any prefix of the file stays balanced."""
    return [group[i] for i in range(max(map(len, groups), default=0)) for group in groups if i < len(group)]


def split_sources(args, pool: dict[str, SourceRows]) -> tuple[dict[str, list[Problem]], dict[str, list[Problem]]]:
    """(in-domain test rows, pool rows) per source: a seeded shuffle, the test rows first."""
    tests, rests = {}, {}
    for name, rows in pool.items():
        problems = list(rows.problems)
        random.Random(derive_seed(args.seed, name, "shuffle")).shuffle(problems)
        k = args.test_size_for.get(name, args.test_per_source)
        if len(problems) <= k:
            raise SourceError(f"{name}: only {len(problems)} rows after de-duplication; {k} in-domain test rows "
                              "would leave none for the pool")
        tests[name], rests[name] = problems[:k], problems[k:]
    weights = {name: min(len(rest), args.max_per_source or len(rest)) for name, rest in rests.items()}
    size = sum(weights.values()) if args.size is None else args.size
    if size > sum(weights.values()):
        cap = f" at most {args.max_per_source} per source," if args.max_per_source else ""
        raise SourceError(f"--size {size}: only {sum(weights.values())} rows are available for the pool"
                          f"{cap} after de-duplication and the in-domain test rows")
    quotas = proportional_quotas(size, weights)
    return tests, {name: rests[name][: quotas[name]] for name in rests}


def limit_ood(args, name: str, problems: list[Problem]) -> list[Problem]:
    """At most --ood-limit rows of an OOD set, a seeded sample kept in file order."""
    if not args.ood_limit or len(problems) <= args.ood_limit:
        return problems
    chosen = sorted(random.Random(derive_seed(args.seed, name, "ood")).sample(range(len(problems)), args.ood_limit))
    return [problems[i] for i in chosen]


# --------------------------------------------------------------------------
# Files and command line.
# --------------------------------------------------------------------------
def source_files(source_dir: Path, names: list[str], table: dict) -> dict[str, list[Path]]:
    """Each source's paths; a missing file is an error naming it."""
    paths = {}
    for name in names:
        files = [source_dir / f for f in table[name][0]]
        for path in files:
            if not path.is_file():
                raise SourceError(f"missing source file {path} (needed for {name}; see --source-dir, --sources)")
        paths[name] = files
    return paths


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def write_all(out: Path, files: dict[str, bytes]) -> None:
    """Every file to a temporary one first; the renames happen only once all are written."""
    with contextlib.ExitStack() as stack:
        for name, data in files.items():
            tmp = stack.enter_context(atomic_path(out / name))
            tmp.write_bytes(data)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build a MathInstruct-shaped pool (pool.jsonl), in-domain and out-of-domain test sets (test/) "
        "and info.json from the real math sets in --source-dir.",
        epilog=f"Pool sources: {', '.join(POOL_SOURCES)}. OOD sets: {', '.join(OOD_SETS)}. Rules: docs/real-data.md.")
    parser.add_argument("--source-dir", required=True, type=Path, help="folder of the published files (../shared/data/math)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--size", type=int, default=None, help="pool rows (default: every row available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    parser.add_argument("--max-per-source", type=int, default=None, metavar="M",
                        help="cap the largest sources: count none as more than M rows when sharing out --size")
    parser.add_argument("--test-per-source", type=int, default=100, metavar="K",
                        help="in-domain test rows per pool source (default: 100)")
    parser.add_argument("--test-size-for", action="append", default=[], metavar="SOURCE=K",
                        help="in-domain test rows of one source instead of --test-per-source; repeatable "
                        "(e.g. --test-size-for mawps=200: a larger set to grade accuracy on)")
    parser.add_argument("--ood-limit", type=int, default=0, metavar="N",
                        help="at most N rows per out-of-domain set, a seeded sample (default: 0, all); the pool "
                        "is de-duplicated against every row either way")
    parser.add_argument("--sources", default=",".join(POOL_SOURCES),
                        help="comma-separated pool sources, in priority order (default: %(default)s)")
    parser.add_argument("--variant-threshold", type=float, default=0.3,
                        help="trigram Jaccard at which an ASDiv/MAWPS row counts as a SVAMP variant (default: 0.3)")
    args = parser.parse_args(argv)
    args.sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in args.sources if s not in POOL_SOURCES]
    if unknown or not args.sources or len(set(args.sources)) != len(args.sources):
        parser.error(f"--sources: give distinct names from {', '.join(POOL_SOURCES)}")
    if args.size is not None and args.size < 1:
        parser.error("--size must be at least 1")
    if args.max_per_source is not None and args.max_per_source < 1:
        parser.error("--max-per-source must be at least 1")
    sizes = {}
    for item in args.test_size_for:
        name, _, k = item.partition("=")
        if name not in args.sources or not k.isdigit():
            parser.error(f"--test-size-for {item!r}: give SOURCE=K with a pool source and a whole number")
        sizes[name] = int(k)
    args.test_size_for = dict(sorted(sizes.items()))
    if args.test_per_source < 0 or args.ood_limit < 0:
        parser.error("--test-per-source and --ood-limit must be 0 or more")
    if not 0 < args.variant_threshold <= 1:
        parser.error("--variant-threshold must be in (0, 1]")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    return args


def build(args) -> tuple[dict[str, bytes], dict]:
    pool_paths = source_files(args.source_dir, args.sources, POOL_SOURCES)
    ood_paths = source_files(args.source_dir, list(OOD_SETS), OOD_SETS)
    pool = {name: POOL_SOURCES[name][1](paths, name) for name, paths in pool_paths.items()}
    ood = {name: OOD_SETS[name][1](paths, name) for name, paths in ood_paths.items()}
    read_counts = {name: len(rows.problems) + sum(rows.unusable.values()) for name, rows in pool.items()}
    removed = deduplicate(pool, ood, args.variant_threshold)
    tests, chosen = split_sources(args, pool)

    pool_rows = [p.row() for name in chosen for p in chosen[name]]
    random.Random(derive_seed(args.seed, "*", "order")).shuffle(pool_rows)
    in_domain = round_robin([[{**p.row(), "ood": False} for p in tests[name]] for name in tests])
    ood_rows = {name: [{**p.row(), "ood": True} for p in limit_ood(args, name, rows.problems)]
                for name, rows in ood.items()}
    files = {"pool.jsonl": jsonl_bytes(pool_rows), "test/in_domain.jsonl": jsonl_bytes(in_domain)}
    files.update({f"test/ood_{name}.jsonl": jsonl_bytes(rows) for name, rows in ood_rows.items()})
    files["test/all.jsonl"] = jsonl_bytes(in_domain + [row for rows in ood_rows.values() for row in rows])

    all_paths = {**pool_paths, **ood_paths}
    info = {
        "generator": "examples/make_real_math_pool.py",
        # --out is left out, so that the same arguments give the same bytes wherever they are written.
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "seed": args.seed,
        "source_files": {p.name: sha256_file(p) for paths in all_paths.values() for p in paths},
        "grading": {name: sorted({p.grading for p in rows.problems}) for name, rows in {**pool, **ood}.items()},
        "sizes": {
            "read": read_counts,
            "after_deduplication": {name: len(rows.problems) for name, rows in pool.items()},
            "pool": {name: len(rows) for name, rows in chosen.items()},
            "in_domain_test": {name: len(rows) for name, rows in tests.items()},
            "ood_test": {name: len(rows) for name, rows in ood_rows.items()},
            "ood_available": {name: len(rows.problems) for name, rows in ood.items()},
        },
        "removed": removed,
        "removed_by_reason": dict(sorted(sum((Counter(c) for c in removed.values()), Counter()).items())),
        "ood_overlaps_kept": ood_overlaps(ood),
    }
    files["info.json"] = (json.dumps(info, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    return files, info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        files, info = build(args)
    except SourceError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    write_all(args.out, files)

    def fmt(counts: dict) -> str:
        return ", ".join(f"{k} {n}" for k, n in counts.items())

    sizes = info["sizes"]
    print(f"pool.jsonl: {sum(sizes['pool'].values())} rows ({fmt(sizes['pool'])})")
    print(f"test/in_domain.jsonl: {sum(sizes['in_domain_test'].values())} rows ({fmt(sizes['in_domain_test'])})")
    print(f"test/ood_*.jsonl: {fmt(sizes['ood_test'])}")
    print(f"removed: {fmt(info['removed_by_reason'])}")
    print(f"written to {args.out}/ (pool.jsonl, test/, info.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
