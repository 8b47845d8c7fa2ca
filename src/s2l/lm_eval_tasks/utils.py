"""The functions the s2l lm-evaluation-harness tasks call.

lm-eval loads this file by path from the task folder (`!function utils.NAME` in the task YAML), so it
imports nothing from lm_eval itself. Prompts are rendered by s2l's own readers and prompt template
(`s2l.data.formats.to_example`), the code that built the training text, so the harness asks the model
exactly what training taught it to answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from s2l.grading import RULES, row_answer


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval `process_results`: the completion graded by the row's rule, as `s2l evaluate` grades it
    (`s2l.grading`: GSM8K's `####`, MATH's last `\\boxed{}`, an option letter, a number within tolerance)."""
    options = json.loads(doc["options"]) if doc.get("options") else None
    verdict = RULES[doc["rule"]].grade(results[0], doc["answer"], options)
    return {"exact_match": float(bool(verdict.correct))}


def read_rows(test_file: str | Path, template: str | None = "alpaca") -> list[dict[str, Any]]:
    """The test split as the tasks' documents: the training prompt, the gold output, the gold answer and the
    rule that grades it (the row's `grading`, else from its source or gold, as `s2l evaluate` decides).

    `answer` comes from the record's own gold field (`answer`, …), read as the rule reads a solution where it
    is one, else from the gold output.
    """
    from s2l.data.formats import PromptTemplate, resolve_format, to_example
    from s2l.data.readers import read_records
    from s2l.errors import InputError

    path = Path(test_file)
    prompt_template = PromptTemplate.from_option(template)
    records = read_records(path)
    fmt = resolve_format(path, records, "auto")
    if fmt == "chat":
        raise InputError("chat records (messages) are not supported by the lm-eval tasks; "
                         "they score prompt/response records (alpaca, mathinstruct, prompt-response)", path)
    rows = []
    for record in records:
        example = to_example(path, record, fmt, str(record.index), prompt_template)
        rule, answer, options = row_answer(record.data, example.response)
        answer = answer.strip() if answer else None
        if not answer:
            raise InputError("no gold answer: the record has no 'answer' field and its output has no number "
                             "after ####, in a \\boxed{} or at the end", path, record.line)
        rows.append({
            "index": record.index,
            "prompt": example.prompt,
            "output": example.response,
            "answer": answer,
            "rule": rule,
            "options": json.dumps(options) if options else "",  # one type for every row (a datasets column)
            "source": example.source or "",
            "task": str(record.data.get("task") or ""),
            "ood": bool(record.data.get("ood", False)),
        })
    return rows


def load_split(data_files: Any = None, test_file: str | None = None, template: str | None = "alpaca", **_: Any):
    """lm-eval `custom_dataset`: called with the task's metadata and `dataset_kwargs` as keyword arguments.

    The test file is `--metadata '{"test_file": PATH}'` when given, else the task's
    `dataset_kwargs.data_files.test` (filled in by `s2l.lm_eval_tasks.write_task`). Everything else
    lm-eval passes (the model arguments, the task version) is ignored.
    """
    import datasets

    if test_file is None:
        test_file = data_files.get("test") if isinstance(data_files, dict) else data_files
    if not test_file:
        raise ValueError("no test file for the s2l task: write a task folder with "
                         "s2l.lm_eval_tasks.write_task(TEST_FILE, OUT_DIR) and pass --include_path OUT_DIR, "
                         "or pass --metadata '{\"test_file\": \"/abs/path/test.jsonl\"}'")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_rows(test_file, template))})


def process_results_loss(doc: dict, results: list) -> dict[str, Any]:
    """s2l_math_loss: the gold output's log-likelihood given the prompt (EOS not included)."""
    loglikelihood, is_greedy = results[0]
    return {
        "nll": -loglikelihood,  # nats for the whole response, averaged over documents
        "bits_per_byte": (loglikelihood, len(doc["output"].encode("utf-8"))),
        "greedy": float(is_greedy),  # the gold output is exactly the greedy continuation
    }
