"""The lm-evaluation-harness route: s2l's tasks score a model with the prompts it was trained on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")

from helpers import make_pool  # noqa: E402

from s2l.data import load_pool  # noqa: E402
from s2l.data.formats import PromptTemplate  # noqa: E402
from s2l.errors import InputError  # noqa: E402
from s2l.lm_eval_tasks import TASK_DIR, write_task  # noqa: E402
from s2l.lm_eval_tasks.utils import load_split  # noqa: E402


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")


@pytest.fixture
def test_split(tmp_path):
    make_pool(tmp_path, 10)
    return tmp_path / "test.jsonl"


def test_write_task_fills_in_the_test_file_and_uses_training_prompts(test_split, tmp_path):
    folder = write_task(test_split, tmp_path / "task")
    assert sorted(p.name for p in folder.iterdir()) == ["s2l_math.yaml", "s2l_math_loss.yaml", "utils.py"]
    text = (folder / "s2l_math.yaml").read_text()
    assert f'test: "{test_split.resolve()}"' in text and "task: s2l_math\n" in text

    docs = load_split(data_files={"test": str(test_split)})["test"]
    pool = load_pool(test_split)
    rows = [json.loads(line) for line in test_split.read_text().splitlines()]
    assert len(docs) == len(rows) == 5
    assert list(docs["prompt"]) == [e.prompt for e in pool.examples]
    assert list(docs["output"]) == [e.response for e in pool.examples]
    assert list(docs["answer"]) == [r["answer"] for r in rows]

    renamed = write_task(test_split, tmp_path / "other", name="my_math")
    assert sorted(p.name for p in renamed.iterdir()) == ["my_math.yaml", "my_math_loss.yaml", "utils.py"]
    assert "task: my_math_loss\n" in (renamed / "my_math_loss.yaml").read_text()

    with pytest.raises(InputError):
        write_task(tmp_path / "missing.jsonl", tmp_path / "x")
    with pytest.raises(InputError):
        write_task(test_split, tmp_path / "x", name="bad name")
    with pytest.raises(InputError):
        write_task(test_split, TASK_DIR)


def test_packaged_task_takes_the_test_file_from_metadata(test_split):
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False, metadata={"test_file": str(test_split)})
    if hasattr(manager, "load"):
        task = manager.load(["s2l_math"])["tasks"]["s2l_math"]
    else:  # lm-eval < 0.4.13
        task = get_task_dict(["s2l_math"], manager)["s2l_math"]
    docs = list(task.test_docs())
    assert [task.doc_to_text(d) for d in docs] == [e.prompt for e in load_pool(test_split).examples]


def test_lm_eval_end_to_end(tiny_model_dir, test_split, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = write_task(test_split, tmp_path / "task")
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tiny_model_dir},dtype=float32", device="cpu", batch_size=4,
        tasks=["s2l_math", "s2l_math_loss"], task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        limit=4, gen_kwargs={"max_gen_toks": 32}, bootstrap_iters=0, log_samples=True)

    results = out["results"]
    assert 0.0 <= results["s2l_math"]["exact_match,none"] <= 1.0
    assert results["s2l_math_loss"]["nll,none"] > 0
    assert results["s2l_math_loss"]["bits_per_byte,none"] > 0
    assert 0.0 <= results["s2l_math_loss"]["greedy,none"] <= 1.0

    first = json.loads(test_split.read_text().splitlines()[0])
    training_prompt = PromptTemplate.from_option("alpaca").render(first["instruction"])
    generation = next(s for s in out["samples"]["s2l_math"] if s["doc_id"] == 0)
    context, gen_kwargs = generation["arguments"][0]
    assert context == training_prompt
    assert gen_kwargs["do_sample"] is False and gen_kwargs["max_gen_toks"] == 32
    assert generation["target"] == first["answer"]
    scored = next(s for s in out["samples"]["s2l_math_loss"] if s["doc_id"] == 0)
    # The loss task scores the training text itself: prompt and response joined with nothing between.
    assert scored["arguments"][0] == (training_prompt, first["output"])


def test_gold_outputs_score_full_marks(test_split, tmp_path):
    """A model that writes each row's gold worked solution gets exact_match 1: the extracted answer
    and the target agree in form."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    gold = {e.prompt: e.response for e in load_pool(test_split).examples}

    class Oracle(LM):
        def generate_until(self, requests):
            return [gold[request.args[0]] for request in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    folder = write_task(test_split, tmp_path / "task")
    out = lm_eval.simple_evaluate(model=Oracle(), tasks=["s2l_math"], bootstrap_iters=0,
                                  task_manager=TaskManager(include_path=str(folder), include_defaults=False))
    assert out["results"]["s2l_math"]["exact_match,none"] == 1.0


def test_the_task_grades_each_row_by_its_sets_rule(tmp_path):
    """The lm-eval task scores as `s2l evaluate` does: MATH's boxed answer after normalisation, GSM8K's
    `####` line, an option letter; not the exact match of a last number."""
    from s2l.lm_eval_tasks.utils import process_results, read_rows

    rows = [
        {"instruction": "Half of one?", "output": "So it is $\\boxed{\\dfrac{1}{2}}$.", "source": "math"},
        {"instruction": "Twice 36?", "output": "2 * 36 = 72\n#### 72"},
        {"instruction": "Pick one.", "output": "It is C.\n#### C", "answer": "C", "grading": "choice",
         "options": {"A": "21", "B": "22", "C": "23"}},
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = read_rows(path)
    assert [(d["rule"], d["answer"]) for d in docs] == [("boxed", "\\dfrac{1}{2}"), ("gsm8k", "72"), ("choice", "C")]
    score = lambda doc, text: process_results(doc, [text])["exact_match"]  # noqa: E731
    assert score(docs[0], "The answer is $\\boxed{0.5}$") == 1.0
    assert score(docs[0], "$\\boxed{\\frac{1}{3}}$") == 0.0
    assert score(docs[1], "36 + 36 = 72\n#### 72") == 1.0 and score(docs[1], "#### 73") == 0.0
    assert score(docs[2], "The answer is (C)") == 1.0 and score(docs[2], "23") == 1.0  # the letter or its value
    assert score(docs[2], "The answer is (A)") == 0.0
