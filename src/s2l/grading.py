"""Final answers graded the way each math test set is graded.

`grade(completion, gold, rule, options)` reads the final answer out of a model's completion and
compares it with the gold answer under one of these rules (`RULES`):

| rule     | sets                          | the completion's answer                              | compared with the gold answer |
|----------|-------------------------------|------------------------------------------------------|-------------------------------|
| `gsm8k`  | GSM8K                         | the last `#### N` line, else the last number         | exactly, as numbers (`1,234` = `1234.0`) |
| `boxed`  | MATH, MATH-500                | the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced | after normalisation (`normalize_boxed`); numbers exactly, as fractions (`\\frac{1}{2}` = `0.5` = `1/2`, `\\frac{1}{3}` ≠ `0.33`); tuples element by element |
| `choice` | AQuA, MathQA                  | the option letter the text names (`answer: c`, `(C)`, `The answer is C`, `C)`, a last line holding only a letter), else the option whose value it gives | the gold letter |
| `number` | MAWPS, ASDiv, SVAMP, GSM-hard, TabMWP numbers | `####`, else `\\boxed{}`, else "the answer is …", else the last number | within `math.isclose(rel_tol=1e-4, abs_tol=1e-6)`: equal when either tolerance holds |
| `text`   | TabMWP words ("yes", "Tuesday"), ASDiv names | `####`, else `\\boxed{}`, else "the answer is …", else the last line; with options, the one option it names | normalised strings (case, spaces, end punctuation, a leading article) |
| `auto`   | anything else                 | `####`, else `\\boxed{}`, else the last number (`find_answer`) | `answers_match`: numbers with relative tolerance 1e-6, else stripped text |

The gold answer may be the bare final answer ("18", "9 (apples)", "\\frac{1}{2}", "C") or a whole gold
solution (a GSM8K answer with its `####` line, a MATH solution with its `\\boxed{}`, a MathQA rationale
ending "answer : a"): a gold text with a `####`, a `\\boxed` or a line break is read with the rule's own
extractor. Under `number`, a gold answer that is not a number (ASDiv's "3:4", "Mrs. Hilt") is compared
as `text`; the verdict says so.

`grade_row(completion, record, reference)` grades against a test row as read: its rule is its `grading`
field, else (`infer_rule`) the rule of its `source` when that is a known set (`SOURCE_RULES`), else of its
gold text or reference response (`####` → `gsm8k`, `\\boxed` → `boxed`), else `choice` when it has
options and a letter for gold (`text` when the gold is an option's text), `number` when the gold answer
is a number, else `auto`. The gold is the row's `answer` (or the sets' own `correct`, `target`, `Answer`),
else the reference response. Options (`options`, or TabMWP's `choices`) may be a dict letter → text,
AQuA's list `["A)21", "B)21.5", ...]`, MathQA's string `"a ) 38 , b ) 27.675 , ..."` or a plain list of
choices, read by `parse_options`.
"""

from __future__ import annotations

import ast
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# -- numbers ---------------------------------------------------------------------------------------
# A number: thousands groups ("1,234") or plain digits, an optional decimal part. A sign counts only
# where it cannot be a binary operator: not right after a word character or a closing bracket, so
# "10-3" ends in 3, while "= -3" and "(-3)" end in -3.
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_SIGNED = re.compile(r"(?:(?<![\w)\]])[-+])?" + _NUMBER)
_WHOLE = re.compile(r"[-+]?" + _NUMBER)
_DECIMAL = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")  # also ".5", "2.01e-06"
_FRACTION = re.compile(r"([-+]?)\\frac\{([-+]?[\d.]+)\}\{([-+]?[\d.]+)\}")
_SLASH = re.compile(r"([-+]?[\d.]+)/([-+]?[\d.]+)")


def normalize_number(text: str) -> str:
    """'1,234' -> '1234', '+5' -> '5', '3.0' -> '3', '2.50' -> '2.5', '-0' -> '0'."""
    text = text.replace(",", "").lstrip("+")
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    frac = frac.rstrip("0")
    digits = str(int(whole or "0")) + (f".{frac}" if frac else "")
    return digits if digits == "0" else sign + digits


