"""Held-out evaluation of a fine-tuned causal LM: response loss and answer accuracy on a test split.

Two measurements, because each misses what the other sees:
- **Held-out response loss**: the mean cross-entropy of the gold response tokens given the prompt,
  with exactly the tokenisation and prompt masking used in training (`tokenize_examples`) and the
  same batched scorer as the trajectories (`score_examples`). It moves smoothly with every change in
  the model, so it still separates two data subsets when a small target's accuracy is flat (near 0
  or identical on a few dozen problems). Reported per example averaged ("loss") and per token
  ("token_loss": total CE over total response tokens, which weights long answers more).
- **Answer accuracy**: greedy generation from the training prompt, then the final answer is judged.
  Rows made by examples/make_math_pool.py carry `task` and `metadata`, so reasoning-gym's own scorer
  judges them (a score of 1 is correct); other rows compare the extracted final answer (GSM8K's
  `#### answer` line, else `\\boxed{}`, else the last number) with the gold answer.

Everything is also broken down in-domain / out-of-domain (`ood` rows: task kinds absent from the
pool) and by `source`. `evaluate(..., out=metrics.json)` writes the metrics and a `predictions.jsonl`
beside them (one row per example: completion, extracted answer, gold, verdict, loss).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from s2l.data import Example, tokenize_examples
from s2l.data.tokenize import load_pool_as
from s2l.data.formats import NO_ASSISTANT_TURN
from s2l.data.tokenize import NO_RESPONSE_TOKENS, chat_spans, exclusion_counts
from s2l.fileio import atomic_path, fault_point, write_json_atomic
from s2l.models import default_device, load_model, load_tokenizer, resolve, resolve_dtype, revision
from s2l.progress import make_progress
from s2l.config import EvalConfig
from s2l.trajectories.scoring import score_examples


# -- final answers -----------------------------------------------------------------------------------
# A number: thousands groups ("1,234") or plain digits, an optional decimal part. A sign counts only
# where it cannot be a binary operator: not right after a word character or a closing bracket, so
# "10-3" ends in 3, while "= -3" and "(-3)" end in -3.
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_SIGNED = re.compile(r"(?:(?<![\w)\]])[-+])?" + _NUMBER)
_WHOLE = re.compile(r"[-+]?" + _NUMBER)


def normalize_number(text: str) -> str:
    """'1,234' -> '1234', '+5' -> '5', '3.0' -> '3', '2.50' -> '2.5', '-0' -> '0'."""
    text = text.replace(",", "").lstrip("+")
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    frac = frac.rstrip("0")
    digits = str(int(whole)) + (f".{frac}" if frac else "")
    return digits if digits == "0" else sign + digits


def _boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _clean(answer: str) -> str:
    """An answer span: a leading number (with at most words after it) normalised, else the text stripped."""
    answer = answer.strip().rstrip(".").strip().removeprefix("$").strip()
    match = _WHOLE.match(answer)
    # "42", "42 apples", "42, since …" -> 42; but "3/4" or "2x" stay text: their first number is not the answer.
    if match and (match.end() == len(answer) or answer[match.end()].isspace() or answer[match.end()] in ",;:!?)"):
        return normalize_number(match.group())
    return answer


def find_answer(text: str) -> tuple[str | None, str | None]:
    """The final answer in a completion and how it was found: '####', 'boxed', 'final-number' or None."""
    if "####" in text:
        line = text[text.rfind("####") + 4:].split("\n", 1)[0]
        if line.strip().rstrip("."):
            return _clean(line), "####"
    boxed = _boxed(text)
    if boxed is not None and boxed.strip():
        return _clean(boxed), "boxed"
    numbers = _SIGNED.findall(text)
    if numbers:
        return normalize_number(numbers[-1]), "final-number"
    return None, None


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


# -- judging one completion --------------------------------------------------------------------------
@functools.cache
def _gym_scorer(task: str) -> Callable | None:
    """reasoning-gym's `score_answer` for a task, or None (package missing, or a task it does not know)."""
    try:
        import reasoning_gym
    except ImportError:
        return None
    try:
        return reasoning_gym.get_score_answer_fn(task)
    except Exception:  # an unregistered task name, or a dataset that cannot be built with defaults
        return None


@dataclass
class Verdict:
    correct: bool | None  # None: no gold answer to judge against
    scorer: str | None  # 'gym', '####', 'boxed', 'final-number', 'none' (no answer found), None
    extracted: str | None
    gold: str | None


