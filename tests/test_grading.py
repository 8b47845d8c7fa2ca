"""Answers graded as each real test set is graded (s2l.grading), on rows copied from the sets themselves.

The rows below are real (question and gold answer as in ../shared/data/math/*.jsonl, abridged where
noted); the completions are written here the way a model answers. Each rule is shown accepting the
right answer in the forms a model writes it and rejecting wrong ones. The last test grades every gold
solution of every set against its own gold answer when the data is on this machine.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from pathlib import Path

import pytest

from s2l.grading import (
    RULES,
    Verdict,
    boxed_equal,
    extract_answer,
    grade,
    grade_row,
    infer_rule,
    normalize_boxed,
    parse_options,
    row_rule,
    source_rule,
)

from helpers import NO_SHARED_DATA, SHARED_DATA

DATA = SHARED_DATA / "math"


def right(completion, gold, rule, options=None):
    verdict = grade(completion, gold, rule, options)
    assert verdict.scorer in RULES and verdict.correct is True, verdict
    return verdict


def wrong(completion, gold, rule, options=None):
    verdict = grade(completion, gold, rule, options)
    assert verdict.correct is False, verdict
    return verdict


# -- GSM8K ---------------------------------------------------------------------------------------------
GSM8K_JANET = {
    "question": "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
                "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
                "per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
    "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day "
              "at the farmer’s market.\n#### 18"}
GSM8K_JOSH = {
    "question": "Josh decides to try flipping a house.  He buys a house for $80,000 and then puts in $50,000 in "
                "repairs.  This increased the value of the house by 150%.  How much profit did he make?",
    "answer": "The cost of the house and repairs came out to 80,000+50,000=$<<80000+50000=130000>>130,000\nHe "
              "increased the value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\nSo the new value of the "
              "house is 120,000+80,000=$<<120000+80000=200000>>200,000\nSo he made a profit of "
              "200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000"}


def test_gsm8k():
    gold = GSM8K_JANET["answer"]  # the whole gold solution: its #### line is the answer
    v = right("She has 16 - 3 - 4 = 9 eggs left and sells them for 9 * 2 = $18.\n#### 18", gold, "gsm8k")
    assert (v.extracted, v.gold, v.found) == ("18", "18", "####")
    right("9 eggs at $2 each.\n#### $18.00", gold, "gsm8k")
    assert right("She makes 9 * 2 = 18 dollars every day.", gold, "gsm8k").found == "final-number"
    right("He made 200,000 - 130,000 = $70,000 profit.\n#### 70,000", GSM8K_JOSH["answer"], "gsm8k")
    right("#### 70000", "70000", "gsm8k")  # a bare gold answer

    wrong("16 - 3 = 13 eggs, 13 * 2 = 26\n#### 26", gold, "gsm8k")
    wrong("She makes 9 * 2 = 18 dollars.\n#### 20", gold, "gsm8k")  # the #### line wins over the last number
    wrong("She makes $18, and keeps 3 eggs.", gold, "gsm8k")  # no ####: the last number (3)
    wrong("#### 7000", GSM8K_JOSH["answer"], "gsm8k")
    assert wrong("I cannot tell.", gold, "gsm8k").extracted is None


# -- MATH / MATH-500 -------------------------------------------------------------------------------------
# (problem abridged, answer) from math500.jsonl.
MATH500 = {
    "polar": ("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.",
              "\\left( 3, \\frac{\\pi}{2} \\right)"),
    "f(-2)": ("If $f(x) = \\frac{3x-2}{x-2}$, what is the value of $f(-2) +f(-1)+f(0)$?", "\\frac{14}{3}"),
    "speed": ("Which student has the greatest average speed?", "\\text{Evelyn}"),
    "angle": ("Find the angle between these lines, in degrees.", "90^\\circ"),
    "bricks": ("How much would a 3 inch cube cost?", "\\$18.90"),
    "bond": ("What is the total number of dollars in this investment at the end of five years?", "\\$32,\\!348"),
    "root": ("Find all values of $x$ that satisfy the equation $x = \\!\\sqrt{11-2x} + 4$.", "x=5"),
    "f(n)=n": ("Find all integers $n$ such that $f(n) = n.$  Enter all such integers, separated by commas.", "1,-2"),
    "base 8": ("Find the product of $6_8 \\cdot 7_8.$ Express your answer in base $8.$", "52_8"),
    "multiple of 3": ("What is the probability that the number is a multiple of 3?", "\\dfrac{33}{100}"),
    "decimal": ("Write $\\frac{3}{20}$ as a decimal.", "0.15"),
    "bags": ("What is the probability that after this process the contents of the two bags are the same?",
             "\\frac{1}{3}"),
    "radical": ("Simplify $\\sqrt{242}$.", "11\\sqrt2"),
}


@pytest.mark.parametrize("key, completion", [
    ("polar", "So $r = 3$ and $\\theta = \\frac{\\pi}{2}$: $\\boxed{(3, \\frac{\\pi}{2})}$."),
    ("f(-2)", "$f(-2)+f(-1)+f(0) = 2 + \\frac{5}{3} + 1 = \\boxed{\\dfrac{14}{3}}$"),
    ("f(-2)", "Adding, the sum is $\\boxed{\\frac{14}3}$."),
    ("speed", "Evelyn covers the most distance in the least time, so the answer is $\\boxed{\\text{Evelyn}}$."),
    ("speed", "\\boxed{Evelyn}"),
    ("angle", "The direction vectors are orthogonal, so the angle is $\\boxed{90^{\\circ}}$."),
    ("angle", "\\boxed{90}"),
    ("bricks", "The 3 inch cube costs $\\boxed{\\$18.9}$."),
    ("bricks", "\\boxed{18.90 \\text{ dollars}}"),
    ("bond", "After 60 months: $24000 \\cdot 1.01^{30} \\approx \\boxed{32348}$."),
    ("root", "Squaring gives $x = 5$ or $x = 9$, and only 5 works: $\\boxed{5}$."),
    ("root", "\\boxed{x = 5}"),
    ("f(n)=n", "So $n = 1$ or $n = -2$: $\\boxed{1, -2}$."),
    ("base 8", "$42_{10} = \\boxed{52_{8}}$."),
    ("multiple of 3", "There are 33 multiples of 3, so the probability is $\\boxed{0.33}$."),
    ("multiple of 3", "$\\boxed{\\tfrac{33}{100}}$"),
    ("decimal", "$\\frac{3}{20} = \\frac{15}{100} = \\boxed{0.15}$"),
    ("decimal", "\\boxed{\\frac{3}{20}}"),
    ("bags", "First I thought $\\boxed{\\frac{1}{5}}$, but counting again the answer is $\\boxed{\\frac{1}{3}}$."),
    ("radical", "$\\sqrt{242} = \\sqrt{121 \\cdot 2} = \\boxed{11\\sqrt{2}}$"),
])
def test_math_accepts(key, completion):
    right(completion, MATH500[key][1], "boxed")


@pytest.mark.parametrize("key, completion", [
    ("polar", "$\\boxed{(\\frac{\\pi}{2}, 3)}$"),  # the order matters
    ("polar", "$\\boxed{[3, \\frac{\\pi}{2}]}$"),  # a different bracket
    ("f(-2)", "The sum is $\\boxed{4.67}$."),  # a rounded fraction is not the fraction
    ("f(-2)", "The sum is 14/3."),  # no \boxed{}: MATH reads only the box
    ("bags", "The probability is $\\boxed{0.33}$."),  # \frac{1}{3} is not 0.33
    ("bags", "The answer is $\\boxed{\\frac{1}{3}}$. Wait, that is wrong: $\\boxed{\\frac{2}{5}}$."),  # the last box
    ("speed", "\\boxed{\\text{Emily}}"),
    ("angle", "\\boxed{45^\\circ}"),
    ("root", "\\boxed{9}"),
    ("f(n)=n", "\\boxed{1}"),
    ("base 8", "\\boxed{42}"),
    ("radical", "\\boxed{11\\sqrt{3}}"),
    ("radical", "\\boxed{2\\sqrt{11}}"),
])
def test_math_rejects(key, completion):
    wrong(completion, MATH500[key][1], "boxed")


def test_math_normalisation_steps():
    same = [("\\frac{1}{2}", "0.5"), ("\\dfrac{1}{2}", "1/2"), ("\\tfrac12", "\\frac{1}{2}"), ("-\\frac{1}{2}", "-0.5"),
            ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"), ("10\\%", "10"), ("5.0", "5"),
            ("x = 5", "5"), ("\\theta = 30^\\circ", "30"), ("5\\text{ cm}^2", "5"), ("12 inches", "12"),
            ("\\text{(C)}", "(C)"), ("1,000", "1000"), ("10\\,000", "10000"), ("\\frac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}"),
            ("\\!5", "5"), ("2.50", "\\frac{5}{2}"), ("(1, 0.5)", "(1,\\frac12)"), ("\\mbox{even}", "even"),
            # Gold answers of math_test5000.jsonl, as a model may write them.
            ("18\\text{ ways.}", "18"), ("100\\text{ square units}.", "100"), ("40\\text{ points}", "40 points"),
            ("\\$1,\\!000,\\!000", "1000000"), ("9\\text{ a.m.}", "9 a.m."), ("\\text{1:03 PM}", "1:03 PM")]
    for a, b in same:
        assert boxed_equal(normalize_boxed(a), normalize_boxed(b)), (a, b)
    different = [("\\frac{1}{3}", "0.33"), ("0.333", "\\frac13"), ("2x", "2"), ("\\sqrt{2}", "2"), ("x+1", "x+2"),
                 ("(1,2)", "[1,2]"), ("(1,2)", "(1,2,3)"), ("-5", "5"),
                 ("9\\text{ a.m.}", "9\\text{ p.m.}"), ("\\text{1:03 PM}", "1:03")]  # a time keeps its a.m./p.m.
    for a, b in different:
        assert not boxed_equal(normalize_boxed(a), normalize_boxed(b)), (a, b)


def test_math_own_files_need_no_grading_field():
    # MATH-500's own row: problem, solution, answer. The gold is `answer`; the rule comes from the solution's \boxed.
    row = {"problem": "Simplify $\\sqrt{242}$.", "answer": "11\\sqrt2", "subject": "Prealgebra", "level": 4,
           "solution": "Factor 242 as $11^2 \\cdot 2$. Then $\\sqrt{242} = \\sqrt{11^2} \\cdot \\sqrt2 = \\boxed{11\\sqrt2}$.",
           "unique_id": "test/prealgebra/1302.json"}
    assert row_rule(row, row["solution"]) == "boxed"
    v = grade_row("$\\sqrt{242} = \\boxed{11 \\sqrt{2}}$", row, row["solution"])
    assert v.correct is True and v.gold == "11\\sqrt2" and v.scorer == "boxed"
    # MATH's own row (math_test5000.jsonl) has no answer field: the gold is the solution's last \boxed{}.
    row = {"problem": "How many vertical asymptotes does the graph of $y=\\frac{2}{x^2+x-6}$ have?",
           "level": "Level 3", "type": "Algebra",
           "solution": "The denominator of the rational function factors into $x^2+x-6=(x-2)(x+3)$. Since the "
                       "numerator is always nonzero, there is a vertical asymptote whenever the denominator is $0$, "
                       "which occurs for $x = 2$ and $x = -3$.  Therefore, the graph has $\\boxed{2}$ vertical asymptotes."}
    assert grade_row("So there are $\\boxed{2}$.", row, row["solution"]) == Verdict(True, "boxed", "2", "2", "boxed")
    assert grade_row("So there are $\\boxed{1}$.", row, row["solution"]).correct is False


# -- AQuA and MathQA -------------------------------------------------------------------------------------
AQUA_PRICE = {
    "question": "The original price of an item is discounted 22%. A customer buys the item at this discounted price "
                "using a $20-off coupon. There is no tax on the item, and this was the only item the customer "
                "bought. If the customer paid $1.90 more than half the original price of the item, what was the "
                "original price of the item?",
    "options": ["A)$61", "B)$65", "C)$67.40", "D)$70", "E)$78.20"],
    "rationale": "Let x be the original price of the item\nDiscounted price = 0.78x\nPayment made by the customer "
                 "after using the $20 coupon = 0.78x - 20\n0.78x - 20 = x/2 + 1.9\nx = 78.20\nAnswer: E",
    "correct": "E"}
AQUA_MULTIPLE = {"question": "Find out which of the following values is the multiple of X, if it is divisible by 9 "
                             "and 12?", "options": ["A)36", "B)15", "C)17", "D)5", "E)7"],
                 "rationale": "9=3*3\n12=3*4\nThe number should definitely have these factors 3*3*4\n36 is the number "
                              "that has these factors\nSo, 36 is the multiple of X\nAnswer is A", "correct": "A"}
MATHQA_LOG = {"problem": "if log 8 x + log 8 1 / 6 = 1 / 3 , then the value of x is :",
              "rationale": "\"log 8 x + log 8 ( 1 / 6 ) = 1 / 3 = > ( log x / log 8 ) + ( log 1 / 6 / log 8 ) = log "
                           "( 81 / 3 ) = log 2 = > log x = log 2 – log 1 / 6 = log ( 2 * 6 / 1 ) = log 12 answer : a\"",
              "options": "a ) 12 , b ) 16 , c ) 18 , d ) 24 , e ) 26", "correct": "a"}
MATHQA_RATIO = {"problem": "the compound ratio of 5 : 6 , 3 : 2 and 6 : 5 ?",
                "options": "a ) 1 : 1 , b ) 1 : 87 , c ) 1 : 6 , d ) 3 : 2 , e ) 1 : 2", "correct": "d"}
MATHQA_BOYS = {"problem": "two boys starts from the same place walking at the rate of 5 kmph and 5.5 kmph "
                          "respectively in the same direction . what time will they take to be 8.5 km apart ?",
               "options": "a ) 17 hr , b ) 14 hr , c ) 12 hr , d ) 19 hr , e ) 23 hr", "correct": "a"}


def test_options_in_every_form():
    assert parse_options(AQUA_PRICE["options"]) == {"A": "$61", "B": "$65", "C": "$67.40", "D": "$70", "E": "$78.20"}
    assert parse_options(MATHQA_RATIO["options"]) == {"A": "1 : 1", "B": "1 : 87", "C": "1 : 6", "D": "3 : 2", "E": "1 : 2"}
    assert parse_options({"a": "12", "b": "16"}) == {"A": "12", "B": "16"}
    # Also in mathqa_test.jsonl: the list written as a string, and a letter repeated inside an option.
    assert parse_options("['a ) 462 cm ²', 'b ) 530 cm ²']") == {"A": "462 cm ²", "B": "530 cm ²"}
    assert parse_options(["A)A)59", "B)B)69"]) == {"A": "59", "B": "69"}
    assert parse_options("a ) rs . 1,200 , b ) rs . 1,500") == {"A": "rs . 1,200", "B": "rs . 1,500"}


@pytest.mark.parametrize("completion, found", [
    ("0.78x - 20 = x/2 + 1.9, so x = 78.20.\nAnswer: E", "letter"),
    ("x = 78.2. The answer is (E).", "letter"),
    ("So the original price was $78.20.", "option-value"),  # no letter: the option whose value it is
    ("0.28x = 21.9\nE) $78.20", "last-line"),
    ("x = 78.20\nE", "last-line"),
    ("The correct option is e", "letter"),
    ("#### 78.2", "option-value"),
])
def test_aqua_accepts(completion, found):
    assert right(completion, AQUA_PRICE["correct"], "choice", AQUA_PRICE["options"]).found == found


@pytest.mark.parametrize("completion", [
    "0.78x - 20 = x/2, so x = 71.4.\nAnswer: D",
    "So the original price was $70.",  # the value of option D
    "So the original price was $75.",  # no option has it
    "The answer is (E). No wait, the answer is (C).",  # the last letter named
    "I am not sure.",
])
def test_aqua_rejects(completion):
    wrong(completion, AQUA_PRICE["correct"], "choice", AQUA_PRICE["options"])


def test_a_word_is_not_an_option_letter():
    # "The answer is a number ..." names no option; the value written (15: option B) is the answer.
    v = wrong("The answer is a number divisible by 3, so 15.", AQUA_MULTIPLE["correct"], "choice", AQUA_MULTIPLE["options"])
    assert (v.extracted, v.found) == ("B", "option-value")
    right("The answer is a number divisible by 9 and 12: 36.", AQUA_MULTIPLE["correct"], "choice", AQUA_MULTIPLE["options"])


@pytest.mark.parametrize("row, completion, correct", [
    (MATHQA_LOG, "log 8 ( 6 x ) = 1 / 3 , so 6 x = 2 and x = 12 . answer : a", True),
    (MATHQA_LOG, "x = 12 . answer a", True),
    (MATHQA_LOG, "so x = 12", True),  # option a's value
    (MATHQA_LOG, "x = 2 * 8 = 16 . answer : b", False),
    (MATHQA_LOG, "hence answer should be ( c )", False),
    (MATHQA_RATIO, "5 / 6 * 3 / 2 * 6 / 5 = 3 / 2 . the answer is 3 : 2", True),  # matched to option d's text
    (MATHQA_RATIO, "the answer is 1 : 2", False),
    (MATHQA_BOYS, "they gain 0.5 km every hour , so 8.5 km takes 17 hours .", True),
    (MATHQA_BOYS, "8.5 / 0.5 = 17 hr , ans - a", True),
    (MATHQA_BOYS, "they will be 8.5 km apart after 12 hours .", False),
])
def test_mathqa(row, completion, correct):
    assert grade(completion, row["correct"], "choice", row["options"]).correct is correct


def test_choice_own_files_need_no_grading_field():
    # AQuA's and MathQA's own rows: the gold letter is in `correct`, the options make the rule.
    assert row_rule(AQUA_PRICE) == "choice" and row_rule(MATHQA_LOG) == "choice"
    assert grade_row("Answer: E", AQUA_PRICE).correct is True
    assert grade_row("answer : a", MATHQA_LOG).correct is True and grade_row("answer : d", MATHQA_LOG).correct is False
    # The pool's contract: options as a dict, the gold letter in `answer`, the rule named.
    row = {"instruction": "...", "output": "...", "answer": "E", "grading": "choice", "source": "aqua", "ood": True,
           "options": parse_options(AQUA_PRICE["options"])}
    assert grade_row("So the price was $78.20.", row).correct is True


# -- numbers: SVAMP, ASDiv, MAWPS, GSM-hard -------------------------------------------------------------------
SVAMP_BANANAS = {"Answer": 145.0, "Question": "How big is each group of bananas?", "Equation": "( 290.0 / 2.0 )",
                 "Body": "There are 87 oranges and 290 bananas in Philip's collection. If the bananas are organized "
                         "into 2 groups and oranges are organized into 93 groups", "Type": "Common-Division", "ID": "chal-777"}
ASDIV_APPLES = {"body": "Seven red apples and two green apples are in the basket.",
                "question": "How many apples are in the basket?", "solution_type": "Addition", "answer": "9 (apples)",
                "formula": "7+2=9"}
ASDIV_RATIO = {"body": "Diana bought 12 guavas and 16 apples.", "question": "What is the ratio of guavas to apples?",
               "solution_type": "Ratio", "answer": "3:4", "formula": "12:16=3:4"}
ASDIV_WHO = {"body": "Mrs. Hilt has two pennies, two dimes, and two nickels. Jacob has four pennies, one nickel, and "
                     "one dime.", "question": "Who has more money?", "solution_type": "Comparison", "answer": "Mrs. Hilt"}
ASDIV_TIME = {"body": "The puppet show begins at 2:00 p.m. It lasts 1 hour and 30 minutes.",
              "question": "What time does it end?", "solution_type": "Sum", "answer": "3:30 p.m."}
MAWPS_SHELLS = {"input": "Joan found 70 seashells on the beach. she gave Sam some of her seashells. She has 27 seashell "
                         "left. How many seashells did she give to Sam ?", "target": 43.0, "type": "singleeq"}
GSM_HARD_EGGS = {"input": "Claire makes a 6022727 egg omelet every morning for breakfast.  How many dozens of eggs will "
                          "she eat in 4 weeks?", "target": 14053029.666666666}
GSM_HARD_CHIPS = {"input": "According to its nutritional info, a bag of chips has 7146410 calories per serving. If a "
                           "300g bag has 5 servings, how many grams can you eat if your daily calorie target is 2000 "
                           "and you have already consumed 1800 calories?", "target": 0.0016791648}
GSM_HARD_JANET = {"input": "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
                           "muffins for her friends every day with 4933828. ...", "target": -9867630.0}


def test_number_tolerance():
    # rel_tol 1e-4 of the larger, or abs_tol 1e-6: either suffices.
    eggs = str(GSM_HARD_EGGS["target"])
    right("6022727 * 28 / 12 = 14053029.67\n#### 14053029.67", eggs, "number")
    right("#### 14053029.666666666", eggs, "number")
    right("#### 42159089/3", eggs, "number")
    wrong("#### 14050000", eggs, "number")  # off by 2e-4
    chips = str(GSM_HARD_CHIPS["target"])
    right("200 / (7146410 / 60) = 0.0016791648 grams\n#### 0.0016791648", chips, "number")
    right("#### 0.0016792", chips, "number")  # 2e-5 relative
    right("#### 0.00168", chips, "number")  # 5e-4 relative, but 8e-7 absolute
    wrong("#### 0.0017", chips, "number")  # 1.2e-2 relative, 2e-5 absolute
    wrong("#### 0", chips, "number")  # 1.7e-3 from the gold: beyond the absolute 1e-6
    right("#### 0.0000001", "0.0", "number")  # within the absolute 1e-6 of 0
    janet = str(GSM_HARD_JANET["target"])
    right("She sells 16 - 3 - 4933828 = -4933815 eggs for 2 each.\n#### -9867630", janet, "number")
    wrong("#### 9867630", janet, "number")


@pytest.mark.parametrize("row, completion, correct", [
    (SVAMP_BANANAS, "290 / 2 = 145\n#### 145", True),
    (SVAMP_BANANAS, "Each group has 145 bananas.", True),
    (SVAMP_BANANAS, "The answer is 145.0", True),
    (SVAMP_BANANAS, "Each group has 145.5 bananas.", False),
    (SVAMP_BANANAS, "#### 290", False),
    (MAWPS_SHELLS, "70 - 27 = 43. She gave Sam 43 seashells.", True),
    (MAWPS_SHELLS, "70 + 27 = 97\n#### 97", False),
    (ASDIV_APPLES, "7 + 2 = 9. There are 9 apples in the basket.", True),
    (ASDIV_APPLES, "The answer is 9 apples.", True),
    (ASDIV_APPLES, "#### 8", False),
    (ASDIV_RATIO, "12 : 16 = 3 : 4. The answer is 3 : 4.", True),  # not a number: compared as text
    (ASDIV_RATIO, "The answer is 12:16.", False),
    (ASDIV_WHO, "Mrs. Hilt has 32 cents and Jacob has 19 cents. The answer is Mrs. Hilt.", True),
    (ASDIV_WHO, "The answer is Jacob.", False),
    (ASDIV_TIME, "2:00 plus 1 hour 30 minutes. The answer is 3:30 PM.", True),
    (ASDIV_TIME, "The answer is 3:00 p.m.", False),
])
def test_number_sets(row, completion, correct):
    gold = next(row[k] for k in ("answer", "target", "Answer") if k in row)
    verdict = grade_row(completion, dict(row, source="asdiv" if "body" in row else None))
    assert verdict.correct is correct, verdict
    assert verdict.scorer == ("text" if str(gold)[0].isalpha() or ":" in str(gold) else "number")


def test_number_own_files_need_no_grading_field():
    assert row_rule(SVAMP_BANANAS) == "number" and row_rule(MAWPS_SHELLS) == "number"
    assert row_rule(GSM_HARD_CHIPS) == "number" and row_rule(ASDIV_APPLES) == "number"
    assert grade_row("#### 145", SVAMP_BANANAS).gold == "145.0"
    assert grade_row("#### 0.0016791648", GSM_HARD_CHIPS).correct is True


# -- TabMWP ---------------------------------------------------------------------------------------------
TABMWP_ERIK = {"question": "Erik has $7,616.00. How much money will Erik have left if he buys a parrot and a kinkajou?",
               "choices": None, "answer": "4,656", "unit": "$", "ans_type": "integer_number"}
TABMWP_BEANBAG = {"question": "What is the probability that a randomly selected beanbag chair is filled with foam and "
                              "is made from velvet? Simplify any fractions.", "choices": None, "answer": "3/10",
                  "unit": None, "ans_type": "decimal_number"}
TABMWP_RATE = {"question": "According to the table, what was the rate of change between 2010 and 2011?",
               "choices": None, "answer": "-1", "unit": "students per year", "ans_type": "integer_number"}
TABMWP_ROXANNE = {"question": "Roxanne has $32.50. Does she have enough to buy a CD and a blender?",
                  "choices": ["yes", "no"], "answer": "yes", "unit": None, "ans_type": "boolean_text"}
TABMWP_CHAMP = {"question": "Which dog's weight has changed the most?", "choices": ["Sprinkles", "Champ"],
                "answer": "Champ", "unit": None, "ans_type": "extractive_text"}


@pytest.mark.parametrize("row, completion, correct", [
    (TABMWP_ERIK, "$7,616.00 - $2,960.00 = $4,656.00. Erik will have $4,656.00 left.", True),
    (TABMWP_ERIK, "The answer is 4656.", True),
    (TABMWP_ERIK, "Erik will have $4,665.00 left.", False),
    (TABMWP_BEANBAG, "The answer is \\frac{3}{10}.", True),
    (TABMWP_BEANBAG, "3 of the 10 chairs: 3/10", True),
    (TABMWP_BEANBAG, "The probability is 0.3", True),
    (TABMWP_BEANBAG, "The answer is 3/11.", False),
    (TABMWP_RATE, "The rate of change was -1 students per year.", True),
    (TABMWP_RATE, "The rate of change was 1 students per year.", False),
    (TABMWP_ROXANNE, "$18.35 + $14.02 = $32.37, less than $32.50. The answer is yes.", True),
    (TABMWP_ROXANNE, "$32.37 is more than she has, so the answer is no.", False),
    (TABMWP_CHAMP, "Sprinkles: |5| = 5 Champ: |-6| = 6\nChamp's weight has changed the most.", True),
    (TABMWP_CHAMP, "The answer is Sprinkles.", False),
])
def test_tabmwp(row, completion, correct):
    verdict = grade_row(completion, dict(row, source="tabmwp"))
    assert verdict.correct is correct, verdict
    assert verdict.scorer == ("text" if row["choices"] else "number")


# -- which rule --------------------------------------------------------------------------------------------
def test_rule_from_source_name():
    for name, rule in [("gsm8k", "gsm8k"), ("GSM8K", "gsm8k"), ("gsm-hard", "number"), ("gsm_hard", "number"),
                       ("math", "boxed"), ("MATH-500", "boxed"), ("math500", "boxed"), ("math_test5000", "boxed"),
                       ("aqua", "choice"), ("aqua_test", "choice"), ("mathqa", "choice"), ("MathQA", "choice"),
                       ("mawps", "number"), ("asdiv", "number"), ("svamp", "number"), ("tabmwp", "number"),
                       ("tabmwp_test1k", "number")]:
        assert source_rule(name) == rule, name
    assert source_rule("gcd") is None and source_rule(None) is None and source_rule("mathematics") is None


def test_rule_inference_and_the_pool_contract():
    assert infer_rule("9 (apples)") == "number"
    assert infer_rule("Tuesday") == "auto"
    assert infer_rule(None, "6 * 7 = 42\n#### 42") == "gsm8k"
    assert infer_rule("\\frac{1}{2}", "so $\\boxed{\\frac12}$") == "boxed"
    assert infer_rule("yes", options=["yes", "no"]) == "text" and infer_rule("C", options=["A)1", "B)2"]) == "choice"
    # The row's own `grading` wins over its source; an unknown one is refused.
    assert row_rule({"answer": "yes", "grading": "text", "source": "tabmwp"}) == "text"
    assert row_rule({"answer": "18", "source": "gsm8k"}) == "gsm8k"
    with pytest.raises(ValueError, match="unknown grading"):
        row_rule({"answer": "1", "grading": "exact"})
    with pytest.raises(ValueError, match="unknown grading"):
        grade("1", "1", "exact")
    # GSM8K's own file mapped to instruction/output: no answer field, the gold is the output's #### line.
    own = {"instruction": GSM8K_JANET["question"], "output": GSM8K_JANET["answer"]}
    assert grade_row("#### 18", own, own["output"]) == Verdict(True, "gsm8k", "18", "18", "####")
    # GSM8K's own file read as is: `answer` is the whole solution.
    assert grade_row("So she makes $18.", GSM8K_JANET, GSM8K_JANET["answer"]).correct is True
    # No gold anywhere: nothing to grade against.
    assert grade_row("42", {"instruction": "?"}, "no answer given").correct is None


# -- every gold answer against its own gold solution ------------------------------------------------------------
def _arithmetic(expression: str) -> float:
    """SVAMP's equations ("( 290.0 / 2.0 )"): + - * / on numbers only."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(expression)

    return value(ast.parse(expression, mode="eval").body)


