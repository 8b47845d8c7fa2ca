"""An experiment's results from its finished cells: the tables, the intervals, the plots and the cost side.

    results.csv   one row per cell and test set (and `all`, every test item together): loss, accuracy, times
    summary.csv   one row per method, budget, test set and metric: the value and its 95% interval; the paired
                  difference from random at the same budget and from the full pool, each with its interval
                  and verdict (win / loss / no difference); the random-equivalent fraction (loss)
    pairs.csv     one row per comparison the config's `compare` names, method and budget, test set and metric:
                  the paired difference with its interval and verdict
    results.md    every comparison's verdict in one table per baseline, the `compare` pairs, the summary as
                  tables, what each method picked by source, the cost side, and proxy→target transfer when it
                  was measured
    results.png   each metric against the budget per test set: random's curve with its interval band, the
                  other methods' points with theirs, the full pool as a line

Everything is computed from the per-item predictions each cell's evaluation wrote (`s2l.comparison`), so
rerunning the analysis on the same cells gives the same numbers.
"""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from s2l.comparison import (LOWER_IS_BETTER, METRIC_RANGE, Resampler, SeedSpread, format_fraction, interval,
                            paired_difference, point, pooled_spread, random_equivalent)
from s2l.config import FULL
from s2l.errors import InputError
from s2l.fileio import atomic_path, write_bytes_atomic

if TYPE_CHECKING:
    from s2l.experiment import Experiment

ALL = "all"  # every test item of every test set together
RANDOM = "random"
METRICS = ("loss", "accuracy")
VERDICT_WORDS = {"win": "**win**", "loss": "**loss**", "no difference": "no difference"}  # as results.md shows them
RESULT_COLUMNS = ["label", "method", "budget", "seed", "test", "n_train", "n_loss", "loss", "n_judged", "accuracy",
                  "select_seconds", "train_seconds", "eval_seconds"]
SUMMARY_COLUMNS = ["label", "method", "budget", "seeds", "seed_spread", "n_train", "test", "metric", "n_items", "value", "low", "high",
                   "vs_random", "vs_random_low", "vs_random_high", "vs_random_verdict",
                   "vs_full", "vs_full_low", "vs_full_high", "vs_full_verdict",
                   "random_equivalent", "random_equivalent_low", "random_equivalent_high"]
PAIR_COLUMNS = ["label", "against", "budget", "seeds", "against_seeds", "test", "metric", "n_items",
                "difference", "difference_low", "difference_high", "difference_verdict"]