def to_number(text: str | None) -> Fraction | None:
    """The exact value of a plain number: '1,234.5', '-.5', '2.01e-06', '3/10', '\\frac{1}{2}', '-\\frac{3}{4}'; else None."""
    if text is None:
        return None
    text = text.strip()
    try:
        if _DECIMAL.fullmatch(text) and re.match(r"[-+]?\.?\d", text):
            return Fraction(text.replace(",", ""))
        for pattern in (_FRACTION, _SLASH):
            match = pattern.fullmatch(text)
            if match:
                sign, top, bottom = match.groups() if pattern is _FRACTION else ("", *match.groups())
                value = Fraction(top) / Fraction(bottom)
                return -value if sign == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def numbers_close(a: Fraction | float, b: Fraction | float) -> bool:
    """The `number` rule's tolerance: relative 1e-4 of the larger, or absolute 1e-6, whichever is looser."""
    return math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-6)


# -- finding the answer span -------------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} or \\fbox{...} (braces balanced; `\\boxed 5` too), else None."""
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{|\s+(?=[^\s{]))", text)]
    if not starts:
        return None
    match = starts[-1]
    if match.group(1) != "{":  # "\boxed 5": up to the next space or dollar
        return re.match(r"[^\s$]*", text[match.end():]).group()
    depth, i = 1, match.end()
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def after_hashes(text: str) -> str | None:
    """What follows the last '####' on its line (stripped), or None when there is none or it is empty."""
    if "####" not in text:
        return None
    line = text[text.rfind("####") + 4:].split("\n", 1)[0].strip()
    return line if line.rstrip(".") else None


# "The answer is 12.", "Final answer: $5$", "answer = 7": the rest of that line.
_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is|:|=|-)\s*(?::\s*)?(.+)", re.IGNORECASE)


def answer_phrase(text: str) -> str | None:
    """The text after the last 'answer is' / 'answer:' on its line, its end punctuation stripped."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    span = matches[-1].group(1).strip().strip("$").strip()
    return span.rstrip(".").strip() or None


def leading_number(span: str) -> str | None:
    """The number a span starts with, normalised ('42 apples.' -> '42', '$1,234.50' -> '1234.5'); None if it
    starts with something else, or the number runs into more maths ('3/4', '2x')."""
    span = span.strip().removeprefix("\\$").removeprefix("$").strip()
    match = _WHOLE.match(span)
    if match and (match.end() == len(span) or span[match.end()].isspace() or span[match.end()] in ",;:!?)%.$"):
        return normalize_number(match.group())
    return None


def last_number(text: str) -> str | None:
    numbers = _SIGNED.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


# The last value of a text for `number` and `text`: a fraction counts as one ("\\frac{3}{10}", "3/10").
_VALUE = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}|(?:(?<![\w)\]])-)?(?:\d+/\d+(?![\d,]|\.\d)|" + _NUMBER
                    + r"(?:[eE][-+]?\d+)?)")


def last_value(text: str) -> Fraction | None:
    """The last number or simple fraction in a text, as an exact value."""
    matches = list(_VALUE.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    if match.group(2) is not None:
        return to_number(f"{match.group(1)}{match.group(2)}/{match.group(3)}")
    return to_number(match.group())


def _clean(answer: str) -> str:
    """An answer span: a leading number (with at most words after it) normalised, else the text stripped."""
    answer = answer.strip().rstrip(".").strip().removeprefix("$").strip()
    number = leading_number(answer)
    return number if number is not None else answer


# -- the `auto` rule: the heuristics used when nothing says how a row is graded ---------------------
def find_answer(text: str) -> tuple[str | None, str | None]:
    """The final answer in a completion and how it was found: '####', 'boxed', 'final-number' or None."""
    hashes = after_hashes(text)
    if hashes is not None:
        return _clean(hashes), "####"
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return _clean(boxed), "boxed"
    number = last_number(text)
    return (number, "final-number") if number is not None else (None, None)


def extract_answer(text: str) -> str | None:
    """GSM8K-style final answer: what follows the last '#### ' on its line, else the last \\boxed{},
    else the last number in the text; numbers normalised (see `normalize_number`). None if none."""
    return find_answer(text)[0]


def _as_number(text: str) -> float | None:
    text = text.strip().rstrip(".").strip().removeprefix("$")
    return float(text.replace(",", "")) if _WHOLE.fullmatch(text) else None


def answers_match(predicted: str | None, gold: str | None) -> bool:
    """Numerically equal (relative tolerance 1e-6) when both are numbers, else equal as stripped text."""
    if predicted is None or gold is None:
        return False
    a, b = _as_number(str(predicted)), _as_number(str(gold))
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return str(predicted).strip() == str(gold).strip()


# -- MATH's normalisation, one step per function -----------------------------------------------------
# One-letter units (a unit of two letters or more is any word: "cm", "inches", "ways", "integers").
_SHORT_UNITS = {"m", "g", "l", "s", "h"}


def _drop_final_stop(s: str) -> str:
    """A sentence's full stop after the answer: `18\\text{ ways}.` (an ellipsis `..` stays)."""
    return s[:-1].rstrip() if s.endswith(".") and not s.endswith("..") else s


