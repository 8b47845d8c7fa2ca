"""`s2l experiment CONFIG.yaml`: the papers' comparison in one resumable run.

    1. (optionally) generate the pool and test files with a script
    2. record the proxy's trajectories once
    3. for every (method, budget, seed), the full pool and then the smallest budget first (`ExperimentConfig.cells`):
       select, train the target on the subset (or on the full pool: the reference line), evaluate it on every
       test set
    4. once the smallest budget is done, the target's own trajectories (for proxy→target transfer), when asked for
    5. the analysis (`s2l.comparison`): results.csv (one row per cell and test set), summary.csv and
       results.md (each method against random at its budget and against the full pool, paired bootstrap
       intervals over test items and seeds; the random-equivalent fraction; the cost side), results.png

Every step leaves a completion marker (a finished store, a selection manifest, a trained model's
manifest, metrics.json), so running the command again after a crash skips what is done, and
`--analyze` rewrites the results from the finished cells alone. Trained models are deleted once
evaluated unless `keep_models: true` (a 270M model is 1 GB in float32).

A config (paths relative to the config file, or to the generated data folder for test files of
generated data; `out` relative to where the command runs):

    name: quality-cpu
    out: runs/quality-cpu
    data:
      generate: {script: ../../examples/make_math_pool.py, args: {size: 600, test-size: 200}}
      # or: pool: pool.jsonl, test: test.jsonl
      tests:                  # optional: several test sets, each with its own `evaluate` settings
        in_domain: {path: test/in_domain.jsonl, generate: false}
        easy: {path: test/in_domain.jsonl, sources: [mawps], max_new_tokens: 32}
    proxy:  {model: smollm2-135m-instruct, record: {epochs: 3, snapshots: 6}, score: {dtype: bf16}}
    target: {model: gemma-3-270m, train: {epochs: 3, learning_rate: 2e-5}, trajectories: true}
    evaluate: {max_new_tokens: 64}
    methods: [full, {name: random, budgets: [0.1, 0.3, 0.5]}, {name: s2l, params: {n_clusters: 10}}]
    budgets: [0.1, 0.3]
    seeds: {default: [0], random: [0, 1, 2], s2l: [0, 1, 2]}
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from s2l.config import FULL, Cell, ExperimentConfig, MethodSpec, TestSet  # noqa: F401  (MethodSpec: the API's)
from s2l.errors import InputError
from s2l.fileio import directory_lock, remove_leftovers, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

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

    def test_file(self, test: TestSet) -> Path:
        """The file a test set is evaluated on: its own, or its rows of the named sources (written at the start)."""
        return test.path if test.sources is None else self.out / "tests" / f"{test.name}.jsonl"

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.key

    def eval_dir(self, cell: Cell, test: TestSet) -> Path:
        return self.cell_dir(cell) / "eval" / test.name

    def _finished(self, cell: Cell) -> bool:
        return (self.cell_dir(cell) / "metrics.json").is_file()

    def _recorded(self, role: str) -> bool:
        """Whether `role`'s trajectories are recorded to the end (a killed recording leaves its store incomplete)."""
        from s2l.trajectories.store import TrajectoryStore

        out = self.out / f"{role}-run"
        return (out / "manifest.json").is_file() and bool(TrajectoryStore(out).manifest.get("complete"))

    def check(self) -> None:
        """Build every settings object now, so a typo fails in a second rather than after hours."""
        from s2l.selection import make_selector

        for role in ("proxy", "target"):
            self.config.record_config(role), self.config.score_config(role), self.config.data_config(role)
        self.config.train_config()
        self.config.eval_config()
        self.config.test_sets()
        for method in self.config.methods:
            if method.name != FULL:
                make_selector(method.name, **method.params)

    def run(self, only: str | None = None) -> list[dict]:
        """Every step not finished yet. `only`: a pattern of cell keys (`full/*`, `random/b0.1-*`; shell-style) to
        run those cells alone, in their usual order; the others wait for a later run, and the results hold every
        cell finished so far. So a session that has time for one long cell can run it first."""
        started = time.perf_counter()
        self.check()
        cells = self.config.cells()
        chosen = cells if only is None else [c for c in cells if fnmatch.fnmatchcase(c.key, only)]
        if not chosen:
            raise InputError(f"no cell matches {only!r} (the cells: {', '.join(c.key for c in cells)})",
                             parameter="only")
        with directory_lock(self.out):  # one experiment per output directory
            remove_leftovers(self.out)  # half-written files and folders of a killed run (we hold the lock)
            return self._run(started, chosen)

    def analyze(self) -> list[dict]:
        """Rewrite the results from the cells finished so far; nothing is recorded, trained or evaluated."""
        self.check()
        with directory_lock(self.out):
            done = [cell for cell in self.config.cells() if self._finished(cell)]
            rows = [self._finished_row(cell) for cell in done]
            self._write_results(rows)
            return rows

    def status(self) -> dict:
        """Where the run stands, read from its completion markers alone: safe beside a running experiment (it
        takes no lock and writes nothing). Each cell is `finished`, `started` (with what is done) or `pending`;
        `estimate_seconds` is the time the unfinished cells would take at the finished ones' rates (training
        seconds per trained example, evaluation seconds per cell), the target's trajectories not counted."""
        cells, finished, left = [], [], []
        for cell in self.config.cells():
            entry: dict[str, Any] = {"key": cell.key, "state": "pending", "done": []}
            if self._finished(cell):
                row = self._finished_row(cell)
                finished.append(row)
                entry.update(state="finished", train_seconds=row["train_seconds"], eval_seconds=row["eval_seconds"])
            else:
                left.append(cell)
                if self.cell_dir(cell).is_dir():
                    entry.update(state="started", done=self._steps_done(cell))
            cells.append(entry)
        return {"out": str(self.out), "proxy_recorded": self._recorded("proxy"),
                "target_asked": bool(self.config.target.get("trajectories")), "target_recorded": self._recorded("target"),
                "transfer": (self.out / "transfer.json").is_file(), "cells": cells,
                "finished": len(finished), "estimate_seconds": self._estimate(finished, left)}

    def _steps_done(self, cell: Cell) -> list[str]:
        """What a started cell has finished, from the markers each step leaves."""
        from s2l.training import MANIFEST, saved_step

        folder = self.cell_dir(cell)
        done = ["selected"] if (folder / "selection" / "manifest.json").is_file() else []
        if (folder / "model" / MANIFEST).is_file():
            done.append("trained")
        elif (step := saved_step(folder / "model")) is not None:
            done.append(f"training saved at step {step}")
        return done + [f"evaluated {t.name}" for t in self.config.test_sets()
                       if (self.eval_dir(cell, t) / "metrics.json").is_file()]

    def _estimate(self, finished: list[dict], left: list[Cell]) -> float | None:
        """Seconds the `left` cells would take at the finished cells' rates; None before a subset's cell has
        finished."""
        from s2l.selection.base import resolve_budget

        subsets = [r for r in finished if r["budget"] != "all" and r.get("n_train")]
        if not subsets:
            return None
        per_example = sum(r["train_seconds"] for r in subsets) / sum(r["n_train"] for r in subsets)
        per_eval = sum(r["eval_seconds"] for r in finished) / len(finished)
        pool = next((r["n_train"] for r in finished if r["budget"] == "all"), None)
        if pool is None:
            pool = sum(1 for line in self.pool.open("rb") if line.strip()) if self.pool.is_file() else 0
        return sum(per_eval + per_example * (pool if c.budget is None else resolve_budget(c.budget, pool)) for c in left)

    def _run(self, started: float, chosen: list[Cell]) -> list[dict]:
        self._generate_data()
        self._write_test_files()
        cells = self.config.cells()
        # The full pool's cell reads no trajectory: a run of it alone records none.
        needs_proxy = any(c.budget is not None for c in chosen)
        proxy_run = self._record("proxy", self.config.proxy) if needs_proxy else self.out / "proxy-run"
        smallest = min((float(c.budget) for c in cells if c.budget is not None), default=None)
        rows = []
        for position, cell in enumerate(cells, 1):
            if cell not in chosen:
                if self._finished(cell):  # another run's: kept in the results
                    rows.append(self._finished_row(cell))
                continue
            if cell.budget is not None and float(cell.budget) > smallest:  # the smallest budget's cells are done
                self._target_trajectories(proxy_run)
            rows.append(self._run_cell(cell, proxy_run, f"{position} of {len(cells)}"))
            self._write_results(rows)
            self._print_row(rows[-1])
        if needs_proxy:
            self._target_trajectories(proxy_run)
        self._write_results(rows)
        log.info(f"experiment done in {time.perf_counter() - started:.0f} s: {self.out / 'results.md'}")
        return rows

    def _target_trajectories(self, proxy_run: Path) -> None:
        """The target's own trajectories on the pool, for proxy→target rank agreement (transfer.json)."""
        if self.config.target.get("trajectories") and not (self.out / "transfer.json").is_file():
            target_run = self._record("target", self.config.target)
            write_json_atomic(self.out / "transfer.json", transfer(proxy_run, target_run))

    def _generate_data(self) -> None:
        generate = self.config.data.get("generate")
        if not generate or (self.pool.is_file() and all(t.path.is_file() for t in self.config.test_sets())):
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

    def _write_test_files(self) -> None:
        """Each test set limited to some sources gets its own file of those rows, so it is evaluated alone."""
        from s2l.data.readers import read_records

        for test in self.config.test_sets():
            if not test.path.is_file():
                raise InputError("no such test file", test.path)
            if test.sources is None or self.test_file(test).is_file():
                continue
            wanted = set(test.sources)
            # The readers' own errors (a bad line names its file and line); each row kept as it was written.
            kept = [r.raw + b"\n" for r in read_records(test.path) if r.data.get("source") in wanted]
            if not kept:
                raise InputError(f"test set {test.name!r}: no row has a source in {sorted(wanted)}", test.path)
            write_bytes_atomic(self.test_file(test), b"".join(kept))

    def _record(self, role: str, spec: dict[str, Any]) -> Path:
        from s2l.trajectories.record import record

        out = self.out / f"{role}-run"
        if self._recorded(role):
            return out
        log.info(f"recording the {role}'s trajectories ({spec['model']})")
        record(self.pool, spec["model"], out, self.config.record_config(role), data_config=self.config.data_config(role),
               score_config=self.config.score_config(role), device=self.device, show_progress=self.show_progress)
        return out

    def _finished_row(self, cell: Cell) -> dict:
        return json.loads((self.cell_dir(cell) / "metrics.json").read_text(encoding="utf-8"))["row"]

    def _run_cell(self, cell: Cell, proxy_run: Path, position: str) -> dict:
        folder = self.cell_dir(cell)
        metrics_path = folder / "metrics.json"
        if metrics_path.is_file():  # finished before: skip
            return self._finished_row(cell)
        log.info(f"cell {cell.key} ({position})")
        row: dict[str, Any] = {"key": cell.key, "label": cell.method.label, "method": cell.method.name,
                               "budget": "all" if cell.budget is None else cell.budget, "seed": cell.seed}
        subset, row["select_seconds"] = self._select(cell, proxy_run, folder)
        model_dir = folder / "model"
        row["train_seconds"], row["train"] = self._train(cell, subset, model_dir)
        row["n_train"] = row["train"]["n_trained"]
        row["eval_seconds"], row["tests"] = 0.0, {}
        for test in self.config.test_sets():
            metrics, seconds = self._evaluate(model_dir, test, self.eval_dir(cell, test))
            row["eval_seconds"] += seconds
            row["tests"][test.name] = {part: metrics.get(part) for part in ("overall", "in_domain", "ood", "by_source")}
        write_json_atomic(metrics_path, {"row": row})
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

    def _train(self, cell: Cell, subset: Path, model_dir: Path) -> tuple[float, dict]:
        """Train (or find trained) the target; its wall seconds and what the cost analysis needs."""
        from s2l.training import MANIFEST, train

        marker = model_dir / MANIFEST
        if not marker.is_file():
            train(subset, self.config.target["model"], model_dir, self.config.train_config(seed=cell.seed),
                  device=self.device, show_progress=self.show_progress, overwrite=True)
        manifest = json.loads(marker.read_text(encoding="utf-8"))
        summary = {k: manifest.get(k) for k in ("n_trained", "input_tokens", "response_tokens", "steps", "excluded")}
        summary["epochs"] = manifest["job"]["config"]["epochs"]
        return round(manifest.get("wall_seconds", 0.0), 1), summary

    def _evaluate(self, model_dir: Path, test: TestSet, out: Path) -> tuple[dict, float]:
        from s2l.evaluation import evaluate

        if (out / "metrics.json").is_file():  # this test set was done before the run was stopped
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            return metrics, metrics.get("seconds", 0.0)
        started = time.perf_counter()
        metrics = evaluate(model_dir, self.test_file(test), self.config.eval_config(test), out=out / "metrics.json",
                           device=self.device, show_progress=self.show_progress)
        return metrics, round(time.perf_counter() - started, 1)

    # -- results --------------------------------------------------------------------------------------------
    def _write_results(self, rows: list[dict]) -> None:
        from s2l.experiment_report import write_results

        write_results(self, rows)

    def _print_row(self, row: dict) -> None:
        parts = []
        for name, metrics in row["tests"].items():
            overall = metrics["overall"]
            acc = overall.get("accuracy")
            parts.append(f"{name}: loss {_fmt(overall.get('loss'))}" + ("" if acc is None else f" acc {acc:.3f}"))
        log.info(f"  {row['label']:<16} budget {str(row['budget']):<5} seed {row['seed']} (n_train {row.get('n_train')}): "
                 + "; ".join(parts))


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)

