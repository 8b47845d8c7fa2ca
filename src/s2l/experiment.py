"""`s2l experiment CONFIG.yaml`: the papers' comparison in one resumable run.

    1. (optionally) generate the pool and test split with a script
    2. record the proxy's trajectories once (and the target's, for proxy→target transfer)
    3. for every (method, budget, seed): select, train the target on the subset, evaluate it
    4. train and evaluate the target on the full pool: the reference line
    5. results.csv (one row per cell), results.md (mean ± std over seeds), results.png

Every step leaves a completion marker (a finished store, a selection manifest, a trained model's
manifest, metrics.json), so running the command again after a crash skips what is done. Trained
models are deleted once evaluated unless `keep_models: true` (a 270M model is 1 GB in float32).

A config (paths relative to the config file; `out` relative to where the command runs):

    name: quality-cpu
    out: runs/quality-cpu
    data:
      generate: {script: ../../examples/make_math_pool.py, args: {size: 600, test-size: 200}}
      # or: pool: pool.jsonl, test: test.jsonl
    proxy:  {model: smollm2-135m-instruct, record: {epochs: 3, snapshots: 6}, score: {dtype: bf16}}
    target: {model: gemma-3-270m, train: {epochs: 3, learning_rate: 2e-5}, trajectories: true}
    evaluate: {max_new_tokens: 64}
    methods: [full, random, {name: s2l, params: {n_clusters: 10}}, {name: s2l, label: s2l-pooled, params: {per_source: false}}]
    budgets: [0.1, 0.3]
    seeds: {default: [0], random: [0, 1], s2l: [0, 1]}
"""

from __future__ import annotations

import logging
import csv
import io
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from s2l.config import FULL, Cell, ExperimentConfig, MethodSpec  # noqa: F401  (MethodSpec: the API's)
from s2l.errors import InputError
from s2l.fileio import directory_lock, remove_leftovers, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["label", "method", "budget", "seed", "n_train", "loss", "accuracy", "in_domain_loss",
                  "in_domain_accuracy", "ood_loss", "ood_accuracy", "select_seconds", "train_seconds", "eval_seconds"]