def _drop_spacing(s: str) -> str:
    """Spaces and TeX spacing commands: `\\!`, `\\,`, `\\;`, `\\:`, `\\quad`, `~`, `\\displaystyle`."""
    s = re.sub(r"\\(?:!|,|;|:|quad|qquad|displaystyle)|~", "", s)
    return re.sub(r"\s+", "", s)


def _drop_left_right(s: str) -> str:
    return re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)


def _unify_fractions(s: str) -> str:
    """`\\dfrac`, `\\tfrac` -> `\\frac`; `\\frac12`, `\\frac1{2}`, `\\frac{1}2` -> `\\frac{1}{2}`; `\\sqrt3` -> `\\sqrt{3}`."""
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\frac\s*(\w)\s*(\w)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\w)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\w)", r"\\frac\1{\2}", s)
    return re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", s)


def _drop_simple_braces(s: str) -> str:
    """One-token sub- and superscripts: `52_{8}` -> `52_8`, `x^{2}` -> `x^2`."""
    return re.sub(r"([_^])\{(\w)\}", r"\1\2", s)


def _drop_dollars(s: str) -> str:
    """Currency and maths delimiters: `\\$`, `$`."""
    return s.replace("\\$", "").replace("$", "")


def _drop_degrees_and_percent(s: str) -> str:
    """`^\\circ`, `^{\\circ}`, `°`, `\\%`, `%`."""
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°", "", s)
    return s.replace("\\%", "").replace("%", "")


def _is_unit(words: str) -> bool:
    """Words that can only be a unit after a number: 'cm', 'square units', 'ways'; not 'x', not 'a.m.'/'PM'."""
    if re.search(r"\b[ap]\.?\s*m\b", words, re.IGNORECASE):  # 9 a.m. is not 9 p.m.
        return False
    return all(len(word) > 1 or word in _SHORT_UNITS for word in words.replace(".", " ").split())


def _drop_units(s: str) -> str:
    """A unit after a number: `5\\text{ cm}^2`, `12 inches`, `4\\mbox{ square units}`, `18\\text{ ways.}` -> the number."""
    for pattern in (r"(.*?\d)\s*\\(?:text|mbox|mathrm)\{\s*([a-zA-Z][a-zA-Z .]*)\}(?:\^\{?\d\}?)?",
                    r"(.*?\d)\s+([a-zA-Z][a-zA-Z .]*?)(?:\^\{?\d\}?)?"):
        match = re.fullmatch(pattern, s)
        if match and _is_unit(match.group(2)):
            return match.group(1)
    return s


def _unwrap_text(s: str) -> str:
    """`\\text{...}`, `\\textbf{...}`, `\\mbox{...}`, `\\mathrm{...}`, `\\mathbf{...}` -> their content."""
    previous = None
    while previous != s:
        previous = s
        s = re.sub(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", s)
    return s


def _drop_variable(s: str) -> str:
    """A leading `x =`, `k=`, `\\theta =` (one short name and a single `=`)."""
    match = re.fullmatch(r"\s*(?:[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+)\s*=(?!=)(.*)", s, re.DOTALL)
    return match.group(1) if match and "=" not in match.group(1) else s


def _drop_thousands(s: str) -> str:
    """`1,000` / `1{,}000` -> `1000` when the whole answer is one number."""
    s = s.replace("{,}", ",")
    return s.replace(",", "") if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s) else s


def _drop_trailing_zeros(s: str) -> str:
    """`5.0` -> `5`, `2.50` -> `2.5`."""
    s = re.sub(r"(\d)\.0+(?!\d)", r"\1", s)
    return re.sub(r"(\d\.\d*?[1-9])0+(?!\d)", r"\1", s)


# The full stop goes first (so that `18\\text{ ways}.` loses its unit) and last (`9\\text{ a.m.}` -> `9a.m`).
BOXED_STEPS: tuple[Callable[[str], str], ...] = (
    _drop_final_stop, _drop_dollars, _drop_degrees_and_percent, _drop_left_right, _drop_units, _unwrap_text,
    _drop_variable, _drop_spacing, _unify_fractions, _drop_simple_braces, _drop_thousands, _drop_trailing_zeros,
    _drop_final_stop,
)