# -- per-item values ----------------------------------------------------------------------------------------------
def cell_items(cell_dir: Path, tests: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """test → {"ids", "loss", "accuracy"} from a cell's predictions (NaN where an item has no value)."""
    out = {}
    for test in tests:
        rows = [json.loads(line) for line in open(cell_dir / "eval" / test / "predictions.jsonl", encoding="utf-8")]
        out[test] = {
            "ids": np.array([r["example_id"] for r in rows], dtype=object),
            "loss": np.array([np.nan if r["loss"] is None else r["loss"] for r in rows], dtype=np.float64),
            "accuracy": np.array([np.nan if r["correct"] is None else float(r["correct"]) for r in rows], dtype=np.float64),
        }
    if len(tests) > 1:
        out[ALL] = {key: np.concatenate([out[t][key] for t in tests]) for key in ("ids", "loss", "accuracy")}
    return out


def test_names(tests: list[str]) -> list[str]:
    """The sets the analysis reports: every item together first, when there is more than one set."""
    return [ALL, *tests] if len(tests) > 1 else list(tests)


def group_rows(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(label, budget) → that method's cells at that budget (one per seed), in the order the cells ran."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["label"], str(row["budget"])), []).append(row)
    return groups


def check_items(items: dict[str, dict], rows: list[dict], tests: list[str], cells: Path) -> None:
    """Every cell was evaluated on the same items of each test set, in the same order: the pairing rests on it."""
    for test in tests:
        first = rows[0]["key"]
        for row in rows[1:]:
            if not np.array_equal(items[row["key"]][test]["ids"], items[first][test]["ids"]):
                raise InputError(f"cells {first} and {row['key']} were evaluated on different {test} items (a test "
                                 "file changed between them?); evaluate both again on the same file",
                                 cells / row["key"] / "eval" / test / "predictions.jsonl")


def arm(items: dict[str, dict], group: list[dict], test: str, metric: str) -> np.ndarray:
    """(seeds, items) of one method at one budget."""
    return np.stack([items[row["key"]][test][metric] for row in group])


def seed_spreads(groups: dict[tuple[str, str], list[dict]], items: dict[str, dict], test: str,
                 metric: str) -> dict[str, tuple[SeedSpread | None, str]]:
    """budget → the seed spread every method at that budget uses, and where it comes from: pooled over the
    methods with several seeds there ("budget"), else over those of every budget ("all budgets": the full pool,
    alone at its budget, gets the subsets' spread, which its many examples would likely shrink), else none, and
    the interval holds the items alone (`s2l.comparison`)."""
    by_budget: dict[str, list[np.ndarray]] = {}
    for (label, budget), group in groups.items():
        values = arm(items, group, test, metric)
        by_budget.setdefault(budget, []).append(values[:, np.isfinite(values).all(axis=0)])
    overall = pooled_spread([a for arms in by_budget.values() for a in arms])
    out = {}
    for budget, arms in by_budget.items():
        own = pooled_spread(arms)
        out[budget] = (own, "budget") if own else (overall, "all budgets") if overall else (None, "none")
    return out


def every_seed_spread(groups: dict[tuple[str, str], list[dict]], items: dict[str, dict],
                      tests: list[str]) -> dict[tuple[str, str], dict[str, tuple[SeedSpread | None, str]]]:
    """(test, metric) → `seed_spreads`, computed once for every comparison that needs them."""
    return {(test, metric): seed_spreads(groups, items, test, metric) for test in test_names(tests) for metric in METRICS}


# -- the analysis -------------------------------------------------------------------------------------------------
def summarize(rows: list[dict], items: dict[str, dict], tests: list[str]) -> list[dict]:
    groups = group_rows(rows)
    random_label = next((label for (label, _), g in groups.items() if g[0]["method"] == RANDOM), None)
    full = next((g for (label, _), g in groups.items() if g[0]["method"] == FULL), None)
    # Random's curve in fractions of the pool (budgets given as counts have no place on it beside the full pool).
    random_curve = {float(g[0]["budget"]): g for (label, _), g in groups.items()
                    if label == random_label and isinstance(g[0]["budget"], float)}
    spreads = every_seed_spread(groups, items, tests)
    out = []
    for (label, budget), group in groups.items():
        for test in test_names(tests):
            for metric in METRICS:
                summary = _summary(label, budget, group, test, metric, items, groups, spreads[(test, metric)],
                                   random_label, full, random_curve)
                if summary:
                    out.append(summary)
    return out


def _summary(label, budget, group, test, metric, items, groups, spreads, random_label, full, random_curve) -> dict | None:
    """One method at one budget on one test set and metric: its value and interval, its differences from random
    and the full pool, its random-equivalent budget."""
    method = group[0]["method"]
    values = arm(items, group, test, metric)
    if not np.isfinite(values).any():
        return None  # a test set without generation has no accuracy
    spread, source = spreads[budget]
    keep = np.isfinite(values).all(axis=0)
    summary = {"label": label, "method": method, "budget": budget, "seeds": len(group), "seed_spread": source,
               "n_train": group[0].get("n_train"), "test": test, "metric": metric, "n_items": int(keep.sum()),
               "value": point(values[:, keep])}
    summary["low"], summary["high"] = interval(Resampler(int(keep.sum())).arm(values[:, keep], spread),
                                               bounds=METRIC_RANGE[metric])
    lower = LOWER_IS_BETTER[metric]
    if random_label and method not in (RANDOM, FULL) and (random_label, budget) in groups:
        random_values = arm(items, groups[(random_label, budget)], test, metric)
        _put(summary, "vs_random", paired_difference(values, random_values, lower, spreads=(spread, spread)))
    full_spread = spreads[str(full[0]["budget"])][0] if full else None
    if full and method != FULL:
        _put(summary, "vs_full", paired_difference(values, arm(items, full, test, metric), lower,
                                                   spreads=(spread, full_spread)))
    if metric == "loss" and method not in (RANDOM, FULL) and len(random_curve) + bool(full) >= 2:
        curve = {b: arm(items, g, test, metric) for b, g in random_curve.items()}
        curve_spreads = {b: spreads[str(g[0]["budget"])][0] for b, g in random_curve.items()}
        if full:
            curve[1.0] = arm(items, full, test, metric)
            curve_spreads[1.0] = full_spread
        equivalent = random_equivalent(values, curve, spread=spread, curve_spreads=curve_spreads)
        if equivalent is not None:
            summary.update(random_equivalent=equivalent.estimate, random_equivalent_low=equivalent.low,
                           random_equivalent_high=equivalent.high)
    return summary


def pairs(rows: list[dict], items: dict[str, dict], tests: list[str], compare: dict[str, list[str]]) -> list[dict]:
    """The comparisons `compare` names: each method minus each of its others at every budget both ran, item
    by item, with the same paired bootstrap as the differences from random."""
    groups = group_rows(rows)
    spreads = every_seed_spread(groups, items, tests) if compare else {}
    out = []
    for (label, budget), group in groups.items():
        for other in compare.get(label, []):
            if (other, budget) not in groups:
                continue
            against = groups[(other, budget)]
            for test in test_names(tests):
                for metric in METRICS:
                    spread = spreads[(test, metric)][budget][0]  # one budget: one spread for both
                    values, baseline = arm(items, group, test, metric), arm(items, against, test, metric)
                    difference = paired_difference(values, baseline, LOWER_IS_BETTER[metric], spreads=(spread, spread))
                    if difference is None:
                        continue  # no item has a value in both (a test set without generation has no accuracy)
                    pair = {"label": label, "against": other, "budget": budget, "seeds": len(group),
                            "against_seeds": len(against), "test": test, "metric": metric,
                            "n_items": difference.n_items}
                    _put(pair, "difference", difference)
                    out.append(pair)
    return out


def _put(summary: dict, name: str, difference) -> None:
    if difference is not None:
        summary.update({name: difference.estimate, f"{name}_low": difference.low, f"{name}_high": difference.high,
                        f"{name}_verdict": difference.verdict})


# -- the cost side ------------------------------------------------------------------------------------------------
def parameter_count(model_dir: Path) -> int | None:
    """Parameters in a model folder's safetensors files, read from their headers (nothing is loaded)."""
    total, found = 0, False
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                total += int(np.prod(tensor["shape"])) if tensor["shape"] else 1
                found = True
    return total if found else None


def _local_model(model: str) -> Path | None:
    """A model name or path as a folder on this machine; None where it is not here (a hub id not in the cache,
    a folder gone): the FLOPs are then left out, the times stay."""
    from s2l.models import resolve

    try:
        folder = Path(resolve(model))
    except Exception:
        return None
    return folder if folder.is_dir() else None


def recording_cost(run: Path) -> dict | None:
    """A store's wall time and its FLOPs at 6 x params x tokens for training, 2 x for each scoring pass."""
    manifest_path = run / "manifest.json"
    if not manifest_path.is_file():
        return None
    import pyarrow.parquet as pq

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    examples = pq.read_table(run / "examples.parquet", columns=["n_input_tokens", "excluded"]).to_pydict()
    tokens = sum(n for n, why in zip(examples["n_input_tokens"], examples["excluded"]) if why is None)
    # A store restored from another machine names that machine's cache path: find the same model here by name.
    recorded = Path(manifest["model_path"]) if manifest.get("model_path") else None
    folder = recorded if recorded and recorded.is_dir() else _local_model(manifest["model"]) if manifest.get("model") else None
    params = parameter_count(folder) if folder else None
    passes = len(manifest.get("snapshots") or [])
    epochs = manifest["training"]["epochs"]
    return {"seconds": manifest.get("wall_seconds"), "complete": bool(manifest.get("complete")),
            "flops": None if params is None else (6 * epochs + 2 * passes) * params * tokens}


def cost_rows(experiment: "Experiment", rows: list[dict]) -> tuple[list[dict], dict | None]:
    target = _local_model(experiment.config.target["model"])
    target_params = parameter_count(target) if target else None
    recording = recording_cost(experiment.out / "proxy-run")
    return method_costs(rows, target_params, recording), recording


def method_costs(rows: list[dict], target_params: int | None, recording: dict | None) -> list[dict]:
    """Each method's cost at each budget (the mean over its seeds) against the full pool's training: a method
    that reads the proxy's trajectories pays for their recording too (once per pool, whatever the budget)."""
    from s2l.selection.base import METHODS

    groups = group_rows(rows)
    full = next((g for g in groups.values() if g[0]["method"] == FULL), None)

    def flops(row: dict) -> float | None:
        train = row.get("train") or {}
        if target_params is None or train.get("input_tokens") is None:
            return None
        return 6.0 * target_params * train["input_tokens"] * train["epochs"]

    def mean(values: list) -> float | None:
        return None if any(v is None for v in values) else float(np.mean(values))

    full_seconds = mean([r["train_seconds"] for r in full]) if full else None
    full_flops = flops(full[0]) if full else None
    out = []
    for (label, budget), group in groups.items():
        method = group[0]["method"]
        uses_proxy = method != FULL and (method not in METHODS or METHODS[method].factory.uses_proxy)
        select_seconds = float(np.mean([r.get("select_seconds") or 0.0 for r in group]))
        train_seconds = float(np.mean([r["train_seconds"] for r in group]))
        train_flops = mean([flops(r) for r in group])
        record_seconds = (recording or {}).get("seconds") if uses_proxy else 0.0
        record_flops = (recording or {}).get("flops") if uses_proxy else 0.0
        seconds = None if record_seconds is None else record_seconds + select_seconds + train_seconds
        total_flops = None if record_flops is None or train_flops is None else record_flops + train_flops
        out.append({"label": label, "budget": budget, "seeds": len(group), "uses_proxy": uses_proxy,
                    "record_seconds": record_seconds, "select_seconds": select_seconds,
                    "train_seconds": train_seconds, "train_flops": train_flops,
                    "total_seconds": seconds, "total_flops": total_flops,
                    "saved_seconds": None if full_seconds is None or seconds is None else full_seconds - seconds,
                    "saved_flops": None if full_flops is None or total_flops is None else full_flops - total_flops})
    return out


# -- what the subsets hold ----------------------------------------------------------------------------------------
def composition(out: Path, rows: list[dict]) -> tuple[dict[str, int], list[dict]]:
    """The pool's examples per source, and each method's at each budget (the mean over its seeds), from the
    selections' manifests: a method that only re-weights the sources shows it here."""
    pool: dict[str, int] = {}
    out_rows = []
    for (label, budget), group in group_rows(rows).items():
        counts = []
        for row in group:
            manifest = out / "cells" / row["key"] / "selection" / "manifest.json"
            sources = json.loads(manifest.read_text(encoding="utf-8")).get("sources") if manifest.is_file() else None
            if sources:
                pool = {name: int(s["pool"]) for name, s in sources.items()}
                counts.append({name: int(s["selected"]) for name, s in sources.items()})
        if counts:
            names = sorted({name for c in counts for name in c})
            out_rows.append({"label": label, "budget": budget, "seeds": len(counts),
                             "sources": {name: float(np.mean([c.get(name, 0) for c in counts])) for name in names}})
    return pool, out_rows


def composition_section(pool: dict[str, int], picked: list[dict]) -> list[str]:
    if len(pool) < 2 or not picked:
        return []  # one source: nothing to tell
    names = sorted(pool)
    lines = ["## Selections by source", "",
             "Examples each subset took from each source (the mean over its seeds), beside the pool's own.", "",
             "| method | budget | seeds | " + " | ".join(names) + " |", "|" + "---|" * (3 + len(names)),
             "| pool | all | – | " + " | ".join(str(pool[n]) for n in names) + " |"]
    for p in picked:
        cells = [_count(p["sources"].get(n, 0.0)) for n in names]
        lines.append(f"| {p['label']} | {p['budget']} | {p['seeds']} | " + " | ".join(cells) + " |")
    return lines + [""]


# -- writing ------------------------------------------------------------------------------------------------------
def write_results(experiment: "Experiment", rows: list[dict]) -> None:
    tests = [t.name for t in experiment.config.test_sets()]
    out = experiment.out
    items = {row["key"]: cell_items(experiment.out / "cells" / row["key"], tests) for row in rows}
    if rows:
        check_items(items, rows, test_names(tests), experiment.out / "cells")
    write_bytes_atomic(out / "results.csv", _csv(result_rows(rows, items, tests), RESULT_COLUMNS))
    summary = summarize(rows, items, tests) if rows else []
    write_bytes_atomic(out / "summary.csv", _csv(summary, SUMMARY_COLUMNS))
    compared = pairs(rows, items, tests, experiment.config.compare) if rows else []
    write_bytes_atomic(out / "pairs.csv", _csv(compared, PAIR_COLUMNS))
    costs, recording = cost_rows(experiment, rows) if rows else ([], None)
    transfer = out / "transfer.json"
    transfer = json.loads(transfer.read_text(encoding="utf-8")) if transfer.is_file() else None
    write_bytes_atomic(out / "results.md", markdown(experiment.config.name, summary, tests, costs, recording,
                                                    transfer, compared, composition(out, rows)).encode("utf-8"))
    if summary:
        plot(summary, tests, out / "results.png")


def result_rows(rows: list[dict], items: dict, tests: list[str]) -> list[dict]:
    out = []
    for row in rows:
        for test in test_names(tests):
            values = items[row["key"]][test]
            loss, acc = values["loss"], values["accuracy"]
            out.append({**{k: row.get(k) for k in ("label", "method", "budget", "seed", "n_train", "select_seconds",
                                                   "train_seconds", "eval_seconds")},
                        "test": test, "n_loss": int(np.isfinite(loss).sum()),
                        "loss": float(np.nanmean(loss)) if np.isfinite(loss).any() else None,
                        "n_judged": int(np.isfinite(acc).sum()),
                        "accuracy": float(np.nanmean(acc)) if np.isfinite(acc).any() else None})
    return out


def _csv(rows: list[dict], columns: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _text(row.get(k)) for k in columns})
    return buffer.getvalue().encode("utf-8")


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if not np.isfinite(value) else f"{value:.6g}"
    return str(value)


def _value(s: dict, metric: str, key: str = "value") -> str:
    """The value with its interval, or a difference (`vs_random`, `vs_full`, a pair's `difference`): signed,
    with its verdict."""
    scale, digits = (100.0, 1) if metric == "accuracy" else (1.0, 3)
    if s.get(key) is None:
        return "–"
    low, high, sign = ("low", "high", "") if key == "value" else (f"{key}_low", f"{key}_high", "+")
    text = (f"{_fixed(s[key] * scale, digits, sign)} "
            f"[{_fixed(s[low] * scale, digits)}, {_fixed(s[high] * scale, digits)}]")
    verdict = s.get(f"{key}_verdict")
    return text + (f" {VERDICT_WORDS[verdict]}" if verdict in ("win", "loss") else "")


def markdown(name: str, summary: list[dict], tests: list[str], costs: list[dict], recording: dict | None,
             transfer: dict | None, compared: list[dict] = (),
             picked: tuple[dict[str, int], list[dict]] = ({}, [])) -> str:
    smallest = min((float(s["budget"]) for s in summary if s["budget"] != "all"), default=0.1)
    lines = [f"# {name}", "",
             "Held-out response loss (mean token cross-entropy per example, lower is better) and answer accuracy (%), "
             "each with its 95% interval over test items and seeds: a percentile bootstrap of the items, with each "
             "method's seed effect drawn from the seed-to-seed variance pooled over the methods with several seeds "
             "at its budget (a t with the pooled degrees of freedom, as a two-sample t-test; the full pool, alone at "
             "its budget, takes the subsets' pooled variance; a value's interval is clipped to what the metric can "
             "take). Δ random: the method minus random at the same budget, item by item; Δ full: minus the full "
             "pool. **win**/**loss** only where the interval excludes zero. "
             "Random-equivalent: the budget at which random's loss curve reaches the method's loss "
             "(`s2l.comparison`).", ""]
    lines += verdict_section(summary)
    lines += pairs_section(compared)
    for metric in METRICS:
        for test in test_names(tests):
            part = [s for s in summary if s["test"] == test and s["metric"] == metric]
            if not part:
                continue
            lines += [f"## {metric}: {test} ({part[0]['n_items']} items)", ""]
            header = ["method", "budget", "seeds", "n_train", metric, "Δ random", "Δ full"]
            if metric == "loss":
                header.append("random-equivalent")
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for s in part:
                cells = [s["label"], str(s["budget"]), str(s["seeds"]), str(s["n_train"]), _value(s, metric),
                         _value(s, metric, "vs_random"), _value(s, metric, "vs_full")]
                if metric == "loss":
                    re = s.get("random_equivalent")
                    cells.append("–" if re is None else f"{format_fraction(re, smallest)} "
                                 f"[{format_fraction(s['random_equivalent_low'], smallest)}, "
                                 f"{format_fraction(s['random_equivalent_high'], smallest)}]")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += composition_section(*picked)
    if costs:
        lines += ["## Cost", ""]
        if recording:
            flops = "" if recording["flops"] is None else f", {recording['flops']:.3g} FLOPs"
            lines += [f"Recording the proxy's trajectories (once, for every method that reads them): "
                      f"{recording['seconds']} s{flops} (6 x params x tokens a training pass, 2 x a scoring pass).", ""]
        without = list(dict.fromkeys(c["label"] for c in costs if not c["uses_proxy"]))
        lines += ["Each row's total counts the recording where the method reads the proxy's trajectories"
                  + (f" ({', '.join(without)}: not)" if without else "")
                  + "; saved: the full pool's training minus that total.", "",
                  "| method | budget | seeds | proxy recording (s) | selection (s) | target training (s) | total (s) "
                  "| saved vs full (s) | training FLOPs | total FLOPs | saved FLOPs |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in costs:
            recorded = _num(c["record_seconds"]) if c["uses_proxy"] else "–"
            lines.append(f"| {c['label']} | {c['budget']} | {c['seeds']} | {recorded} | {c['select_seconds']:.1f} | "
                         f"{c['train_seconds']:.0f} | {_num(c['total_seconds'])} | {_signed(c['saved_seconds'])} | "
                         f"{_sci(c['train_flops'])} | {_sci(c['total_flops'])} | {_sci(c['saved_flops'])} |")
        lines.append("")
    if transfer:
        lines += ["## Proxy → target rank agreement", "",
                  f"Spearman over {transfer.get('examples')} pool examples, with 95% bootstrap intervals over them: "
                  f"final-snapshot loss {_correlation(transfer, 'final_loss')}, learning percentage LP(1) "
                  f"{_correlation(transfer, 'lp')} (the learning-percentage paper reports 0.79 for LP(1) between "
                  "its proxy and target).", ""]
    return "\n".join(lines)


def verdict_section(summary: list[dict]) -> list[str]:
    """Every comparison's verdict on one screen: a table per baseline (random at the same budget, the full
    pool), one row per method and budget, one column per metric and test set, and the count of each verdict.
    The counts leave out `all`, whose items are those of the other sets again."""
    lines = ["## Verdict", ""]
    for key, against in (("vs_random", "random at the same budget"), ("vs_full", "the full pool")):
        judged = [s for s in summary if s.get(f"{key}_verdict")]
        if not judged:
            continue
        columns = list(dict.fromkeys((s["metric"], s["test"]) for s in judged))
        verdicts = {(s["label"], str(s["budget"]), s["metric"], s["test"]): s[f"{key}_verdict"] for s in judged}
        counted = [v for (_, _, _, test), v in verdicts.items() if test != ALL]
        tally = {v: counted.count(v) for v in VERDICT_WORDS}
        plural = {"win": "wins", "loss": "losses", "no difference": "no difference"}
        counts = ", ".join(f"{n} {v if n == 1 else plural[v]}" for v, n in tally.items())
        note = ", not counting `all`, which pools the other sets' items" if len(counted) < len(verdicts) else ""
        lines += [f"Against {against} ({len(counted)} comparisons{note}: {counts}):", "",
                  "| method | budget | " + " | ".join(f"{metric}: {test}" for metric, test in columns) + " |",
                  "|" + "---|" * (2 + len(columns))]
        for label, budget in dict.fromkeys((s["label"], str(s["budget"])) for s in judged):
            cells = [VERDICT_WORDS.get(verdicts.get((label, budget, metric, test)), "–") for metric, test in columns]
            lines.append(f"| {label} | {budget} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines if len(lines) > 2 else []


def pairs_section(compared: list[dict]) -> list[str]:
    """The `compare` pairs: one row per method, other method, budget and test set, a column per metric."""
    if not compared:
        return []
    metrics = [m for m in METRICS if any(p["metric"] == m for p in compared)]
    lines = ["## Paired comparisons (`compare`)", "",
             "The method minus the other at the same budget, item by item, with its 95% interval over test items and "
             "each side's seeds, as above; **win**/**loss** only where the interval excludes zero.", "",
             "| method | against | budget | seeds | test | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
             "|" + "---|" * (5 + len(metrics))]
    by_row: dict[tuple, dict[str, dict]] = {}
    for p in compared:
        by_row.setdefault((p["label"], p["against"], str(p["budget"]), p["seeds"], p["against_seeds"], p["test"]),
                          {})[p["metric"]] = p
    for (label, against, budget, seeds, against_seeds, test), cells in by_row.items():
        values = [_value(cells[m], m, "difference") if m in cells else "–" for m in metrics]
        lines.append(f"| {label} | {against} | {budget} | {seeds} vs {against_seeds} | {test} | " + " | ".join(values) + " |")
    lines.append("")
    return lines


def _correlation(transfer: dict, name: str) -> str:
    value, ci = transfer.get(f"{name}_spearman"), transfer.get(f"{name}_spearman_ci95")
    return _num(value, 2) + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.0f}"


def _sci(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def _num(value, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _count(value: float) -> str:
    """A count, or a mean of counts over seeds to one decimal."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _fixed(value: float, digits: int, sign: str = "") -> str:
    """`value` to `digits` decimals, a value that rounds to zero without a minus sign."""
    rounded = round(value, digits)
    return f"{rounded if rounded != 0 else 0.0:{sign}.{digits}f}"


def plot(summary: list[dict], tests: list[str], path: Path) -> None:
    """Each metric against the budget, one panel per test set: random's curve and band, other methods' points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(m, t) for m in METRICS for t in test_names(tests) if any(s["metric"] == m and s["test"] == t for s in summary)]
    columns = min(4, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    labels = list(dict.fromkeys(s["label"] for s in summary if s["method"] != FULL))
    colours = {label: f"C{k % 10}" for k, label in enumerate(labels)}
    # Methods at the same budget sit side by side, a little apart, so their intervals do not hide each other.
    others = [label for label in labels if not any(s["label"] == label and s["method"] == RANDOM for s in summary)]
    shift = {label: 0.012 * (k - (len(others) - 1) / 2) for k, label in enumerate(others)}
    for ax, (metric, test) in zip(axes.flat, panels):
        scale = 100.0 if metric == "accuracy" else 1.0
        part = [s for s in summary if s["metric"] == metric and s["test"] == test]
        full = [s for s in part if s["method"] == FULL]
        for label in labels:
            points = sorted((float(s["budget"]), s) for s in part if s["label"] == label and s["method"] != FULL)
            if not points:
                continue
            xs = [b for b, _ in points]
            ys = [s["value"] * scale for _, s in points]
            lows, highs = [s["low"] * scale for _, s in points], [s["high"] * scale for _, s in points]
            if points[0][1]["method"] == RANDOM:
                if full:  # random's curve ends at the full pool
                    xs, ys = xs + [1.0], ys + [full[0]["value"] * scale]
                    lows, highs = lows + [full[0]["low"] * scale], highs + [full[0]["high"] * scale]
                ax.plot(xs, ys, color=colours[label], marker="o", label=label)
                ax.fill_between(xs, lows, highs, color=colours[label], alpha=0.2)
            else:
                xs = [x + shift[label] for x in xs]
                ax.errorbar(xs, ys, yerr=[np.subtract(ys, lows), np.subtract(highs, ys)], fmt="s", capsize=3,
                            color=colours[label], label=label)
        if full:
            ax.axhline(full[0]["value"] * scale, color="black", linestyle="--", linewidth=1, label="full pool")
        ax.set_title(f"{test}: {'accuracy (%)' if metric == 'accuracy' else 'held-out loss'}", fontsize=9)
        ax.set_xlabel("budget (fraction of the pool)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