def _jsonl(name):
    return [json.loads(line) for line in open(DATA / name, encoding="utf-8")]


def _self_grading_sets():
    """Per set: (minimum agreement, [(completion, row, reference)]); the completion is the set's own gold
    solution where it states the answer, else the gold answer written the way a model writes it."""
    tabmwp = list(json.loads((DATA / "tabmwp_test1k.json").read_text()).values())

    def say(value, unit=None):  # TabMWP's unit: "$" before the number, words after it
        return f"The answer is ${value}." if unit == "$" else f"The answer is {value}{' ' + unit if unit else ''}."

    return {
        # The gold solution's #### line, against the gold solution (own file, no answer field mapped).
        "gsm8k_test": (1.0, [(r["answer"], r, r["answer"]) for r in _jsonl("gsm8k_test.jsonl")]),
        # The solution's last \boxed{} against the separate `answer` field.
        "math500": (0.99, [(r["solution"], r, r["solution"]) for r in _jsonl("math500.jsonl")]),
        "math_test5000": (0.99, [(r["solution"], r, r["solution"]) for r in _jsonl("math_test5000.jsonl")]),
        # The rationale's letter (or option value) against `correct`. Some AQuA rationales name no answer at
        # all ("... which is 25% of $80.", "ANSWER: 3"): 97.6% of the test split, 99.2% of dev.
        "aqua_test": (0.97, [(r["rationale"], r, r["rationale"]) for r in _jsonl("aqua_test.jsonl")]),
        "aqua_dev": (0.98, [(r["rationale"], r, r["rationale"]) for r in _jsonl("aqua_dev.jsonl")]),
        "mathqa_test": (0.99, [(r["rationale"], r, r["rationale"]) for r in _jsonl("mathqa_test.jsonl")]),
        # SVAMP's equation worked out (floating point), against `Answer`; one row's Answer disagrees with its
        # own equation (chal-680: "( ( 4.0 - 2.0 ) + 3.0 )" and Answer 1.0).
        "svamp": (0.999, [(f"{r['Equation']} = {_arithmetic(r['Equation'])}", r, None) for r in _jsonl("svamp.jsonl")]),
        # ASDiv's formula where it is arithmetic ending in the number ("7+2=9"; not "94/8=11 r6", comparisons or
        # "x:Amy's books; (x+18)-15=9"), against "9 (apples)".
        "asdiv_formula": (0.99, [(r["formula"], dict(r, source="asdiv"), None) for r in _jsonl("asdiv.jsonl")
                                 if re.fullmatch(r"[\d+\-*/(). ]+=\s*[\d.]+", r["formula"])]),
        # No solution text: the gold answer as a model writes it ("9 apples", "$4,656", "3:30 p.m.", "Mrs. Hilt").
        "asdiv": (1.0, [(say(r["answer"].replace("(", "").replace(")", "")), dict(r, source="asdiv"), None)
                        for r in _jsonl("asdiv.jsonl")]),
        "mawps": (1.0, [(say(r["target"]), r, None) for r in _jsonl("mawps.jsonl")]),
        "gsm_hard": (1.0, [(f"#### {r['target']}", r, None) for r in _jsonl("gsm_hard.jsonl")]),
        "tabmwp": (1.0, [(say(r["answer"], r["unit"]), dict(r, source="tabmwp"), None) for r in tabmwp]),
        # TabMWP's solutions often end on a sentence that does not state the answer ("Roxanne does have enough
        # money.", "4 parking lots had exactly 44 cars."): reported, not a measure of the grader.
        "tabmwp_solution": (0.0, [(r["solution"], dict(r, source="tabmwp"), r["solution"]) for r in tabmwp]),
    }


