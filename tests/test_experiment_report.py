"""The experiment report's verdict table, on a summary written by hand."""

from __future__ import annotations

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
