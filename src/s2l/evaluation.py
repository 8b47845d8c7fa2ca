"""Held-out evaluation of a fine-tuned causal LM: response loss and answer accuracy on a test split.

Two measurements, because each misses what the other sees:
- **Held-out response loss**: the mean cross-entropy of the gold response tokens given the prompt,
  with exactly the tokenisation and prompt masking used in training (`tokenize_examples`) and the
  same batched scorer as the trajectories (`score_examples`). It moves smoothly with every change in
  the model, so it still separates two data subsets when a small target's accuracy is flat (near 0
  or identical on a few dozen problems). Reported per example averaged ("loss") and per token
  ("token_loss": total CE over total response tokens, which weights long answers more).
- **Answer accuracy**: greedy generation from the training prompt, then the final answer is graded
  the way its test set is graded (`s2l.grading`): GSM8K by its `#### N` line, MATH by the last
  `\\boxed{}` after MATH's normalisation, AQuA and MathQA by the option letter (or the option's value),
  MAWPS, ASDiv, SVAMP and GSM-hard as numbers within a tolerance, TabMWP's words as normalised text.
  A row names its rule in `grading`; without one, reasoning-gym rows (made by examples/make_math_pool.py,
  with `task` and `metadata`) are scored by reasoning-gym's own scorer (a score of 1 is correct), and
  the rule of any other row is inferred from its `source`, its gold answer (`####`, `\\boxed`) and its
  options (`s2l.grading.row_rule`).

Everything is also broken down in-domain / out-of-domain (`ood` rows: task kinds absent from the
pool) and by `source` (one test set per source in a pool's test split). Each group reports its
accuracy with a 95% Wilson score interval (`accuracy_ci95`) and its mean loss with a 95% Student t
interval (`loss_ci95`); `ci_method` in the metrics names both. `evaluate(..., out=metrics.json)` writes
the metrics and a `predictions.jsonl` beside them (one row per example: completion, extracted answer,
gold, verdict, the rule that graded it (`scorer`), where the answer was found (`found`), loss).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
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
from s2l.errors import InputError
from s2l.fileio import atomic_path, fault_point, write_json_atomic
# The answer helpers live in s2l.grading; they stay importable from here.
from s2l.grading import (RULES, Verdict, answers_match, extract_answer, find_answer, grade_row,  # noqa: F401
                         normalize_number)
from s2l.models import default_device, load_model, load_tokenizer, resolve, resolve_dtype, revision
from s2l.progress import make_progress
from s2l.config import EvalConfig
from s2l.trajectories.scoring import score_examples


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


def judge(completion: str, record: dict, reference: str | None = None) -> Verdict:
    """Is `completion` right? `record` is the test row as read; `reference` the gold response text (the gold
    answer when the row has no answer field, and a hint to the rule: `####` or `\\boxed`).

    A row that names its rule (`grading`) is graded by it; a reasoning-gym row (`task` and `metadata`, a
    task reasoning-gym knows) by reasoning-gym's scorer; any other by the rule `s2l.grading.row_rule`
    infers from its source, gold answer and options."""
    if record.get("grading") is None:
        verdict = _gym_verdict(completion, record, reference)
        if verdict is not None:
            return verdict
    return grade_row(completion, record, reference)


def _gym_verdict(completion: str, record: dict, reference: str | None) -> Verdict | None:
    task, metadata = record.get("task"), record.get("metadata")
    if not (isinstance(task, str) and isinstance(metadata, dict) and _gym_scorer(task)):
        return None
    gold = record.get("answer")
    gold = str(gold) if gold is not None else (extract_answer(reference) if reference else None)
    if gold is None:
        return None
    extracted, found = find_answer(completion)
    question = record.get("question") or record.get("instruction") or record.get("prompt") or ""
    # The gym scorers compare strings strictly (" 28" or "28.0" can score below 1), so they get the
    # normalised extracted answer; with nothing extracted, the raw completion.
    answer = extracted if extracted is not None else completion.strip()
    try:
        score = float(_gym_scorer(task)(answer=answer, entry={"question": question, "answer": gold,
                                                              "metadata": metadata}))
    except Exception:  # a scorer that chokes on this row: graded by s2l's own rules instead
        return None
    return Verdict(score >= 1.0, "gym", extracted, gold, found)


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


def left_pad(prompts: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of prompts padded on the left: every prompt ends at the same position,
    where generation starts."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        attention[row, width - len(prompt):] = 1
    return input_ids, attention


@torch.inference_mode()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                  eos_ids: Sequence[int]) -> list[list[int]]:
    """Each left-padded prompt's greedy continuation: its new tokens up to and including its first EOS, at most
    `max_new_tokens` of them.

    The tokens `model.generate(do_sample=False)` gives, with one difference in cost: `generate` runs every row
    until the last one stops, while here a row that has emitted its EOS leaves the batch (its rows of the
    key-value cache are dropped). A test batch, whose answers stop at very different lengths and where one
    answer that never stops is common, then costs what its rows need rather than max_new_tokens steps for all.
    """
    accepts = set(inspect.signature(model.forward).parameters)
    cache_name = "cache" if "cache" in accepts else "past_key_values"  # transformers 5 renamed it
    trim = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}  # project the last position only
    device = input_ids.device
    stop = torch.tensor(list(eos_ids), device=device)
    # Positions count a row's own tokens, not its padding (as generate() numbers a left-padded row).
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, **trim)
    cache = getattr(output, cache_name)  # the output's field has the keyword's name, in both versions
    next_position = positions[:, -1:] + 1
    prompt_of = torch.arange(len(input_ids), device=device)  # the prompt each batch row continues
    finished = torch.zeros(len(input_ids), dtype=torch.bool, device=device)
    tokens: list[list[int]] = [[] for _ in range(len(input_ids))]
    for step in range(max_new_tokens):
        chosen = output.logits[:, -1].argmax(-1)
        for prompt, token in zip(prompt_of[~finished].tolist(), chosen[~finished].tolist()):
            tokens[prompt].append(token)
        finished |= torch.isin(chosen, stop)
        if bool(finished.all()) or step + 1 == max_new_tokens:
            break
        # Dropping rows copies the whole cache, about what one step's cache update costs; a finished row left in
        # costs 1/batch of each step. Drop them once they are an eighth of the batch.
        if int(finished.sum()) * 8 >= len(finished):
            kept = (~finished).nonzero()[:, 0]
            cache.batch_select_indices(kept)
            prompt_of, finished, chosen = prompt_of[kept], finished[kept], chosen[kept]
            attention_mask, next_position = attention_mask[kept], next_position[kept]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(attention_mask), 1)], dim=1)
        output = model(input_ids=chosen[:, None], attention_mask=attention_mask, position_ids=next_position,
                       use_cache=True, **{cache_name: cache})
        next_position = next_position + 1
    return tokens


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
            input_ids, attention = left_pad([prompts[i] for i in batch], pad)
            generated = greedy_decode(model, input_ids.to(device), attention.to(device), max_new_tokens, eos)
            for i, tokens in zip(batch, generated):
                stopped = bool(tokens) and tokens[-1] in eos
                kept = tokens[:-1] if stopped else tokens
                out[i] = Completion(tokenizer.decode(kept, skip_special_tokens=True), len(kept), stopped)
            if on_batch:
                on_batch(len(batch))
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


# -- metrics -----------------------------------------------------------------------------------------
# The 95% intervals every group reports, named in metrics.json's `ci_method`.
CI_METHOD = {"accuracy": "wilson", "loss": "student-t"}


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> list[float] | None:
    """The Wilson score interval (95% by default) for a binomial proportion `correct / n`; None for n = 0.
    Unlike p ± z·se it stays inside [0, 1] and is not empty at 0 or n correct."""
    if n == 0:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n correct one end is p exactly; rounding would leave it a hair off (2.8e-17 for 0 of 6).
    return [0.0 if correct == 0 else max(0.0, centre - half), 1.0 if correct == n else min(1.0, centre + half)]


def mean_interval(values: Sequence[float], level: float = 0.95) -> list[float] | None:
    """Student's t interval for the mean of `values`; None with fewer than 2."""
    if len(values) < 2:
        return None
    from scipy.stats import t

    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    half = float(t.ppf((1 + level) / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return [mean - half, mean + half]


def summarize(rows: Sequence[dict]) -> dict:
    """Loss and accuracy over a group of prediction rows, each with its 95% interval (`CI_METHOD`)."""
    scored = [r for r in rows if r["loss"] is not None]
    tokens = sum(r["n_tokens"] for r in scored)
    judged = [r for r in rows if r["correct"] is not None]
    correct = sum(1 for r in judged if r["correct"])
    scorers: dict[str, int] = {}
    for r in judged:
        scorers[r["scorer"]] = scorers.get(r["scorer"], 0) + 1
    return {
        "n": len(rows),
        "loss": float(np.mean([r["loss"] for r in scored])) if scored else None,
        "loss_ci95": mean_interval([r["loss"] for r in scored]),
        "token_loss": sum(r["loss"] * r["n_tokens"] for r in scored) / tokens if tokens else None,
        "n_loss": len(scored),  # examples with a response token left after truncation
        # Over the examples with a gold answer (all of them in a make_math_pool test split).
        "accuracy": correct / len(judged) if judged else None,
        "accuracy_ci95": wilson_interval(correct, len(judged)),
        "correct": correct if judged else None,
        "n_judged": len(judged),
        "scorers": dict(sorted(scorers.items())),  # how many answers each rule graded
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
    for example in examples:  # a misspelt rule fails now, not after the generation
        record = pool.records[example.index]
        if record.data.get("grading") is not None and record.data["grading"] not in RULES:
            raise InputError(f"unknown grading {record.data['grading']!r}: one of {', '.join(RULES)}", data, record.line)
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
            "scorer": verdict.scorer if verdict else None,  # the rule that graded it (s2l.grading.RULES, or gym)
            "found": verdict.found if verdict else None,  # where the answer was read: '####', 'boxed', 'letter', …
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
    metrics["ci_method"] = CI_METHOD
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