@pytest.mark.skipif(not DATA.is_dir(), reason=NO_SHARED_DATA)
def test_math_answers_survive_how_a_model_rewrites_them():
    """Every distinct gold answer of MATH (math500 and math_test5000) equals itself rewritten the way a model
    may: \\frac/\\dfrac swapped, spaces dropped or added, \\left/\\right and \\text{} dropped, '.0' after an
    integer, a final full stop. (MATH-500's `answer` equals its solution's last \\boxed{} verbatim in all 500
    rows, so the self-grading below checks extraction, and this checks the normalisation.)"""
    from s2l.grading import last_boxed

    rows = _jsonl("math500.jsonl") + _jsonl("math_test5000.jsonl")
    answers = sorted({r.get("answer") or last_boxed(r["solution"]) for r in rows} - {None})

    def rewritten(a):
        yield a.replace("\\frac", "\\dfrac")
        yield a.replace("\\dfrac", "\\frac")
        yield a.replace(" ", "")
        yield re.sub(r"(?<=[,=+])(?=\S)", " ", a)
        yield re.sub(r"\\left|\\right", "", a)
        yield re.sub(r"\\text\{([^{}]*)\}", r"\1", a)
        if re.fullmatch(r"-?\d+", a):
            yield a + ".0"
        yield a + "."

    pairs = [(a, b) for a in answers for b in rewritten(a)]
    missed = [(a, b) for a, b in pairs if not boxed_equal(normalize_boxed(a), normalize_boxed(b))]
    print(f"MATH answers rewritten: {len(pairs) - len(missed)}/{len(pairs)} "
          f"= {100 * (1 - len(missed) / len(pairs)):.2f}% ({len(answers)} distinct answers)")
    assert len(missed) / len(pairs) < 0.002, missed[:20]


