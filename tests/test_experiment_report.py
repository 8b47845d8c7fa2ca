"""The experiment report's verdict table, on a summary written by hand."""

from __future__ import annotations

import pytest

from s2l.experiment_report import verdict_section


def _row(label, method, budget, test, metric, vs_random=None, vs_full=None):
    row = {"label": label, "method": method, "budget": budget, "test": test, "metric": metric}
    if vs_random:
        row["vs_random_verdict"] = vs_random
    if vs_full:
        row["vs_full_verdict"] = vs_full
    return row


def test_verdict_section_tabulates_and_counts_every_comparison():
    summary = [
        _row("full", "full", "all", "all", "loss"),
        _row("random", "random", "0.1", "all", "loss", vs_full="loss"),
        _row("s2l", "s2l", "0.1", "all", "loss", "win", "no difference"),
        _row("s2l", "s2l", "0.1", "gsm8k", "loss", "win", "no difference"),
        _row("s2l", "s2l", "0.1", "gsm8k", "accuracy", "no difference", "loss"),
        _row("lp", "lp", "0.1", "gsm8k", "loss", "loss", "loss"),
    ]
    assert verdict_section(summary) == [
        "## Verdict", "",
        # `all` has a column but no count: its items are gsm8k's again.
        "Against random at the same budget (3 comparisons, not counting `all`, which pools the other sets' items: "
        "1 win, 1 loss, 1 no difference):", "",
        "| method | budget | loss: all | loss: gsm8k | accuracy: gsm8k |",
        "|---|---|---|---|---|",
        "| s2l | 0.1 | **win** | **win** | no difference |",
        "| lp | 0.1 | – | **loss** | – |",
        "",
        "Against the full pool (3 comparisons, not counting `all`, which pools the other sets' items: "
        "0 wins, 2 losses, 1 no difference):", "",
        "| method | budget | loss: all | loss: gsm8k | accuracy: gsm8k |",
        "|---|---|---|---|---|",
        "| random | 0.1 | **loss** | – | – |",
        "| s2l | 0.1 | no difference | no difference | **loss** |",
        "| lp | 0.1 | – | **loss** | – |",
        "",
    ]


def test_no_comparison_no_section():
    assert verdict_section([_row("full", "full", "all", "test", "loss")]) == []


def test_pairs_compare_the_named_methods_item_by_item():
    import numpy as np

    from s2l.experiment_report import pairs, pairs_section

    ids = np.array(["a", "b", "c", "d"], dtype=object)
    nan = float("nan")

    def cell(losses, correct):
        return {"gsm8k": {"ids": ids, "loss": np.array(losses), "accuracy": np.array(correct)}}

    rows = [{"key": "s2l/b0.1-s0", "label": "s2l", "method": "s2l", "budget": 0.1},
            {"key": "sr/b0.1-s0", "label": "source-random", "method": "source-random", "budget": 0.1},
            {"key": "sr/b0.1-s1", "label": "source-random", "method": "source-random", "budget": 0.1},
            {"key": "sr/b0.3-s0", "label": "source-random", "method": "source-random", "budget": 0.3}]
    items = {"s2l/b0.1-s0": cell([1.0, 2.0, nan, 1.5], [1.0, 0.0, 1.0, 1.0]),
             # Both seeds are s2l + 0.25 on every item s2l has a loss for: whichever items and seeds a bootstrap
             # replicate draws, the difference is -0.25, so the interval is that point.
             "sr/b0.1-s0": cell([1.25, 2.25, 3.0, 1.75], [1.0, 0.0, 0.0, 1.0]),
             "sr/b0.1-s1": cell([1.25, 2.25, 9.0, 1.75], [1.0, 0.0, 0.0, 1.0]),
             "sr/b0.3-s0": cell([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0])}
    compared = pairs(rows, items, ["gsm8k"], {"s2l": ["source-random"]})
    # One budget both ran (source-random at 0.3 has no s2l to meet), one test set, both metrics.
    assert [(p["budget"], p["metric"]) for p in compared] == [("0.1", "loss"), ("0.1", "accuracy")]
    loss, accuracy = compared
    assert loss["label"] == "s2l" and loss["against"] == "source-random"
    assert (loss["seeds"], loss["against_seeds"], loss["n_items"]) == (1, 2, 3)  # item c has no s2l loss
    assert [loss[k] for k in ("difference", "difference_low", "difference_high")] == pytest.approx([-0.25] * 3)
    assert loss["difference_verdict"] == "win"
    # Accuracy: s2l is right on item c where both seeds are wrong, and level elsewhere: +25 points on average;
    # resampling can leave c out, so the interval reaches zero and it is no difference.
    assert accuracy["n_items"] == 4 and accuracy["difference"] == 0.25
    assert accuracy["difference_low"] == pytest.approx(0.0) and accuracy["difference_verdict"] == "no difference"
    assert pairs_section(compared)[-2] == (
        "| s2l | source-random | 0.1 | 1 vs 2 | gsm8k | -0.250 [-0.250, -0.250] **win** | +25.0 [0.0, 75.0] |")
    assert pairs(rows, items, ["gsm8k"], {}) == [] and pairs_section([]) == []


