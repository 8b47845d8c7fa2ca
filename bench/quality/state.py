"""Keep a long `s2l experiment` run's finished work in the repository, so that a session on a new machine
(where `runs/` is gone) resumes the run instead of starting it again.

    .venv/bin/python bench/quality/state.py save bench/quality/real-cpu/real-cpu.yaml     # after a step finishes
    .venv/bin/python bench/quality/state.py restore bench/quality/real-cpu/real-cpu.yaml  # new machine, before the run
    .venv/bin/python bench/quality/state.py watch bench/quality/real-cpu/real-cpu.yaml --commit &  # beside the run

`watch` saves whenever the run has finished something new (polling every --every seconds, at low priority) and,
with --commit, commits the state folder, and only it, each time: a session cut off mid-run loses at most the
step under way.

The state lives beside the config, in `state/<config name>/`. It holds what the run's completion markers need
to skip finished work: trajectory stores recorded to the end, each cell's selection, its evaluations
(metrics.json and predictions.jsonl) and metrics.json, and transfer.json. It leaves out what is large or
regenerated: trained models and training states (a started cell trains again), the generated data and test
files (the seeded builder writes them again; `state.json` keeps their SHA-256, and `restore` checks them),
locks and half-written files. Nothing here changes a number the run produces.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from s2l.config import ExperimentConfig
from s2l.errors import InputError
from s2l.experiment import Experiment
from s2l.fileio import building_directory, sha256_file, write_json_atomic


def state_dir(config_path: Path) -> Path:
    return config_path.parent / "state" / config_path.stem


def _inputs(experiment: Experiment) -> dict[str, Path]:
    """The generated files a restored run reads, by their path under the run's folder."""
    files = [experiment.pool] + [experiment.test_file(t) for t in experiment.config.test_sets()]
    return {str(f.relative_to(experiment.out)): f for f in files if f.is_relative_to(experiment.out)}


def kept_files(experiment: Experiment) -> list[Path]:
    """The finished work under the run's folder, each file relative to it."""
    out, kept = experiment.out, []
    for role in ("proxy", "target"):
        if experiment._recorded(role):
            store = out / f"{role}-run"
            kept += [p for p in store.rglob("*") if p.is_file() and not p.name.startswith(".")
                     and not any(part.startswith(("train_state-", "checkpoints")) for part in p.relative_to(store).parts)]
    for cell in experiment.config.cells():
        folder = experiment.cell_dir(cell)
        if (folder / "selection" / "manifest.json").is_file():
            kept += [p for p in (folder / "selection").iterdir() if p.is_file() and not p.name.startswith(".")]
        for test in experiment.config.test_sets():
            done = experiment.eval_dir(cell, test)
            if (done / "metrics.json").is_file():
                kept += [done / "metrics.json", done / "predictions.jsonl"]
        if (folder / "metrics.json").is_file():
            kept.append(folder / "metrics.json")
    if (out / "transfer.json").is_file():
        kept.append(out / "transfer.json")
    return [p.relative_to(out) for p in kept]


def save(experiment: Experiment, state: Path) -> int:
    files = kept_files(experiment)
    inputs = {name: sha256_file(path) for name, path in _inputs(experiment).items() if path.is_file()}
    with building_directory(state) as tmp:  # the old state stays whole until the new one is complete
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(experiment.out / name, tmp / name)
        write_json_atomic(tmp / "state.json", {"run": str(experiment.out), "files": len(files), "inputs": inputs})
    return len(files)


def restore(experiment: Experiment, state: Path) -> int:
    """Copy the saved files the run's folder lacks (a file already there is kept), then regenerate the data
    and check it is what the saved work was made from."""
    record = json.loads((state / "state.json").read_text(encoding="utf-8"))
    copied = 0
    for path in sorted(state.rglob("*")):
        name = path.relative_to(state)
        if path.is_file() and name != Path("state.json") and not (experiment.out / name).exists():
            (experiment.out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, experiment.out / name)
            copied += 1
    experiment._generate_data()
    experiment._write_test_files()
    for name, digest in record["inputs"].items():
        found = experiment.out / name
        if not found.is_file() or sha256_file(found) != digest:
            raise InputError(f"the regenerated {name} differs from the one the saved work was made from; "
                             f"the saved cells cannot be resumed on it", found)
    return copied


def commit_state(state: Path, message: str) -> bool:
    """Commit the state folder alone (other staged changes stay staged); False where nothing was committed
    (nothing new, or git refused: a concurrent commit's lock, say; the next save tries again)."""
    state = state.resolve()
    for command in (["git", "add", "--", str(state)], ["git", "commit", "-q", "-m", message, "--", str(state)]):
        done = subprocess.run(command, cwd=state, capture_output=True, text=True)
        if done.returncode != 0:
            if done.stderr.strip():
                print(f"{' '.join(command[:2])} failed: {done.stderr.strip().splitlines()[-1]}", file=sys.stderr)
            return False
    return True


def watch(experiment: Experiment, state: Path, every: float = 120.0, commit: bool = False,
          rounds: int | None = None) -> int:
    """Save (and with `commit`, commit) each time the run's finished work changes; `rounds` polls that many
    times (None: until interrupted). Returns the number of saves."""
    saved_set, saves, polls = None, 0, 0
    while rounds is None or polls < rounds:
        if polls:
            time.sleep(every)
        polls += 1
        finished = set(kept_files(experiment))
        if finished == saved_set:
            continue
        count = save(experiment, state)
        saved_set, saves = finished, saves + 1
        cells = experiment.status()["finished"]  # the run's own completion markers
        message = f"{experiment.config.name}: state saved, {cells} cells finished"
        committed = commit and commit_state(state, message)
        print(f"{time.strftime('%H:%M:%S')} saved {count} files ({cells} cells finished)"
              + (", committed" if committed else ""), flush=True)
    return saves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("save", "restore", "watch"))
    parser.add_argument("config", type=Path)
    parser.add_argument("--every", type=float, default=120.0, help="watch: seconds between polls (default: 120)")
    parser.add_argument("--commit", action="store_true", help="watch: git-commit the state folder after each save")
    parser.add_argument("--rounds", type=int, default=None, help="watch: stop after this many polls (default: never)")
    args = parser.parse_args()
    experiment = Experiment(ExperimentConfig.load(args.config))
    state = state_dir(args.config)
    try:
        if args.action == "watch":
            os.nice(10)  # the run beside it keeps the CPUs
            watch(experiment, state, args.every, args.commit, args.rounds)
        elif args.action == "save":
            print(f"saved {save(experiment, state)} files of {experiment.out} to {state}")
        elif not (state / "state.json").is_file():
            print(f"no saved state at {state}: nothing to restore")
        else:
            print(f"restored {restore(experiment, state)} files from {state} to {experiment.out}")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # how a watch ends
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