def normalize_boxed(answer: str) -> str:
    """A MATH answer in the form two equal answers share: each of `BOXED_STEPS` in turn."""
    answer = answer.strip()
    for step in BOXED_STEPS:
        answer = step(answer)
    return answer


def _split_top_level(s: str) -> list[str]:
    """'(1,\\frac{1}{2})' -> ['1', '\\frac{1}{2}'] (commas inside braces or brackets kept)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        depth += 1 if c in "({[" else -1 if c in ")}]" else 0
        if c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    return parts + [s[start:]]


def boxed_equal(a: str, b: str) -> bool:
    """Two normalised MATH answers: the same text, the same number (exactly), or the same tuple/interval."""
    if a == b:
        return True
    x, y = to_number(a), to_number(b)
    if x is not None and y is not None:
        return x == y
    brackets = "()[]"
    if len(a) > 1 and len(b) > 1 and a[0] == b[0] and a[-1] == b[-1] and a[0] in brackets and a[-1] in brackets:
        a, b = a[1:-1], b[1:-1]
    left, right = _split_top_level(a), _split_top_level(b)
    if len(left) > 1 and len(left) == len(right):
        return all(boxed_equal(p, q) for p, q in zip(left, right))
    return False


# -- option letters ----------------------------------------------------------------------------------
def parse_options(options) -> dict[str, str]:
    """Options as a dict LETTER -> text, from a dict, AQuA's `["A)21", ...]`, MathQA's `"a ) 38 , b ) 27.675 , ..."`
    (or that list written as a string), or a plain list of choices (lettered A, B, … in order)."""
    if not options:
        return {}
    if isinstance(options, dict):
        return {str(k).strip().upper(): str(v).strip() for k, v in options.items()}
    if isinstance(options, str):
        text = options.strip()
        if text.startswith("["):
            try:
                return parse_options(ast.literal_eval(text))
            except (ValueError, SyntaxError):
                pass
        return _split_lettered(text)
    out = {}
    for i, item in enumerate(options):
        match = re.match(r"\s*\(?([A-Za-z])\s*\)\s*(.*)", str(item), re.DOTALL)
        letter, value = (match.group(1).upper(), match.group(2)) if match else (chr(ord("A") + i), str(item))
        out[letter] = _strip_repeated_letter(letter, value)
    return out


def _split_lettered(text: str) -> dict[str, str]:
    """MathQA's 'a ) 38 , b ) 27.675 , c ) 30': each letter in turn, at the start or after ', '."""
    starts, position = [], 0
    for letter in "abcdefgh":
        match = re.compile(rf"(?:^|,\s*){letter}\s*\)\s*", re.IGNORECASE).search(text, position)
        if not match:
            break
        starts.append((letter.upper(), match.start(), match.end()))
        position = match.end()
    out = {}
    for k, (letter, _, begin) in enumerate(starts):
        end = starts[k + 1][1] if k + 1 < len(starts) else len(text)
        out[letter] = _strip_repeated_letter(letter, text[begin:end].strip())
    return out


def _strip_repeated_letter(letter: str, value: str) -> str:
    """Some rows repeat the letter: 'A)A)59', 'a ) a ) 4 inches'."""
    return re.sub(rf"^\(?{letter}\s*\)\s*", "", value.strip(), flags=re.IGNORECASE).strip()


@functools.cache
def _letter_patterns(letters: str) -> list[re.Pattern]:
    L = rf"[\(\['\"]?\s*([{letters}{letters.lower()}])\s*[\)\]'\"]?"  # "C", "(C)", "( c )", "[ e ]", "' d '"
    end = r"(?!\w)(?![ \t]*[A-Za-z])"  # "the answer is a number" names no option
    fillers = r"(?:\s*(?:is|will|would|should|must|be|the|correct|final|option|choice|[:\-=,]))*\s*"
    return [
        # "answer: c", "The answer is (C).", "Answer : Option B", "answer = B", "Answer D", "ANS:B", "ans - d",
        # "hence answer should be d", "The Answer is, B.", "answer choice ( c )"
        re.compile(rf"\b(?:answer|ans)\b{fillers}{L}{end}", re.IGNORECASE),
        # "The correct option is C", "option b", "choice ( a ) is correct"
        re.compile(rf"\b(?:option|choice){fillers}{L}{end}", re.IGNORECASE),
        # "(C) is correct", "D is the correct choice", "Hence (A) is the answer", "(B) must be true"
        re.compile(rf"(?<!\w){L}\s+(?:is|must be)\s+(?:the\s+)?(?:correct|right|true|answer)", re.IGNORECASE),
        re.compile(rf"####\s*{L}(?!\w)"),
    ]