class Experiment:
    def __init__(self, config: ExperimentConfig, device: str | None = None, show_progress: bool = True):
        self.config = config
        self.device = device
        self.show_progress = show_progress
        self.out = config.out

    # paths
    @property
    def pool(self) -> Path:
        data = self.config.data
        return self.out / "data" / "pool.jsonl" if "generate" in data else self.config.input_path(data["pool"])

    @property
    def test(self) -> Path:
        data = self.config.data
        return self.out / "data" / "test.jsonl" if "generate" in data else self.config.input_path(data["test"])

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.key

    def check(self) -> None:
        """Build every settings object now, so a typo fails in a second rather than after hours."""
        from s2l.selection import make_selector

        for role in ("proxy", "target"):
            self.config.record_config(role), self.config.score_config(role), self.config.data_config(role)
        self.config.train_config()
        self.config.eval_config()
        for method in self.config.methods:
            if method.name != FULL:
                make_selector(method.name, **method.params)

    def run(self) -> list[dict]:
        started = time.perf_counter()
        self.check()
        with directory_lock(self.out):  # one experiment per output directory
            remove_leftovers(self.out)  # half-written files and folders of a killed run (we hold the lock)
            return self._run(started)

    def _run(self, started: float) -> list[dict]:
        self._generate_data()
        proxy_run = self._record("proxy", self.config.proxy)
        target_run = self._record("target", self.config.target) if self.config.target.get("trajectories") else None
        rows = []
        for cell in self.config.cells():
            rows.append(self._run_cell(cell, proxy_run))
            self._write_results(rows)
            self._print_row(rows[-1])
        if target_run is not None:
            write_json_atomic(self.out / "transfer.json", transfer(proxy_run, target_run))
        self._write_results(rows)
        log.info(f"experiment done in {time.perf_counter() - started:.0f} s: {self.out / 'results.md'}")
        return rows

    def _generate_data(self) -> None:
        generate = self.config.data.get("generate")
        if not generate or (self.pool.is_file() and self.test.is_file()):
            return
        script = self.config.input_path(generate["script"])
        args = [sys.executable, str(script), "--out", str(self.out / "data")]
        for key, value in (generate.get("args") or {}).items():
            if isinstance(value, dict):  # {k: v} → --key k=v, repeated (e.g. make_math_pool's --set)
                for name, setting in value.items():
                    args += [f"--{key}", f"{name}={json.dumps(setting)}"]
            else:
                args += [f"--{key}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        log.info("generating the data: " + " ".join(args[1:]))
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise InputError(f"the data generator failed: {done.stderr.strip().splitlines()[-1:]}", script)

    def _record(self, role: str, spec: dict[str, Any]) -> Path:
        from s2l.trajectories.record import record
        from s2l.trajectories.store import TrajectoryStore

        out = self.out / f"{role}-run"
        store = TrajectoryStore(out)
        if out.is_dir() and (out / "manifest.json").is_file() and store.manifest.get("complete"):
            return out
        log.info(f"recording the {role}'s trajectories ({spec['model']})")
        record(self.pool, spec["model"], out, self.config.record_config(role), data_config=self.config.data_config(role),
               score_config=self.config.score_config(role), device=self.device, show_progress=self.show_progress)
        return out

    def _run_cell(self, cell: Cell, proxy_run: Path) -> dict:
        folder = self.cell_dir(cell)
        metrics_path = folder / "metrics.json"
        if metrics_path.is_file():  # finished before: skip
            return json.loads(metrics_path.read_text(encoding="utf-8"))["row"]
        log.info(f"cell {cell.key}")
        row: dict[str, Any] = {"label": cell.method.label, "method": cell.method.name,
                               "budget": "all" if cell.budget is None else cell.budget, "seed": cell.seed}
        subset, row["select_seconds"] = self._select(cell, proxy_run, folder)
        model_dir = folder / "model"
        row["train_seconds"] = self._train(cell, subset, model_dir)
        metrics, row["eval_seconds"] = self._evaluate(model_dir, folder / "eval")
        row["n_train"] = sum(1 for _ in open(subset, "rb"))
        row.update(_metric_columns(metrics))
        write_json_atomic(metrics_path, {"row": row, "metrics": metrics})
        if not self.config.keep_models:
            shutil.rmtree(model_dir, ignore_errors=True)
        return row

    def _select(self, cell: Cell, proxy_run: Path, folder: Path) -> tuple[Path, float]:
        if cell.budget is None:
            return self.pool, 0.0
        from s2l.selection.run import run_selection

        selection = folder / "selection"
        if (selection / "manifest.json").is_file():
            return selection / "selected.jsonl", 0.0  # made by an earlier run: not timed again
        result = run_selection(proxy_run, self.pool, cell.method.name, cell.budget, selection, seed=cell.seed,
                               params=cell.method.params, force=True)
        return selection / "selected.jsonl", round(result.seconds, 2)

    def _train(self, cell: Cell, subset: Path, model_dir: Path) -> float:
        from s2l.training import train

        marker = model_dir / "s2l_train.json"
        if marker.is_file():
            return json.loads(marker.read_text()).get("wall_seconds", 0.0)
        config = self.config.train_config(seed=cell.seed)
        started = time.perf_counter()
        train(subset, self.config.target["model"], model_dir, config, device=self.device,
              show_progress=self.show_progress, overwrite=True)
        return round(time.perf_counter() - started, 1)

    def _evaluate(self, model_dir: Path, out: Path) -> tuple[dict, float]:
        from s2l.evaluation import evaluate

        started = time.perf_counter()
        config = self.config.eval_config()
        metrics = evaluate(model_dir, self.test, config, out=out / "metrics.json", device=self.device,
                           show_progress=self.show_progress)
        return metrics, round(time.perf_counter() - started, 1)

    # -- results --------------------------------------------------------------------------------------------
    def _write_results(self, rows: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: str(row[k]) if k == "budget" else _fmt(row.get(k)) for k in RESULT_COLUMNS})
        write_bytes_atomic(self.out / "results.csv", buffer.getvalue().encode("utf-8"))
        write_bytes_atomic(self.out / "results.md", summary_markdown(rows, self.config).encode("utf-8"))
        if rows:
            plot_results(rows, self.out / "results.png")

    def _print_row(self, row: dict) -> None:
        acc = row.get("accuracy")
        log.info(f"  {row['label']:<16} budget {str(row['budget']):<5} seed {row['seed']}: "
                 f"loss {_fmt(row.get('loss'))}  accuracy {_fmt(acc)}  (n_train {row.get('n_train')})")