# -- proxy → target transfer ----------------------------------------------------------------------------------------
def transfer(proxy_run: Path, target_run: Path) -> dict:
    """Rank agreement between proxy and target trajectories on the pool: final loss and LP(1), each Spearman's
    correlation with its 95% bootstrap interval over the pool's examples."""
    import numpy as np

    from s2l.comparison import rank_agreement
    from s2l.selection.lp import epoch_columns, learning_percentage
    from s2l.trajectories.store import TrajectoryStore

    proxy, target = TrajectoryStore(proxy_run).load(), TrajectoryStore(target_run).load()
    position = {i: k for k, i in enumerate(target.ids)}
    rows = np.asarray([position.get(i, -1) for i in proxy.ids])
    keep = (rows >= 0) & proxy.usable
    keep[keep] &= target.usable[rows[keep]]
    p, t = proxy.losses[keep], target.losses[rows[keep]]

    def agreement(name: str, a: np.ndarray, b: np.ndarray) -> dict:
        found = rank_agreement(a, b)
        if found is None:  # undefined for fewer than 3 points or a constant input
            return {f"{name}_spearman": None}
        return {f"{name}_spearman": found.estimate, f"{name}_spearman_ci95": [found.low, found.high]}

    out = {"examples": int(keep.sum()), **agreement("final_loss", p[:, -1], t[:, -1])}
    try:
        lp_p = learning_percentage(p, *epoch_columns(proxy.snapshots, 1))
        lp_t = learning_percentage(t, *epoch_columns(target.snapshots, 1))
        ok = np.isfinite(lp_p) & np.isfinite(lp_t)
        out.update(agreement("lp", lp_p[ok], lp_t[ok]))
        out["lp_examples"] = int(ok.sum())
    except InputError as e:
        out["lp_spearman"] = None
        out["lp_note"] = e.problem
    return out
