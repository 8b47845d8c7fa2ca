"""Held-out evaluation: answer extraction, judging (reasoning-gym's scorer and the fallback), greedy
batched generation from the training prompt, and the held-out loss against transformers' own."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from s2l.data import load_pool, tokenize_examples
from s2l.evaluation import (EvalConfig, answers_match, evaluate, extract_answer, find_answer,
                            Verdict, generate_completions, greedy_decode, judge, left_pad, prompt_ids)

from helpers import reference_losses

FAST = dict(max_new_tokens=12, batch_size=4)


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """make_math_pool's 5-row test split (one row per kind, with answer, task and metadata)."""
    from helpers import make_pool

    out = tmp_path_factory.mktemp("math")
    make_pool(out, 10)
    return out / "test.jsonl"


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


# -- answers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, answer, method", [
    ("#### 42", "42", "####"),
    ("#### -7", "-7", "####"),
    ("#### 1,234", "1234", "####"),
    ("#### 3.0", "3", "####"),
    ("#### +5", "5", "####"),
    ("#### 42 apples.", "42", "####"),
    ("#### 3/4", "3/4", "####"),
    ("2 + 2 = 4\n#### 4\nmore text 9\n#### 17\nand 5 after", "17", "####"),  # the last #### wins
    ("the answer is 12.", "12", "final-number"),
    ("3 apples and 5 pears → 5", "5", "final-number"),
    ("so x = -3", "-3", "final-number"),
    ("10-3", "3", "final-number"),  # a minus between numbers is an operator
    ("(-16)", "-16", "final-number"),
    ("+5", "5", "final-number"),
    ("it costs $1,234.50.", "1234.5", "final-number"),
    ("so \\boxed{1,000} is it", "1000", "boxed"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "boxed"),
    ("no number here", None, None),
    ("#### ", None, None),
])
def test_extract_answer(text, answer, method):
    assert extract_answer(text) == answer
    assert find_answer(text) == (answer, method)


def test_answers_match():
    assert answers_match("3", "3.0") and answers_match(extract_answer("#### 3.0"), "3")
    assert answers_match("1234", "1,234") and answers_match("-7", "-7.0")
    assert answers_match("1.0000001", "1")  # relative tolerance 1e-6
    assert not answers_match("2", "3") and not answers_match("-5", "5")
    assert answers_match(" x + 1 ", "x + 1") and not answers_match("x", "y")
    assert not answers_match(None, "1") and not answers_match("1", None)


# -- judging -------------------------------------------------------------------------------------------
def test_gym_scoring_of_real_test_rows(test_split):
    for row in read_jsonl(test_split):
        right = judge(f"Some working.\n#### {row['answer']}", row)
        assert right.correct is True and right.scorer == "gym" and right.gold == row["answer"]
        wrong = judge("Some working.\n#### 987654", row)
        assert wrong.correct is False and wrong.scorer == "gym"
        # Formatting the gym would reject (" 28", "28.0") is normalised before it scores.
        assert judge(f"The answer is {float(row['answer'])}.", row).correct is True
        assert judge("I do not know.", row).correct is False


def test_fallback_scoring_without_gym_fields():
    row = {"instruction": "What is 6 * 7?", "output": "6 * 7 = 42\n#### 42"}
    # No answer field: the gold answer comes from the reference response's #### line, graded as GSM8K.
    assert judge("42.0", row, row["output"]) == Verdict(True, "gsm8k", "42", "42", "final-number")
    assert judge("so\n#### 41", row, row["output"]).correct is False
    nothing = judge("no idea", row, row["output"])
    assert nothing.correct is False and nothing.scorer == "gsm8k" and nothing.extracted is None
    assert judge("42", {"instruction": "?", "output": "no answer given"}, "no answer given").correct is None
    # A task reasoning-gym does not know falls back to s2l's rules (a numeric gold: `number`).
    assert judge("#### 5", {"answer": "5", "task": "no_such_task", "metadata": {}}).scorer == "number"
    # A row's own `grading` wins over the gym fields.
    assert judge("#### 5", {"answer": "5", "grading": "gsm8k", "task": "gcd", "metadata": {}}).scorer == "gsm8k"