def test_selections_by_source_average_each_methods_seeds(tmp_path):
    import json

    from s2l.experiment_report import composition, composition_section

    def selection(key, picked):
        folder = tmp_path / "cells" / key / "selection"
        folder.mkdir(parents=True)
        pool = {"gsm8k": 30, "math": 10}
        sources = {name: {"pool": pool[name], "selected": n} for name, n in picked.items()}
        (folder / "manifest.json").write_text(json.dumps({"sources": sources}))

    selection("random/b0.1-s0", {"gsm8k": 3, "math": 1})
    selection("random/b0.1-s1", {"gsm8k": 4, "math": 0})
    selection("s2l/b0.1-s0", {"gsm8k": 2, "math": 2})
    rows = [{"key": "full/all-s0", "label": "full", "method": "full", "budget": "all"},  # no selection: no row
            {"key": "random/b0.1-s0", "label": "random", "method": "random", "budget": 0.1},
            {"key": "random/b0.1-s1", "label": "random", "method": "random", "budget": 0.1},
            {"key": "s2l/b0.1-s0", "label": "s2l", "method": "s2l", "budget": 0.1}]
    pool, picked = composition(tmp_path, rows)
    assert pool == {"gsm8k": 30, "math": 10}
    assert composition_section(pool, picked)[-5:] == [
        "|---|---|---|---|---|",
        "| pool | all | – | 30 | 10 |",
        "| random | 0.1 | 2 | 3.5 | 0.5 |",
        "| s2l | 0.1 | 1 | 2 | 2 |",
        ""]
    assert composition_section({"dolly": 600}, picked) == []  # one source: nothing to tell


def _cells(values: dict[str, list[float]]) -> dict:
    import numpy as np

    ids = np.array([f"q{i}" for i in range(len(next(iter(values.values()))))], dtype=object)
    return {key: {"gsm8k": {"ids": ids, "loss": np.array(v, dtype=float), "accuracy": np.full(len(v), np.nan)}}
            for key, v in values.items()}