@pytest.mark.skipif(not DATA.is_dir(), reason=NO_SHARED_DATA)
def test_every_gold_answer_grades_as_correct_against_its_own_solution():
    report, failures = [], []
    for name, (minimum, rows) in _self_grading_sets().items():
        missed = [(completion, grade_row(completion, row, reference)) for completion, row, reference in rows
                  if not grade_row(completion, row, reference).correct]
        rate = 1 - len(missed) / len(rows)
        report.append(f"{name}: {len(rows) - len(missed)}/{len(rows)} = {100 * rate:.2f}%")
        if rate < minimum:
            failures.append(f"{name} {100 * rate:.2f}% < {100 * minimum:.0f}%: " + "; ".join(
                f"{v.extracted!r} vs {v.gold!r} in …{c[-80:]!r}" for c, v in missed[:10]))
    print("\n".join(report))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("completion, answer", [
    ("8 + 5 = 13\n#### 13", "13"),
    ("4 - -7 = 11\n11 - -5 = 16\n-(16) = -16\n#### -16", "-16"),
    ("Split 19 into 10 + 9.\n#### 1,653", "1653"),
    ("#### 13\n#### 14, since 15 > 14", "14"),  # the first number after the last ####
    ("the answer is 7.", "7"),  # no ####: the last number
    ("so 2 + 3 = 5 and then 12-7", "7"),  # a minus after a digit is an operator, not a sign
    ("x = (-3)", "-3"),
    ("total: 2.50", "2.5"),
    ("#### 4.0", "4"),
    ("#### no number here, but 9 before", "no number here, but 9 before"),  # text after #### is the answer
    ("#### ", None),  # nothing after the last ####, nor a number anywhere
    ("::::", None),
])
def test_extract_answer_finds_the_final_answer(completion, answer):
    assert extract_answer(completion) == answer