# A text's last word, when it is one letter: "so e", "hence c .", "b )", "[ e ]".
_LAST_WORD = r"[\(\[]?\s*({either})\s*[\)\]]?[\s.\"'”]*$"


def find_letter(text: str, letters: str = "ABCDE") -> tuple[str | None, str | None]:
    """The option letter a text names, and how: ('C', 'letter') for the last 'answer is C'-like phrase,
    ('C', 'boxed') for \\boxed{C}, ('C', 'last-line') for a last line 'C', '(C)', 'C.' or 'C) 24',
    ('C', 'last-word') for a text that ends in a lone letter ('... = 64 so c')."""
    named = [(m.start(), m.group(1)) for p in _letter_patterns(letters) for m in p.finditer(text)]
    if named:
        # The last phrase wins; "Answer is (A)" matches two patterns at different starts, same letter.
        return max(named)[1].upper(), "letter"
    boxed = last_boxed(text)
    if boxed is not None:
        match = re.fullmatch(rf"\s*(?:\\text\{{)?\(?([{letters}{letters.lower()}])\)?\}}?\s*", boxed)
        if match:
            return match.group(1).upper(), "boxed"
    either = f"[{letters}{letters.lower()}]"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        match = re.fullmatch(rf"\(?({either})\s*[).:]?", lines[-1]) or re.match(rf"\(?({either})\s*\)", lines[-1])
        if match:
            return match.group(1).upper(), "last-line"
    match = re.search(rf"(?<![\w.'’]){_LAST_WORD.format(either=either)}", text)
    if match:
        return match.group(1).upper(), "last-word"
    return None, None


def _option_value(completion: str) -> str | None:
    """The value a completion gives as its answer, for matching against the options' values."""
    for span in (after_hashes(completion), last_boxed(completion), answer_phrase(completion)):
        if span is not None and span.strip():
            return span
    matches = list(_VALUE.finditer(completion))
    return matches[-1].group() if matches else None


def match_option(value: str | None, options: dict[str, str]) -> str | None:
    """The one option whose value `value` is: equal text (normalised), else equal numbers (`numbers_close`;
    the exactly equal one when several are that close: 42415758 against 42415751 … 42415758). A value that
    is not a number alone ("a number divisible by 3, so 15") gives its last number."""
    if value is None or not options:
        return None
    texts = [letter for letter, text in options.items()
             if same_text(value, text) or normalize_boxed(value).lower() == normalize_boxed(text).lower()]
    if len(texts) == 1:
        return texts[0]
    number = _gold_number(value)
    number = number if number is not None else last_value(value)
    if number is None:
        return None
    numbers = {letter: _gold_number(text) for letter, text in options.items()}
    close = [letter for letter, n in numbers.items() if n is not None and numbers_close(number, n)]
    exact = [letter for letter, n in numbers.items() if n is not None and n == number]
    hits = close if len(close) == 1 else exact
    return hits[0] if len(hits) == 1 else None


# -- text answers ------------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """Case, spaces, surrounding quotes and end punctuation, `\\text{}`, a leading article, dropped."""
    text = _unwrap_text(text).replace("$", "").strip().lower()
    text = re.sub(r"\s+", " ", text).strip(" \t\"'`*.,;:!?")
    text = re.sub(r"^(?:the|a|an)\s+", "", text)
    return re.sub(r"\s*([:/])\s*", r"\1", text)


def same_text(a: str, b: str) -> bool:
    """Equal after `normalize_text`, spaces and full stops aside too ('2:35 P. M.' = '2:35 p.m.')."""
    return re.sub(r"[\s.]", "", normalize_text(a)) == re.sub(r"[\s.]", "", normalize_text(b))


def _named_option(span: str, choices: list[str]) -> str | None:
    """The one choice written as whole words in `span` (the longest, when one contains another)."""
    span = " " + normalize_text(span) + " "
    found = [c for c in choices if normalize_text(c) and re.search(rf"(?<!\w){re.escape(normalize_text(c))}(?!\w)", span)]
    found = [c for c in found if not any(c != d and normalize_text(c) in normalize_text(d) for d in found)]
    return found[0] if len(found) == 1 else None