def judge(completion: str, record: dict, reference: str | None = None) -> Verdict:
    """Is `completion` right? `record` is the test row as read; `reference` the gold response text
    (used for the gold answer when the row has no `answer` field)."""
    extracted, method = find_answer(completion)
    gold = record.get("answer")
    gold = str(gold) if gold is not None else (extract_answer(reference) if reference else None)
    task, metadata = record.get("task"), record.get("metadata")
    if gold is not None and isinstance(task, str) and isinstance(metadata, dict) and _gym_scorer(task):
        question = record.get("question") or record.get("instruction") or record.get("prompt") or ""
        # The gym scorers compare strings strictly (" 28" or "28.0" can score below 1), so they get the
        # normalised extracted answer; with nothing extracted, the raw completion.
        answer = extracted if extracted is not None else completion.strip()
        try:
            score = float(_gym_scorer(task)(answer=answer, entry={"question": question, "answer": gold,
                                                                  "metadata": metadata}))
        except Exception:  # a scorer that chokes on this row: fall back to comparing answers below
            score = None
        if score is not None:
            return Verdict(score >= 1.0, "gym", extracted, gold)
    if gold is None:
        return Verdict(None, None, extracted, None)
    return Verdict(answers_match(extracted, gold), method or "none", extracted, gold)


# -- prompts and generation --------------------------------------------------------------------------
def reference_text(example: Example) -> str:
    """The gold response: the response, or the last assistant turn of a conversation."""
    if not example.is_chat:
        return example.response
    return [content for role, content in example.messages if role == "assistant"][-1]


def prompt_text(tokenizer, example: Example) -> str:
    """Exactly the text the model saw before the (last) answer in training."""
    if not example.is_chat:
        return example.prompt
    last = max(i for i, (role, _) in enumerate(example.messages) if role == "assistant")
    # chat_spans is training's own way to find where an assistant turn starts (generation prompt included).
    text, spans = chat_spans(tokenizer, example.messages[: last + 1], getattr(tokenizer, "name_or_path", "chat template"))
    return text[: spans[-1][0]]


def prompt_ids(tokenizer, example: Example) -> list[int]:
    # As in tokenize_examples: text formats let the tokenizer add its special tokens; the chat
    # template writes its own.
    return list(tokenizer(prompt_text(tokenizer, example), add_special_tokens=not example.is_chat)["input_ids"])


def _eos_ids(model, tokenizer) -> list[int]:
    """Every token that ends an answer: the tokenizer's EOS (what training appended) and the model's own."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))


@dataclass
class Completion:
    text: str
    n_tokens: int  # generated tokens, the EOS not counted
    stopped: bool  # ended with EOS (False: cut at max_new_tokens)


@torch.inference_mode()
def generate_completions(model, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int = EvalConfig.max_new_tokens,
                         batch_size: int = EvalConfig.batch_size, on_batch: Callable[[int], None] | None = None) -> list[Completion]:
    """Greedy completions of tokenised prompts, batched with left padding, returned in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    # Similar lengths together waste little on padding; longest first, so memory trouble shows at once.
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    out: list[Completion | None] = [None] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            fault_point("generation batch")
            batch = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in batch)
            # Left padding: every prompt ends at the same position, where generation starts.
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i], dtype=torch.long)
                attention[row, width - len(prompts[i]):] = 1
            # The model's generation_config may ask for sampling; greedy is said explicitly.
            generated = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                eos_token_id=eos, pad_token_id=pad)
            for row, i in enumerate(batch):
                tokens = generated[row, width:].tolist()
                stop = next((k for k, t in enumerate(tokens) if t in eos), None)
                kept = tokens if stop is None else tokens[:stop]
                out[i] = Completion(tokenizer.decode(kept, skip_special_tokens=True), len(kept), stop is not None)
            if on_batch:
                on_batch(len(batch))
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


# -- metrics -----------------------------------------------------------------------------------------
def summarize(rows: Sequence[dict]) -> dict:
    """Loss and accuracy over a group of prediction rows."""
    scored = [r for r in rows if r["loss"] is not None]
    tokens = sum(r["n_tokens"] for r in scored)
    judged = [r for r in rows if r["correct"] is not None]
    correct = sum(1 for r in judged if r["correct"])
    return {
        "n": len(rows),
        "loss": float(np.mean([r["loss"] for r in scored])) if scored else None,
        "token_loss": sum(r["loss"] * r["n_tokens"] for r in scored) / tokens if tokens else None,
        "n_loss": len(scored),  # examples with a response token left after truncation
        # Over the examples with a gold answer (all of them in a make_math_pool test split).
        "accuracy": correct / len(judged) if judged else None,
        "correct": correct if judged else None,
        "n_judged": len(judged),
    }