# -- prompts: exactly what training conditioned on -------------------------------------------------------
def test_prompt_is_the_training_prefix(tiny_model_dir, test_split, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [
        {"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "#### 5"},
        {"role": "user", "content": "And 4 + 4?"}, {"role": "assistant", "content": "#### 8"}]}) + "\n")
    for path in (test_split, chat):
        examples = load_pool(path).examples
        for example, tokenized in zip(examples, tokenize_examples(tokenizer, examples)):
            ids = prompt_ids(tokenizer, example)
            assert list(tokenized.input_ids[: len(ids)]) == ids
            # The (last) answer starts right after the prompt.
            assert tokenized.loss_mask[len(ids)] and not tokenized.loss_mask[len(ids) - 1]


def test_batched_generation_equals_one_at_a_time(tiny_model_dir, test_split):
    """Left padding must not change what a prompt generates."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.5  # sharp, varied logits: greedy choices far from ties
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval()
    prompts = [prompt_ids(tokenizer, e) for e in load_pool(test_split).examples]
    assert len({len(p) for p in prompts}) > 1  # padding really happens
    together = generate_completions(model, tokenizer, prompts, max_new_tokens=8, batch_size=5)
    alone = [generate_completions(model, tokenizer, [p], max_new_tokens=8)[0] for p in prompts]
    assert [c.text for c in together] == [c.text for c in alone]
    assert len({c.text for c in together}) > 1 and all(c.n_tokens <= 8 for c in together)


def test_greedy_decode_is_generate_with_finished_rows_dropped(tiny_model_dir, test_split):
    """Rows that stop early leave the batch; what every row generates is still what generate() gives it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.5
    torch.manual_seed(2)
    model = LlamaForCausalLM(config).double().eval()  # float64: a changed batch shape cannot flip an argmax
    prompts = [prompt_ids(tokenizer, e) for e in load_pool(test_split).examples][:10]
    input_ids, attention = left_pad(prompts, tokenizer.pad_token_id)
    width, pad = input_ids.shape[1], tokenizer.pad_token_id
    greedy = dict(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, pad_token_id=pad)
    with torch.inference_mode():
        free = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=12, min_new_tokens=12,
                              **greedy)[:, width:].tolist()
        # Stop tokens taken from what three rows produce early, so rows end at different steps.
        eos = sorted({free[0][2], free[1][4], free[2][6]})
        reference = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=12,
                                   eos_token_id=eos, **greedy)[:, width:].tolist()
    expected = []
    for row in reference:
        stop = next((k for k, t in enumerate(row) if t in eos), None)
        expected.append(row if stop is None else row[: stop + 1])
    assert greedy_decode(model, input_ids, attention, 12, eos) == expected
    lengths = [len(row) for row in expected]
    assert sum(n < 12 for n in lengths) >= 2 and 12 in lengths  # rows were dropped, and others went on


# -- evaluate, end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_eval(tiny_model_dir, test_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "metrics.json"
    metrics = evaluate(str(tiny_model_dir), test_split, EvalConfig(**FAST), out=out, show_progress=False)
    return metrics, out