# -- gold answers ------------------------------------------------------------------------------------
def _is_bare(gold: str) -> bool:
    """A bare final answer, not a gold solution to read the answer out of."""
    return "####" not in gold and "\\boxed" not in gold and "\\fbox" not in gold and "\n" not in gold.strip()


_NUMBER_PREFIX = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+|/\d+(?:\.\d+)?)?")
# What may follow a number as its unit: '%', a word of two letters or more (or m, g, l, s, h) and more such
# words ('km/hr', 'step/minute', 'cm ²'); not 'x' (2x), '!' (7!), ':4' (3:4) or '(√3 + 1)'.
_UNIT_TAIL = re.compile(r"\s*(?:\\%|%|(?:[a-zA-Z]{2,}|[mgslh])(?:[ ./]*[a-zA-Z]+)*\.?\s*(?:\^?\{?[23]\}?|[²³])?)?\s*\.?")


def _gold_number(text: str) -> Fraction | None:
    """A gold or option value as a number: '9 (apples)', '$1,234.50', '25%', 'Rs. 750', '12.5 hours',
    '5.333333333333333', '3/10', '\\frac{1}{2}'; None when it is something else ('3:4', '5(√3 + 1)', 'Mrs. Hilt')."""
    text = text.strip()
    text = re.sub(r"\s*\([^()]*\)$", "", text) if _NUMBER_PREFIX.match(text) else text  # ASDiv's "9 (apples)"
    text = re.sub(r"^(?:rs\.?|usd|\\\$|\$|€|£)\s*", "", text, flags=re.IGNORECASE)
    text = re.sub(r"^([-+]?)\((.+)\)$", r"\1\2", text)  # ASDiv's "-(1/3)"
    whole = to_number(text)
    if whole is not None:
        return whole
    match = _NUMBER_PREFIX.match(text)
    if match and _UNIT_TAIL.fullmatch(text[match.end():]):
        return to_number(match.group())
    return None


# -- the rules ---------------------------------------------------------------------------------------
@dataclass
class Verdict:
    correct: bool | None  # None: no gold answer to judge against
    scorer: str | None  # the rule applied ('gsm8k', 'boxed', 'choice', 'number', 'text', 'auto', 'gym'), None
    extracted: str | None  # the completion's final answer as the rule read it (an option letter for `choice`)
    gold: str | None  # the gold final answer as the rule read it
    found: str | None = None  # where the answer was found: '####', 'boxed', 'letter', 'option-value', …


# Each rule: `grade_X(completion, gold, options)` with `gold` the bare gold answer, and `solution_X(text, options)`
# that reads the gold answer out of a gold solution (a GSM8K answer, a MATH solution, a rationale).
def grade_gsm8k(completion: str, gold: str, options=None) -> Verdict:
    """GSM8K: the model's '#### N' line, else its last number, equal to the gold as numbers (commas removed)."""
    gold = _clean(gold)
    hashes = after_hashes(completion)
    answer, found = (_clean(hashes), "####") if hashes is not None else (last_number(completion), "final-number")
    if answer is None:
        return Verdict(False, "gsm8k", None, gold, None)
    x, y = to_number(answer), to_number(gold)
    same = x == y if x is not None and y is not None else same_text(answer, gold)
    return Verdict(same, "gsm8k", answer, gold, found)


def solution_gsm8k(text: str, options=None) -> str | None:
    return after_hashes(text) or last_number(text)


def grade_boxed(completion: str, gold: str, options=None) -> Verdict:
    """MATH: the model's last \\boxed{} against the gold answer, both normalised (`normalize_boxed`, `boxed_equal`)."""
    answer = last_boxed(completion)
    if answer is None or not answer.strip():
        return Verdict(False, "boxed", None, gold, None)
    return Verdict(boxed_equal(normalize_boxed(answer), normalize_boxed(gold)), "boxed", answer.strip(), gold, "boxed")


def solution_boxed(text: str, options=None) -> str | None:
    return last_boxed(text)


def grade_choice(completion: str, gold: str, options=None) -> Verdict:
    """AQuA, MathQA: the option letter the completion names, else the option whose value it writes."""
    table = parse_options(options)
    letters = "".join(sorted(table)) or "ABCDE"
    gold = gold.strip()
    # The gold letter ("C", "c", "(C)"), or the option's value itself ("21.5").
    gold_letter = gold.strip("()").upper() if re.fullmatch(r"\(?[A-Za-z]\)?", gold) else match_option(gold, table)
    letter, found = find_letter(completion, letters)
    if letter is None:
        letter = match_option(_option_value(completion), table)
        found = "option-value" if letter else None
    if gold_letter is None:
        return Verdict(None, "choice", letter, None, found)
    return Verdict(letter == gold_letter, "choice", letter, gold_letter, found)