def _metric_columns(metrics: dict) -> dict:
    def part(name: str) -> dict:
        return metrics.get(name) or {}

    return {"loss": part("overall").get("loss"), "accuracy": part("overall").get("accuracy"),
            "in_domain_loss": part("in_domain").get("loss"), "in_domain_accuracy": part("in_domain").get("accuracy"),
            "ood_loss": part("ood").get("loss"), "ood_accuracy": part("ood").get("accuracy")}


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# -- summaries --------------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _cell(values: list, percent: bool = False) -> str:
    stats = _mean_std(values)
    if stats is None:
        return "–"
    mean, std = stats
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if len(values) > 1 else "")


def grouped(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["label"], str(row["budget"])), []).append(row)
    return groups


def summary_markdown(rows: list[dict], config: ExperimentConfig) -> str:
    """Mean ± std over seeds per method and budget; the full-pool run is the reference line."""
    lines = [f"# {config.name}", "",
             "Held-out response loss (mean token cross-entropy, lower is better) and answer accuracy (%), "
             "mean ± std over seeds. `full` trains on the whole pool.", ""]
    has_ood = any(r.get("ood_accuracy") is not None for r in rows)
    header = ["method", "budget", "seeds", "n_train", "loss", "accuracy"]
    if has_ood:
        header += ["in-domain loss", "in-domain acc.", "OOD loss", "OOD acc."]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (label, budget), group in grouped(rows).items():
        cells = [label, budget, str(len(group)), str(group[0].get("n_train", "")),
                 _cell([r.get("loss") for r in group]), _cell([r.get("accuracy") for r in group], True)]
        if has_ood:
            cells += [_cell([r.get("in_domain_loss") for r in group]), _cell([r.get("in_domain_accuracy") for r in group], True),
                      _cell([r.get("ood_loss") for r in group]), _cell([r.get("ood_accuracy") for r in group], True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_results(rows: list[dict], path: Path) -> None:
    """Accuracy and held-out loss against budget, one line per method, the full pool as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from s2l.fileio import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = grouped(rows)
    labels = sorted({label for label, _ in groups if label != FULL})
    for ax, metric, title, percent in ((axes[0], "accuracy", "answer accuracy (%)", True),
                                       (axes[1], "loss", "held-out response loss", False)):
        scale = 100.0 if percent else 1.0
        for label in labels:
            points = sorted((float(b), _mean_std([r.get(metric) for r in g])) for (lab, b), g in groups.items() if lab == label)
            points = [(b, s) for b, s in points if s is not None]
            if points:
                xs = [b for b, _ in points]
                ax.errorbar(xs, [s[0] * scale for _, s in points], yerr=[s[1] * scale for _, s in points],
                            marker="o", capsize=3, label=label)
        full = [s for (lab, _), g in groups.items() if lab == FULL if (s := _mean_std([r.get(metric) for r in g]))]
        if full:
            ax.axhline(full[0][0] * scale, color="black", linestyle="--", label="full pool")
        ax.set_xlabel("budget (fraction of the pool)" if all(isinstance(r["budget"], float) or r["budget"] == "all"
                                                                for r in rows) else "budget")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# -- proxy → target transfer ----------------------------------------------------------------------------------------
def transfer(proxy_run: Path, target_run: Path) -> dict:
    """Rank agreement between proxy and target trajectories on the pool: final loss and LP(1)."""
    import numpy as np
    from scipy.stats import spearmanr

    from s2l.selection.lp import epoch_columns, learning_percentage
    from s2l.trajectories.store import TrajectoryStore

    proxy, target = TrajectoryStore(proxy_run).load(), TrajectoryStore(target_run).load()
    position = {i: k for k, i in enumerate(target.ids)}
    rows = np.asarray([position.get(i, -1) for i in proxy.ids])
    keep = (rows >= 0) & proxy.usable
    keep[keep] &= target.usable[rows[keep]]
    p, t = proxy.losses[keep], target.losses[rows[keep]]

    def spearman(a, b) -> float | None:  # undefined for fewer than 3 points or a constant input
        if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return None
        return float(spearmanr(a, b).statistic)

    out = {"examples": int(keep.sum()), "final_loss_spearman": spearman(p[:, -1], t[:, -1])}
    try:
        lp_p = learning_percentage(p, *epoch_columns(proxy.snapshots, 1))
        lp_t = learning_percentage(t, *epoch_columns(target.snapshots, 1))
        ok = np.isfinite(lp_p) & np.isfinite(lp_t)
        out["lp_spearman"] = spearman(lp_p[ok], lp_t[ok])
        out["lp_examples"] = int(ok.sum())
    except InputError as e:
        out["lp_spearman"] = None
        out["lp_note"] = e.problem
    return out