def test_evaluate_metrics_and_predictions(tiny_eval, test_split):
    metrics, out = tiny_eval
    assert json.loads(out.read_text()) == metrics
    assert metrics["n"] == 5 and metrics["data"] == str(test_split) and len(metrics["data_fingerprint"]) == 64
    assert "ood" not in metrics  # make_pool's split has no OOD rows
    for group in (metrics["overall"], metrics["in_domain"]):
        assert group["n"] == 5 and group["n_judged"] == 5
        assert math.isfinite(group["loss"]) and math.isfinite(group["token_loss"])
        assert 0.0 <= group["accuracy"] <= 1.0
    assert sum(g["n"] for g in metrics["by_source"].values()) == metrics["n"]
    assert set(metrics["by_source"]) == {r["source"] for r in read_jsonl(test_split)}
    # 95% intervals: Wilson for accuracy, Student t for the mean loss, named in ci_method.
    assert metrics["ci_method"] == {"accuracy": "wilson", "loss": "student-t"}
    for group in (metrics["overall"], *metrics["by_source"].values()):
        lo, hi = group["accuracy_ci95"]
        assert 0.0 <= lo <= group["accuracy"] <= hi <= 1.0
        assert group["scorers"] == {"gym": group["n_judged"]}
    lo, hi = metrics["overall"]["loss_ci95"]
    assert lo < metrics["overall"]["loss"] < hi
    assert all(g["loss_ci95"] is None for g in metrics["by_source"].values())  # one row per source: no t interval
    assert metrics["settings"]["max_new_tokens"] == FAST["max_new_tokens"]
    assert metrics["settings"]["data"]["max_length"] == 512

    rows = read_jsonl(out.with_name("predictions.jsonl"))
    assert len(rows) == 5
    assert {"example_id", "source", "ood", "prompt", "completion", "extracted", "gold", "correct", "scorer",
            "found", "loss"} <= set(rows[0])
    assert [r["gold"] for r in rows] == [r["answer"] for r in read_jsonl(test_split)]  # input order kept
    assert all(r["scorer"] == "gym" and isinstance(r["completion"], str) for r in rows)
    assert sum(r["correct"] for r in rows) == metrics["overall"]["correct"]


def test_evaluate_is_deterministic(tiny_eval, tiny_model_dir, test_split, tmp_path):
    _, out = tiny_eval
    again = evaluate(str(tiny_model_dir), test_split, EvalConfig(**FAST), out=tmp_path / "metrics.json",
                     show_progress=False)
    first = read_jsonl(out.with_name("predictions.jsonl"))
    assert read_jsonl(tmp_path / "predictions.jsonl") == first
    assert again["overall"] == tiny_eval[0]["overall"]


def test_loss_equals_transformers_loss(tiny_eval, tiny_model_dir, test_split):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = tiny_eval
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenized = tokenize_examples(AutoTokenizer.from_pretrained(tiny_model_dir), load_pool(test_split).examples, 512)
    rows = read_jsonl(out.with_name("predictions.jsonl"))
    assert [r["example_id"] for r in rows] == [t.example_id for t in tokenized]
    assert np.abs(np.array([r["loss"] for r in rows]) - reference_losses(model, tokenized)).max() < 1e-4
    n = np.array([r["n_tokens"] for r in rows])
    losses = np.array([r["loss"] for r in rows])
    assert tiny_eval[0]["overall"]["token_loss"] == pytest.approx((losses * n).sum() / n.sum())
    assert tiny_eval[0]["overall"]["loss"] == pytest.approx(losses.mean())


def test_loss_only_with_ood_rows_and_limit(tiny_eval, tiny_model_dir, test_split, tmp_path):
    rows = read_jsonl(test_split)
    for row in rows[3:]:
        row["ood"] = True
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = evaluate(str(tiny_model_dir), data, EvalConfig(generate=False, limit=4), show_progress=False)
    assert metrics["n"] == 4 and metrics["settings"]["limit"] == 4
    assert metrics["in_domain"]["n"] == 3 and metrics["ood"]["n"] == 1
    assert metrics["overall"]["accuracy"] is None and metrics["overall"]["n_judged"] == 0
    # The loss does not depend on whether answers were generated.
    full = read_jsonl(tiny_eval[1].with_name("predictions.jsonl"))
    assert metrics["overall"]["loss"] == pytest.approx(np.mean([r["loss"] for r in full[:4]]), abs=1e-6)
    assert not (tmp_path / "predictions.jsonl").exists()  # nothing written without `out`