def solution_choice(text: str, options=None) -> str | None:
    """The letter a gold rationale names ("... answer : a")."""
    return find_letter(text, "".join(sorted(parse_options(options))) or "ABCDE")[0]


def _final_span(completion: str) -> tuple[str | None, str | None]:
    """`number` and `text`: the answer span, and where it was found."""
    for span, found in ((after_hashes(completion), "####"), (last_boxed(completion), "boxed"),
                        (answer_phrase(completion), "answer-is")):
        if span is not None and span.strip():
            return span.strip(), found
    return None, None


def grade_number(completion: str, gold: str, options=None) -> Verdict:
    """MAWPS, ASDiv, SVAMP, GSM-hard: numbers within `numbers_close`; units ('9 (apples)', '$', '%') stripped."""
    target = _gold_number(gold)
    if target is None:  # ASDiv's "3:4", "Mrs. Hilt", TabMWP's "yes": compared as text
        return grade_text(completion, gold, options)
    span, found = _final_span(completion)
    value = None
    if span is not None:  # "43 seashells", "\\frac{16}{3}", "16 - 3 - 4 = 9"
        value = _gold_number(span)
        if value is None and found == "boxed":
            value = to_number(normalize_boxed(span))
        if value is None:
            value = last_value(span)
    if value is None:
        value = last_value(completion)
        found = "final-number" if value is not None else None
    if value is None:
        return Verdict(False, "number", None, gold, None)
    shown = str(value.numerator) if value.denominator == 1 else f"{float(value):.15g}"
    return Verdict(numbers_close(value, target), "number", shown, gold, found)


def solution_number(text: str, options=None) -> str | None:
    span = _final_span(text)[0]
    if span is not None:
        return span
    matches = list(_VALUE.finditer(text))
    return matches[-1].group() if matches else None


def grade_text(completion: str, gold: str, options=None) -> Verdict:
    """TabMWP's words: the answer span (else the last line) against the gold as normalised text; with options,
    the one option the span names; numbers compared as numbers."""
    span, found = _final_span(completion)
    if span is None:
        lines = [line for line in completion.strip().splitlines() if line.strip()]
        span, found = (lines[-1].strip(), "last-line") if lines else (None, None)
    if span is None:
        return Verdict(False, "text", None, gold, None)
    choices = list(parse_options(options).values()) if options else []
    if choices and normalize_text(span) not in {normalize_text(c) for c in choices}:
        named = _named_option(span, choices)
        if named is not None:
            span, found = named, f"{found}+option"
    x, y = _gold_number(span), _gold_number(gold)
    same = numbers_close(x, y) if x is not None and y is not None else same_text(span, gold)
    return Verdict(same, "text", span, gold, found)


def solution_text(text: str, options=None) -> str | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return _final_span(text)[0] or (lines[-1] if lines else None)


def grade_auto(completion: str, gold: str, options=None) -> Verdict:
    """No rule known: `find_answer` and `answers_match`."""
    answer, found = find_answer(completion)
    return Verdict(answers_match(answer, gold), "auto", answer, gold, found)


def solution_auto(text: str, options=None) -> str | None:
    return extract_answer(text)


@dataclass(frozen=True)
class Rule:
    name: str
    grade: Callable[[str, str, object], Verdict]  # (completion, bare gold answer, options)
    solution: Callable[[str, object], str | None]  # (gold solution, options) -> its gold answer
    sets: str


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("gsm8k", grade_gsm8k, solution_gsm8k, "GSM8K"),
    Rule("boxed", grade_boxed, solution_boxed, "MATH, MATH-500"),
    Rule("choice", grade_choice, solution_choice, "AQuA, MathQA"),
    Rule("number", grade_number, solution_number, "MAWPS, ASDiv, SVAMP, GSM-hard, TabMWP (numbers)"),
    Rule("text", grade_text, solution_text, "TabMWP (words)"),
    Rule("auto", grade_auto, solution_auto, "anything else: ####, \\boxed{} or the last number"),
)}

# Known test sets by their `source` name (lower case; '-', '_' and spaces ignored; a split suffix too).
SOURCE_RULES = {
    "gsm8k": "gsm8k",
    "math": "boxed", "math500": "boxed", "competitionmath": "boxed", "hendrycksmath": "boxed", "minerva": "boxed",
    "aqua": "choice", "aquarat": "choice", "mathqa": "choice",
    "mawps": "number", "asdiv": "number", "svamp": "number", "gsmhard": "number", "tabmwp": "number",
}


