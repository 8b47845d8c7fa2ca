"""lm-evaluation-harness tasks that score a model fine-tuned by s2l on a held-out test split.

    from s2l.lm_eval_tasks import write_task
    folder = write_task("data/math_pool/test.jsonl", "lm_eval_task")
    # lm_eval --model hf --model_args pretrained=MODEL_DIR --include_path lm_eval_task --tasks s2l_math

Two tasks, both with the prompt s2l trained on: `s2l_math` (greedy generation, exact match of the final
answer) and `s2l_math_loss` (log-likelihood of the gold worked solution). See docs/lm_eval.md.
Importing this package does not import lm_eval.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from s2l.errors import InputError

TASK_DIR = Path(__file__).resolve().parent
TASKS = {"s2l_math": "s2l_math.yaml", "s2l_math_loss": "s2l_math_loss.yaml"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

__all__ = ["TASK_DIR", "TASKS", "write_task"]


def _fill(text: str, pattern: str, value: str, where: Path) -> str:
    filled, count = re.subn(pattern, lambda m: m.group(1) + value, text, flags=re.MULTILINE)
    if count != 1:
        raise RuntimeError(f"{where}: expected one line matching {pattern!r}, found {count}")
    return filled


def _template_value(template: str | None) -> str:
    """The template option as the task stores it: a name, or the template text itself (so the task
    folder does not depend on a template file staying where it was)."""
    from s2l.data.formats import PromptTemplate

    if template in (None, "", "alpaca", "none"):
        return template or "alpaca"
    return PromptTemplate.from_option(template).with_input


def write_task(test_file: str | Path, out_dir: str | Path, name: str = "s2l_math",
               template: str | None = "alpaca") -> Path:
    """Write a ready lm-eval task folder for `test_file` and return it (`out_dir`).

    The folder holds `{name}.yaml` (generation, exact match), `{name}_loss.yaml` (log-likelihood of the
    gold output) and the `utils.py` they call, with the test file's absolute path filled in. Run it with
    `lm_eval --model hf --model_args pretrained=MODEL_DIR --include_path OUT_DIR --tasks {name}`.
    `template` is the `--template` the model was trained with (default alpaca). The test file is read
    once here, so a file the tasks could not use fails now rather than inside lm_eval.
    """
    from s2l.lm_eval_tasks.utils import read_rows

    test_path = Path(test_file).expanduser().resolve()
    if not _NAME.fullmatch(name):
        raise InputError(f"task name {name!r}: use letters, digits, '_', '.' and '-'", "name")
    stored_template = _template_value(template)
    read_rows(test_path, stored_template)  # fails with an InputError naming the file and line

    out = Path(out_dir)
    if out.resolve() == TASK_DIR:
        raise InputError("write the task somewhere other than the packaged task folder", out)
    out.mkdir(parents=True, exist_ok=True)
    for task, filename in TASKS.items():
        source = TASK_DIR / filename
        text = source.read_text(encoding="utf-8")
        # JSON strings are valid YAML double-quoted scalars.
        text = _fill(text, rf"^(task: ){re.escape(task)}$", name + task[len("s2l_math"):], source)
        text = _fill(text, r"^(    test: )null$", json.dumps(str(test_path)), source)
        text = _fill(text, r"^(  template: )alpaca$", json.dumps(stored_template), source)
        (out / f"{name}{task[len('s2l_math'):]}.yaml").write_text(text, encoding="utf-8")
    shutil.copyfile(TASK_DIR / "utils.py", out / "utils.py")
    return out