def _excerpt(text: str, width: int = 300) -> str:
    """The end of a prompt: where the question is (the template's boilerplate comes first)."""
    return text if len(text) <= width else "…" + text[-width:]


def evaluate(
    model: str | Path,
    data: str | Path,
    config: EvalConfig | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    show_progress: bool = True,
    tokenizer: str | None = None,
) -> dict:
    """Held-out loss and (unless config.generate is False) answer accuracy of `model` on `data`.

    `model` is a registry name, a local folder or a hub id. With `out`, the metrics are written there
    (atomically) and one prediction row per example to `predictions.jsonl` in the same folder.
    """
    config = config or EvalConfig()
    device = device or default_device()
    config = replace(config, dtype=resolve_dtype(config.dtype, device))
    started = time.time()
    data_config = config.data
    model_path = resolve(model)
    tok = load_tokenizer(model_path, tokenizer)
    pool = load_pool_as(data, data_config)
    examples = pool.examples[: config.limit] if config.limit is not None else pool.examples
    records = [pool.records[e.index].data for e in examples]
    tokenized = tokenize_examples(tok, examples, data_config.max_length, data_config.boundary)
    net = load_model(model_path, config.dtype, device)

    with make_progress(disable=not show_progress) as progress:
        task = progress.add_task("held-out loss", total=len(examples), info="")
        losses, n_tokens = score_examples(net, tokenized, config.max_batch_tokens,
                                          on_batch=lambda k: progress.advance(task, k))
        progress.update(task, completed=len(examples))
        completions: list[Completion | None] = [None] * len(examples)
        if config.generate:
            # An example excluded for an empty prompt or answer has nothing to be judged against.
            asked = [i for i, e in enumerate(examples) if not e.excluded]
            task = progress.add_task("generating", total=len(asked), info="")
            generated = generate_completions(net, tok, [prompt_ids(tok, examples[i]) for i in asked],
                                             config.max_new_tokens, config.batch_size,
                                             on_batch=lambda k: progress.advance(task, k))
            for i, completion in zip(asked, generated):
                completions[i] = completion

    rows = []
    for example, t, record, loss, n, completion in zip(examples, tokenized, records, losses, n_tokens, completions):
        verdict = judge(completion.text, record, reference_text(example)) if completion else None
        rows.append({
            "example_id": example.example_id,
            "source": example.source,
            "ood": bool(record.get("ood", False)),
            "prompt": None if example.excluded == NO_ASSISTANT_TURN else _excerpt(prompt_text(tok, example)),
            "completion": completion.text if completion else None,
            "stopped": completion.stopped if completion else None,
            "extracted": verdict.extracted if verdict else None,
            "gold": verdict.gold if verdict else None,
            "correct": verdict.correct if verdict else None,
            "scorer": verdict.scorer if verdict else None,
            "loss": None if math.isnan(loss) else float(loss),  # NaN: no response token left after truncation
            "n_tokens": int(n),
            "excluded": t.exclusion,
        })

    metrics = {
        "model": str(model),
        "model_revision": revision(model_path),
        "tokenizer": str(tokenizer or model),
        "data": str(data),
        "data_fingerprint": pool.fingerprint,
        "format": pool.format,
        "template": pool.template.name,
        "n": len(rows),
        "overall": summarize(rows),
        "in_domain": summarize([r for r in rows if not r["ood"]]),
    }
    if any(r["ood"] for r in rows):
        metrics["ood"] = summarize([r for r in rows if r["ood"]])
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(r["source"] or "(none)", []).append(r)
    metrics["by_source"] = {source: summarize(group) for source, group in sorted(by_source.items())}
    counts = exclusion_counts(tokenized)  # no_response_tokens, and empty_response etc. where there are any
    metrics["excluded"] = {"duplicates": len(pool.duplicates),
                           "no_response_tokens": counts.pop(NO_RESPONSE_TOKENS, 0), **counts,
                           "generation_cut_at_max_new_tokens": sum(1 for r in rows if r["stopped"] is False)}
    metrics["settings"] = json.loads(json.dumps(asdict(config)))  # tuples (--field) as the lists JSON gives back
    metrics["device"] = str(next(net.parameters()).device)
    metrics["seconds"] = round(time.time() - started, 1)

    if out is not None:
        out = Path(out)
        # Predictions first: metrics.json appearing is the sign that the evaluation finished.
        with atomic_path(out.with_name("predictions.jsonl")) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        write_json_atomic(out, metrics)
    return metrics