def test_evaluate_chat_records(tiny_model_dir, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {a} + {a}?"},
                                                     {"role": "assistant", "content": f"#### {2 * a}"}]}) + "\n"
                            for a in (2, 3)))
    metrics = evaluate(str(tiny_model_dir), data, EvalConfig(**FAST), out=tmp_path / "m.json", show_progress=False)
    assert metrics["format"] == "chat" and metrics["overall"]["n_judged"] == 2
    assert [r["gold"] for r in read_jsonl(tmp_path / "predictions.jsonl")] == ["4", "6"]
    assert metrics["by_source"]["(none)"]["n"] == 2


@pytest.mark.slow
def test_evaluate_smollm2(smollm2_dir, test_split, tmp_path):
    started = time.time()
    metrics = evaluate("smollm2-135m-instruct", test_split, EvalConfig(max_new_tokens=64, limit=3),
                       out=tmp_path / "metrics.json", show_progress=False)
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    assert metrics["n"] == 3 and len(rows) == 3
    assert all(r["completion"].strip() for r in rows)
    # A pretrained instruct model predicts these worked answers far better than chance (ln 49152 = 10.8).
    assert metrics["overall"]["loss"] < 5
    print(f"SmolLM2 on 3 rows: {time.time() - started:.1f} s; completions: {[r['completion'] for r in rows]}")


def test_intervals():
    from s2l.evaluation import mean_interval, wilson_interval

    assert wilson_interval(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)  # not empty at 0 correct
    assert wilson_interval(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson_interval(0, 0) is None
    for n in range(1, 50):  # the ends at 0 and n correct are exact: the interval always holds p
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    assert mean_interval([1.0, 2.0, 3.0]) == pytest.approx([2 - 4.3027 / 3 ** 0.5, 2 + 4.3027 / 3 ** 0.5], abs=1e-3)
    assert mean_interval([1.0]) is None


def test_an_unknown_grading_rule_fails_before_generation(tiny_model_dir, tmp_path):
    from s2l.errors import InputError

    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"instruction": "1 + 1?", "output": "#### 2", "answer": "2", "grading": "exact"}) + "\n")
    with pytest.raises(InputError, match="unknown grading 'exact'"):
        evaluate(str(tiny_model_dir), data, EvalConfig(**FAST), show_progress=False)


def test_sets_graded_by_their_own_rules(tiny_model_dir, tmp_path):
    """A pool's test rows from several sets: each graded by its rule, reported per source with its interval."""
    rows = [
        {"instruction": "Janet sells 9 eggs at $2. How much?", "output": "9 * 2 = 18\n#### 18", "source": "gsm8k"},
        {"instruction": "Simplify sqrt(242).", "output": "$\\boxed{11\\sqrt2}$", "answer": "11\\sqrt2",
         "source": "math500", "ood": True},
        {"instruction": "Which is 36?", "output": "Answer: A", "answer": "A", "grading": "choice",
         "options": {"A": "36", "B": "15"}, "source": "aqua", "ood": True},
    ]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from typer.testing import CliRunner

    from s2l.cli import app

    result = CliRunner().invoke(app, ["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--out",
                                      str(tmp_path / "m.json"), "--max-new-tokens", "12", "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    # One line per source, with the accuracy's interval and the rule that graded it.
    for source, rule in (("gsm8k", "gsm8k"), ("math500", "boxed"), ("aqua", "choice")):
        line = next(line for line in result.output.splitlines() if line.strip().startswith(source + ":"))
        assert "accuracy" in line and f"({rule})" in line and "[" in line, line
    assert [r["scorer"] for r in read_jsonl(tmp_path / "predictions.jsonl")] == ["gsm8k", "boxed", "choice"]
    assert set(metrics["by_source"]) == {"gsm8k", "math500", "aqua"}
    assert metrics["ood"]["n"] == 2 and metrics["by_source"]["aqua"]["scorers"] == {"choice": 1}
    assert all(len(g["accuracy_ci95"]) == 2 for g in metrics["by_source"].values())


def test_an_answer_followed_by_punctuation_is_a_number():
    from s2l.evaluation import extract_answer

    assert extract_answer("#### 13\n#### 14, since 15 > 14") == "14"
    assert extract_answer("#### 7; done") == "7"
    assert extract_answer("#### 3/4") == "3/4"