def source_rule(source: str | None) -> str | None:
    """The rule of a known set's name: 'gsm8k', 'GSM-hard', 'math_500', 'aqua_test', 'tabmwp_test1k'."""
    if not source:
        return None
    key = re.sub(r"[-_\s]", "", str(source).lower())
    if key in SOURCE_RULES:
        return SOURCE_RULES[key]
    key = re.sub(r"(?:test|train|dev|val|validation)\w*$", "", key)
    return SOURCE_RULES.get(key)


def infer_rule(gold: str | None, reference: str | None = None, source: str | None = None, options=None) -> str:
    """The rule for a row that names none: its source, else its gold text, else its options, else the gold's form."""
    named = source_rule(source)
    if named:
        return named
    for text in (gold, reference):
        if text and "####" in text:
            return "gsm8k"
        if text and ("\\boxed" in text or "\\fbox" in text):
            return "boxed"
    if options:
        # Lettered options with a letter for the answer (AQuA, MathQA); plain choices (TabMWP) hold the answer's text.
        return "choice" if gold is None or re.fullmatch(r"\s*\(?[A-Za-z]\)?\s*", gold) else "text"
    if gold is not None and _is_bare(gold) and _gold_number(gold) is not None:
        return "number"
    return "auto"


# Where a test row keeps its gold answer and its options: the pool's own fields first, then the sets' own
# (AQuA's and MathQA's `correct`, MAWPS's and GSM-hard's `target`, SVAMP's `Answer`, TabMWP's `choices`).
GOLD_FIELDS = ("answer", "correct", "target", "Answer")
OPTION_FIELDS = ("options", "choices")


def row_gold(record: dict, reference: str | None = None) -> tuple[str | None, bool]:
    """A test row's gold text and whether it is a whole solution: its first gold field (a solution when it
    holds a `####`, a `\\boxed` or a line break), else the reference response (always a solution)."""
    for key in GOLD_FIELDS:
        if record.get(key) is not None and str(record[key]).strip():
            return str(record[key]), not _is_bare(str(record[key]))
    return (reference, True) if reference and reference.strip() else (None, False)


def row_options(record: dict):
    return next((record[key] for key in OPTION_FIELDS if record.get(key)), None)


def row_rule(record: dict, reference: str | None = None) -> str:
    """The row's `grading` when it names one (checked), else `infer_rule` from its source, gold and options."""
    named = record.get("grading")
    if named is not None:
        if named not in RULES:
            raise ValueError(f"unknown grading rule {named!r}: one of {', '.join(RULES)}")
        return named
    gold = next((str(record[k]) for k in GOLD_FIELDS if record.get(k) is not None), None)
    return infer_rule(gold, reference, record.get("source"), row_options(record))


def row_answer(record: dict, reference: str | None = None) -> tuple[str, str | None, Any]:
    """A test row's rule (`row_rule`), its bare gold answer (`row_gold`, read as the rule reads a solution
    where it is one; None: no gold) and its options."""
    rule, options = row_rule(record, reference), row_options(record)
    gold, is_solution = row_gold(record, reference)
    if gold is not None and is_solution:
        gold = RULES[rule].solution(gold, options)
    return rule, gold, options


def grade_row(completion: str, record: dict, reference: str | None = None) -> Verdict:
    """Grade a completion against a test row as read: its rule, gold answer and options (`row_answer`)."""
    rule, gold, options = row_answer(record, reference)
    return _grade(completion, gold, False, rule, options)


def grade(completion: str, gold: str, rule: str, options=None) -> Verdict:
    """Grade `completion` by `rule` (a key of `RULES`) against `gold`: the bare gold answer ('18', '\\frac{1}{2}',
    'C', '9 (apples)'), or a gold solution (one with a `####`, a `\\boxed` or a line break) to read it from."""
    if rule not in RULES:
        raise ValueError(f"unknown grading rule {rule!r}: one of {', '.join(RULES)}")
    gold = str(gold)
    return _grade(completion, gold, not _is_bare(gold), rule, options)


def _grade(completion: str, gold: str | None, is_solution: bool, rule: str, options) -> Verdict:
    if gold is not None and is_solution:
        gold = RULES[rule].solution(gold, options)
    if gold is None or not gold.strip():  # no gold answer to grade against
        return Verdict(None, rule, None, None, None)
    return RULES[rule].grade(completion, gold.strip(), options)