def test_every_method_at_a_budget_uses_the_seed_spread_pooled_there():
    from s2l.experiment_report import summarize

    rows = [{"key": "full/all-s0", "label": "full", "method": "full", "budget": "all"},
            {"key": "random/b0.1-s0", "label": "random", "method": "random", "budget": 0.1},
            {"key": "random/b0.1-s1", "label": "random", "method": "random", "budget": 0.1},
            {"key": "s2l/b0.1-s0", "label": "s2l", "method": "s2l", "budget": 0.1}]
    # Random's seeds are 1 apart on every item (a seed effect of variance 0.5, no item noise); s2l and the full
    # pool are the same on every item, so their items alone would give an interval of no width.
    items = _cells({"full/all-s0": [1.0] * 6, "random/b0.1-s0": [2.0] * 6, "random/b0.1-s1": [3.0] * 6,
                    "s2l/b0.1-s0": [1.5] * 6})
    summary = {s["label"]: s for s in summarize(rows, items, ["gsm8k"])}
    assert {k: s["seed_spread"] for k, s in summary.items()} == {"full": "all budgets", "random": "budget",
                                                                 "s2l": "budget"}
    # s2l moves as random's seeds do: sqrt(0.5 / 1) t(1), whose 95% interval is ±12.7 x 0.71; random by half that.
    # (A loss cannot go below 0, nor its interval.)
    assert summary["s2l"]["low"] == 0.0 and summary["s2l"]["high"] > 1.5 + 5
    assert summary["random"]["low"] == 0.0 and summary["random"]["high"] > 2.5 + 3
    # Alone at its budget, the full pool takes the subsets' spread.
    assert summary["full"]["low"] == 0.0 and summary["full"]["high"] > 1.0 + 5
    assert summary["s2l"]["vs_random_verdict"] == "no difference"  # -1.0, but two seeds of random cannot say so
    assert summary["s2l"]["vs_full"] == pytest.approx(0.5)
    # No method with two seeds anywhere: the items alone, an interval of no width here.
    alone = {s["label"]: s for s in summarize(rows[:2] + rows[3:], items, ["gsm8k"])}
    assert {k: s["seed_spread"] for k, s in alone.items()} == {"full": "none", "random": "none", "s2l": "none"}
    assert [alone["s2l"][k] for k in ("low", "high")] == pytest.approx([1.5, 1.5])


def test_an_accuracy_interval_stays_within_0_and_1():
    import numpy as np

    from s2l.experiment_report import summarize

    rows = [{"key": f"random/b0.1-s{k}", "label": "random", "method": "random", "budget": 0.1} for k in range(3)]
    ids = np.array([f"q{i}" for i in range(20)], dtype=object)
    # Three right answers in 20 for one seed, none for the others: a seed spread (variance 0.005 on 2 degrees
    # of freedom, drawn as a t) that would carry the mean, 0.05, to about -0.13 unclipped.
    right = [np.r_[np.ones(3), np.zeros(17)], np.zeros(20), np.zeros(20)]
    items = {row["key"]: {"gsm8k": {"ids": ids, "loss": np.ones(20), "accuracy": acc}}
             for row, acc in zip(rows, right)}
    accuracy = next(s for s in summarize(rows, items, ["gsm8k"]) if s["metric"] == "accuracy")
    assert accuracy["value"] == pytest.approx(0.05)
    assert accuracy["low"] == 0.0 and 0.1 < accuracy["high"] < 1.0


def test_cells_evaluated_on_different_items_are_an_error(tmp_path):
    import numpy as np

    from s2l.errors import InputError
    from s2l.experiment_report import check_items

    rows = [{"key": "random/b0.1-s0"}, {"key": "s2l/b0.1-s0"}]
    items = _cells({"random/b0.1-s0": [1.0, 2.0], "s2l/b0.1-s0": [1.0, 2.0]})
    check_items(items, rows, ["gsm8k"], tmp_path)  # the same items: nothing to say
    items["s2l/b0.1-s0"]["gsm8k"]["ids"] = np.array(["q1", "q0"], dtype=object)  # same count, another order
    with pytest.raises(InputError, match="cells random/b0.1-s0 and s2l/b0.1-s0 were evaluated on different gsm8k items") as e:
        check_items(items, rows, ["gsm8k"], tmp_path)
    assert e.value.path == str(tmp_path / "s2l/b0.1-s0" / "eval" / "gsm8k" / "predictions.jsonl")


def test_costs_count_the_recording_for_the_methods_that_read_it():
    from s2l.experiment_report import method_costs

    def row(method, budget, seed, select, train, tokens):
        return {"key": f"{method}/b{budget}-s{seed}", "label": method, "method": method, "budget": budget,
                "select_seconds": select, "train_seconds": train, "train": {"input_tokens": tokens, "epochs": 3}}

    rows = [row("full", "all", 0, 0.0, 1000.0, 10_000), row("random", 0.1, 0, 0.5, 90.0, 1_000),
            row("random", 0.1, 1, 1.5, 110.0, 1_200), row("s2l", 0.1, 0, 2.0, 100.0, 1_100)]
    recording = {"seconds": 800.0, "flops": 5.0e6}
    by_label = {c["label"]: c for c in method_costs(rows, target_params=10, recording=recording)}
    full, random, s2l = by_label["full"], by_label["random"], by_label["s2l"]
    # 6 x params x tokens x epochs for training; the full pool's training is the baseline, recording left out.
    assert full["train_flops"] == 6 * 10 * 10_000 * 3 and full["total_seconds"] == 1000.0
    assert full["saved_seconds"] == 0.0 and not full["uses_proxy"]
    # random reads no trajectory: its seeds' mean selection and training, nothing recorded.
    assert (random["record_seconds"], random["total_seconds"], random["saved_seconds"]) == (0.0, 101.0, 899.0)
    assert random["saved_flops"] == 6 * 10 * 3 * (10_000 - 1_100)
    # s2l pays for the recording: 800 + 2 + 100, against the full pool's 1000.
    assert s2l["uses_proxy"] and (s2l["total_seconds"], s2l["saved_seconds"]) == (902.0, 98.0)
    assert s2l["total_flops"] == 5.0e6 + 6 * 10 * 1_100 * 3
    assert s2l["saved_flops"] == 6 * 10 * 10_000 * 3 - s2l["total_flops"]
    # No recording on record (or no parameter count): the totals are unknown, not understated.
    unknown = {c["label"]: c for c in method_costs(rows, target_params=None, recording=None)}
    assert unknown["s2l"]["total_seconds"] is None and unknown["s2l"]["saved_seconds"] is None
    assert unknown["random"]["total_seconds"] == 101.0 and unknown["random"]["saved_flops"] is None
    from s2l.experiment_report import markdown

    md = markdown("x", [], [], list(by_label.values()), recording, None)
    assert "reads the proxy's trajectories (full, random: not)" in md
    assert "| s2l | 0.1 | 1 | 800 | 2.0 | 100 | 902 | +98 |" in md
    assert "| random | 0.1 | 2 | – | 1.0 | 100 | 101 | +899 |" in md


def test_recording_cost_finds_the_model_of_a_store_recorded_elsewhere(tmp_path):
    """A store restored from another machine names that machine's cache path: its FLOPs come from the same model
    found here by the name it was recorded under, not dropped from the cost table."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import save_file

    from s2l.experiment_report import recording_cost

    model = tmp_path / "model"
    model.mkdir()
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(model / "model.safetensors"))  # 17 parameters
    run = tmp_path / "proxy-run"
    run.mkdir()
    pq.write_table(pa.table({"n_input_tokens": [10, 20, 30], "excluded": [None, None, "too_long"]}),
                   run / "examples.parquet")
    manifest = {"model": str(model), "model_path": "/elsewhere/cache/model", "snapshots": [1, 2],
                "training": {"epochs": 3}, "wall_seconds": 12.5, "complete": True}
    (run / "manifest.json").write_text(json.dumps(manifest))
    cost = recording_cost(run)
    # 3 training epochs at 6 x params x tokens and 2 scoring passes at 2 x, over the 30 tokens not excluded.
    assert cost == {"seconds": 12.5, "complete": True, "flops": (6 * 3 + 2 * 2) * 17 * 30}
    manifest["model"] = str(tmp_path / "gone")  # nothing here by that name either: unknown, not zero
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert recording_cost(run)["flops"] is None
