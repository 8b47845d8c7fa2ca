"""Every setting of the pipeline, defined once.

Each stage's settings are a dataclass here: its fields carry their default (from the S2L and
learning-percentage papers where they give one), their help text and their bounds, and `__post_init__`
checks them, so a bad value fails when the config is built, naming the parameter. The command line is
built from these fields (`s2l.cli_options`) and an experiment's YAML fills them by name, so a default or
a help text cannot differ between the API, the CLI and the docs.

    DataConfig        how the pool is read and tokenised        record, score, train, evaluate
    ScoreConfig       how a model scores the pool                record, score
    RecordConfig      the proxy's fine-tuning and its snapshots  record
    TrainConfig       the target's fine-tuning                   train
    EvalConfig        held-out loss and answer accuracy          evaluate
    ExperimentConfig  methods x budgets x seeds, from YAML       experiment
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2l.errors import InputError

DTYPES = ("auto", "float32", "fp32", "bf16", "bfloat16", "fp16", "float16")
PRECISIONS = ("auto", "bf16-mixed", "bf16-master", "float32")
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")
CAPTURES = ("snapshots", "in-training")
# Where a non-chat example's loss starts (s2l.data.tokenize): the papers' rule, or the two without a merged token.
BOUNDARIES = ("reference", "characters", "separate")


def setting(default: Any = dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] = (),
            choices: tuple[str, ...] | None = None, minimum: float | None = None, maximum: float | None = None,
            below: float | None = None, cli: bool = True, factory: Any = dataclasses.MISSING) -> Any:
    """A config field: its default, help text and checks in one place.

    `flags`: the command-line names (default: `--field-name`); `choices`, `minimum`, `maximum` (inclusive)
    and `below` (exclusive) are checked when the config is built; `cli=False` keeps a field off the
    command line (API and YAML only)."""
    metadata = {"help": help, "flags": flags, "choices": choices, "minimum": minimum, "maximum": maximum,
                "below": below, "cli": cli}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Settings:
    """Checks every field's declared bounds after `__init__`; subclasses add their own checks."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name), f.metadata)

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None, where: str):
        """Build from a mapping (an experiment's YAML section); errors name `where.parameter`."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(sorted(names))})",
                             parameter=where)
        hints = typing.get_type_hints(cls)
        for name, value in values.items():  # a nested section (evaluate.data) given as a mapping
            if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]):
                values[name] = hints[name].from_mapping(value, f"{where}.{name}")
        try:
            return cls(**values)
        except InputError as e:
            if e.parameter is None:
                raise
            raise InputError(e.problem, parameter=f"{where}.{e.parameter}") from None


def check_value(name: str, value: Any, metadata) -> None:
    if value is None or isinstance(value, Settings):
        return
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise InputError(f"unknown value {value!r}; choose one of {', '.join(choices)}", parameter=name)
    low, high, below = metadata.get("minimum"), metadata.get("maximum"), metadata.get("below")
    if low is None and high is None and below is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError(f"expected a number, got {value!r}", parameter=name)
    if low is not None and value < low:
        raise InputError(f"must be at least {low:g}, got {value:g}", parameter=name)
    if high is not None and value > high:
        raise InputError(f"must be at most {high:g}, got {value:g}", parameter=name)
    if below is not None and value >= below:
        raise InputError(f"must be below {below:g}, got {value:g}", parameter=name)


# -- data -------------------------------------------------------------------------------------------------
# The fields the formats read, which `--field TARGET=YOURS` can take from a field of another name.
FIELD_TARGETS = ("instruction", "input", "output", "prompt", "response", "completion", "messages", "source", "id")


def parse_fields(value: Any, parameter: str = "fields") -> dict[str, str]:
    """A field mapping as `--field` or a YAML section gives it: "target=source" strings (a list, or one), or a
    mapping {target: source}; as {target: source} in target order. Malformed items, unknown targets and a target
    given two sources are errors naming `parameter`."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items()]
    else:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"expected TARGET=FIELD items or a mapping, got {value!r}", parameter=parameter)
        items = []
        for item in value:
            target, sep, source = (str(item).partition("=") if isinstance(item, str) else ("", "", ""))
            if not sep or not target.strip() or not source.strip():
                raise InputError(f"expected TARGET=FIELD (like instruction=question), got {item!r}",
                                 parameter=parameter)
            items.append((target, source))
    mapping: dict[str, str] = {}
    for target, source in items:
        if not isinstance(target, str) or not isinstance(source, str) or not source.strip():
            raise InputError(f"expected a field name for {target!r}, got {source!r}", parameter=parameter)
        target, source = target.strip(), source.strip()
        if target not in FIELD_TARGETS:
            raise InputError(f"unknown target field {target!r}; the formats read {', '.join(FIELD_TARGETS)}",
                             parameter=parameter)
        if mapping.get(target, source) != source:
            raise InputError(f"{target} is mapped twice ({target}={mapping[target]} and {target}={source})",
                             parameter=parameter)
        mapping[target] = source
    return {t: mapping[t] for t in FIELD_TARGETS if t in mapping}


@dataclass
class DataConfig(Settings):
    """How the pool is read and tokenised (the same for record, score, train and evaluate)."""

    format: str = setting("auto", "alpaca, mathinstruct, prompt-response, chat, or auto (from the fields).",
                          choices=("auto", "alpaca", "mathinstruct", "prompt-response", "chat"))
    template: str = setting("alpaca", "Prompt template for non-chat records: alpaca (the papers'), none, a template "
                            "string with {instruction} and {input}, or a file holding one.")
    id_column: str | None = setting(None, "Column holding your example ids (default: a hash of each record).")
    split: str | None = setting(None, "Split to read from a Hub dataset or a saved DatasetDict (default: train, or "
                                "the only one).")
    # Not --config: `s2l experiment` takes a config (its YAML), and a config file is what --config says elsewhere.
    dataset_config: str | None = setting(None, "A Hub dataset's configuration (its subset on the Hub's page, e.g. main "
                                         "for openai/gsm8k), when --data is a Hub id.", flags=("--data-config",))
    fields: tuple[str, ...] = setting((), "Read a field of yours as one the formats know, TARGET=YOURS, repeatable: "
                                      "--field instruction=question --field output=answer. Targets: "
                                      + ", ".join(FIELD_TARGETS) + ".", flags=("--field",))
    max_length: int = setting(512, "Tokens per example; longer ones are truncated.", minimum=2)
    boundary: str = setting("reference", "Where the loss starts in non-chat records. reference (the papers' code): prompt "
                            "and response tokenised together, the prompt's own token count masked, so a token that "
                            "merges the prompt's last character with the response's first counts as prompt. "
                            "characters: every token touching a response character carries loss (what stores recorded "
                            "before this option used). separate: prompt and response tokenised apart, so no token "
                            "merges them (best for short answers, where that token is much of the answer). Chat "
                            "records always use the chat template's character spans.", choices=BOUNDARIES)
    strict: bool = setting(False, "Refuse a record whose prompt or response is empty (or whitespace only; in chat, "
                           "an empty assistant turn or none), naming FILE:LINE. Without it such examples are left "
                           "out: listed with their reason, counted and reported, never trained on or selected.")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fields = tuple(f"{target}={source}" for target, source in parse_fields(self.fields).items())

    @property
    def field_map(self) -> dict[str, str]:
        """The --field mapping: target name → the record's own field."""
        return parse_fields(self.fields)


# -- scoring ----------------------------------------------------------------------------------------------
@dataclass
class ScoringSettings(Settings):
    """What every loss pass shares: the weights' dtype and the batch size in tokens."""

    dtype: str = setting("float32", "Weights while scoring: float32, bf16 (faster where bfloat16 runs in hardware: "
                         "AMX or AVX512-BF16 CPUs, recent GPUs) or auto (bf16 where it does, else float32).",
                         choices=DTYPES)
    # Measured best on 2 cores (bench/score_speed.py).
    max_batch_tokens: int = setting(4096, "Padded tokens per scoring batch.", minimum=1)


@dataclass
class ScoreConfig(ScoringSettings):
    """How a model scores the pool into the store (record and score)."""

    max_batch_size: int = setting(64, "Examples per scoring batch at most.", minimum=1)
    shard_size: int = setting(4096, "Examples per store cell (the unit of resuming).", minimum=1)
    # Compiled kernels fuse differently, so bf16 losses move by up to ~0.1 nats: part of the run's identity.
    compile: bool = setting(False, "torch.compile the scorer once per run: minutes to compile, then faster passes "
                            "(worth it from tens of thousands of examples; see docs/benchmarks.md).")
    # A column more in every cell: part of the run's identity.
    ifd: bool = setting(False, "Also score every response alone, without its prompt, at each snapshot (the loss_alone "
                        "column), for the ifd method (instruction-following difficulty; docs/benchmarks.md: its cost). "
                        "In-training visit columns have none.")


# -- training ---------------------------------------------------------------------------------------------
@dataclass
class OptimizationConfig(Settings):
    """Fine-tuning shared by the proxy (record) and the target (train); defaults from both papers:
    AdamW, 3 epochs, learning rate 2e-5, cosine schedule with 3% warm-up."""

    epochs: int = setting(3, "Passes over the data.", minimum=1)
    learning_rate: float = setting(2e-5, "Peak learning rate (AdamW).", flags=("--learning-rate", "--lr"))
    # The S2L reference: 4 per device x 8 accumulation x 4 GPUs; the LP reference's README the same.
    batch_size: int = setting(128, "Examples per optimizer step (the papers' effective batch).", minimum=1)
    micro_batch_size: int = setting(8, "Examples per forward pass: a step's batch is split into micro-batches of "
                                    "this size and their gradients summed (it bounds memory; the step is the same "
                                    "up to rounding).", minimum=1)
    warmup_ratio: float = setting(0.03, "Share of all optimizer steps spent warming up, rounded up.", minimum=0,
                                  below=1)
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay.", minimum=0)
    max_grad_norm: float = setting(1.0, "Gradient clipping; 0 turns it off.", minimum=0)
    # bf16 without hardware support is emulated, 25x slower than float32 (s2l.models.bf16_is_native).
    precision: str = setting("auto", "Training arithmetic: bf16-mixed (float32 weights, bfloat16 autocast), "
                             "bf16-master (bfloat16 weights for the passes, a float32 copy that AdamW updates), "
                             "float32, or auto: bf16-mixed where bfloat16 runs in hardware (AMX or AVX512-BF16 "
                             "CPUs, recent GPUs), float32 elsewhere. The run's manifest records the one used.",
                             choices=PRECISIONS)
    # Measured in float32 (docs/benchmarks.md): the same speed on both models, Gemma's peak RSS 7.65 -> 6.34 GiB.
    # The same losses, gradients equal up to rounding; part of a run's identity when on (--no-chunked-loss
    # resumes a store recorded before it was the default).
    chunked_loss: bool = setting(True, "Project to the vocabulary and take the cross-entropy a chunk of positions at "
                                 "a time, the vocabulary's gradients made while each chunk's logits are held: never "
                                 "the whole micro-batch's float32 logits in memory.",
                                 flags=("--chunked-loss/--no-chunked-loss",))
    # Compiled kernels fuse differently, so losses move by rounding: part of the run's identity.
    compile_training: bool = setting(False, "torch.compile the transformer body for training (inductor, dynamic "
                                     "shapes): minutes to compile, then faster steps (see docs/benchmarks.md).")
    # The same update up to rounding; fused is 5-9x faster on a CPU's 135M parameters.
    optim: str = setting("adamw_torch_fused", "adamw_torch_fused (one kernel) or adamw_torch (a loop over tensors: "
                         "what stores recorded before this option used).", choices=OPTIMIZERS)
    seed: int = setting(0, "Seed for the batch order and any random initialisation.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.learning_rate <= 0:
            raise InputError(f"must be positive, got {self.learning_rate}", parameter="learning_rate")


@dataclass
class RecordConfig(OptimizationConfig):
    """The proxy's fine-tuning and the snapshots at which the pool is scored."""

    snapshots: int = setting(12, "Snapshots spread evenly over training, besides the base model (snapshot 0).",
                             minimum=1)
    epoch_snapshots: bool = setting(True, "Also snapshot every epoch end (learning percentage needs them).",
                                    flags=("--epoch-snapshots/--no-epoch-snapshots",))
    keep_checkpoints: bool = setting(False, "Also write the weights at every snapshot (a Hugging Face folder each).")
    resume_state: bool = setting(True, "Save the training state at each snapshot so an interrupted run can resume.",
                                 cli=False)
    capture: str = setting("snapshots", "snapshots: score the whole pool at every snapshot (the papers'). "
                           "in-training: keep each example's loss from the training pass at each epoch's visit, plus "
                           "a pass before and after training (--snapshots does not apply).", choices=CAPTURES)
    fsdp: bool = setting(False, "Under torchrun/accelerate: shard the proxy's weights, gradients and optimizer "
                         "state over the processes (FSDP) instead of a copy on each.")


@dataclass
class TrainConfig(OptimizationConfig):
    """The target's fine-tuning on a (selected) subset, with record's tokenisation and loss."""

    lr_scheduler: str = setting("cosine", "Any transformers scheduler name: linear, cosine, "
                                "constant_with_warmup, ...")
    lora: bool = setting(False, "Train LoRA adapters (PEFT) instead of all weights (a learning rate like 2e-4 "
                         "is the usual choice then).")
    lora_r: int = setting(16, "LoRA rank.", minimum=1)
    lora_alpha: int = setting(32, "LoRA scaling numerator.")
    lora_dropout: float = setting(0.05, "Dropout on the LoRA path.", minimum=0, below=1)
    lora_target_modules: str = setting("all-linear", "all-linear, or comma-separated module names like q_proj,v_proj.")
    save_merged: bool = setting(True, "LoRA: also merge the adapter and save a plain model (the adapter stays in "
                                "adapter/).", flags=("--merge/--no-merge",))
    logging_steps: int = setting(10, "Optimizer steps between log lines (every step's loss goes to "
                                 "s2l_train_log.jsonl regardless).", minimum=1)
    resume: bool = setting(False, "Checkpoint every --save-steps and continue an interrupted run.")
    save_steps: int = setting(500, "Optimizer steps between checkpoints, with --resume.", minimum=1)
    data: DataConfig = setting(help="How the data is read and tokenised.", factory=DataConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora and not self.lora_target_modules.strip():
            raise InputError("names no module", parameter="lora_target_modules")
        from transformers.trainer_utils import SchedulerType

        known = [m.value for m in SchedulerType]
        if self.lr_scheduler not in known:
            raise InputError(f"unknown value {self.lr_scheduler!r}; choose one of {', '.join(known)}",
                             parameter="lr_scheduler")


# -- evaluation -------------------------------------------------------------------------------------------
@dataclass
class EvalConfig(ScoringSettings):
    """Held-out response loss, and answer accuracy from greedy generation."""

    max_new_tokens: int = setting(256, "Generation length for answer accuracy.", minimum=1)
    # 64: rows that finish leave the batch, and each decoding step reads all the weights once whatever the batch,
    # so a row costs a third of what it does in a batch of 16 (Gemma-3-270M on a CPU; docs/benchmarks.md).
    batch_size: int = setting(64, "Prompts per generation batch.", minimum=1)
    generate: bool = setting(True, "Generate answers and score them (off: held-out loss only).",
                             flags=("--generate/--no-generate",))
    limit: int | None = setting(None, "Evaluate the first N examples only.", minimum=1)
    data: DataConfig = setting(help="How the test split is read and tokenised.", factory=DataConfig)


# -- experiments ------------------------------------------------------------------------------------------
FULL = "full"  # the method name of training on the whole pool


@dataclass
class MethodSpec:
    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    budgets: list[float | int] | None = None  # this method's budgets instead of the experiment's


@dataclass
class TestSet:
    """One test file of an experiment, every cell evaluated on it (loss, and accuracy when it generates)."""

    name: str
    path: Path
    sources: list[str] | None = None  # only the rows of these sources (one file can hold several sets)
    settings: dict[str, Any] = field(default_factory=dict)  # `evaluate` settings for this set only


@dataclass
class Cell:
    method: MethodSpec
    budget: float | int | None  # None for the full pool
    seed: int

    @property
    def key(self) -> str:
        budget = "all" if self.budget is None else f"b{self.budget}"
        return f"{self.method.label}/{budget}-s{self.seed}"


@dataclass
class ExperimentConfig:
    """An experiment's YAML file: the data, the proxy and target with their stages' settings (the
    dataclasses above, by field name), the methods, budgets and seeds."""

    name: str
    root: Path  # the config file's folder: relative input paths start here
    out: Path
    data: dict[str, Any]
    proxy: dict[str, Any]
    target: dict[str, Any]
    evaluate: dict[str, Any]
    methods: list[MethodSpec]
    budgets: list[float | int]
    seeds: dict[str, list[int]]
    keep_models: bool = False
    # method label → the labels it is also compared with, item by item at each budget both have, beside random
    # and the full pool (`compare: {s2l: [source-random]}`: does S2L beat what balancing the sources alone buys?)
    compare: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, out: str | Path | None = None) -> "ExperimentConfig":
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError("no such config file", path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            raise InputError(f"not valid YAML: {getattr(e, 'problem', e)}", path, None if line is None else line + 1) from None
        if not isinstance(raw, dict):
            raise InputError("the config must be a mapping of settings", path)
        known = {"name", "out", "data", "proxy", "target", "evaluate", "methods", "budgets", "seeds", "keep_models",
                 "compare"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"unknown settings {', '.join(unknown)} (known: {', '.join(sorted(known))})", path)
        for required in ("data", "proxy", "target", "methods", "budgets"):
            if required not in raw:
                raise InputError(f"missing setting {required!r}", path)
        name = str(raw.get("name") or path.stem)
        seeds = raw.get("seeds", {"default": [0]})
        if isinstance(seeds, list):
            seeds = {"default": seeds}
        seeds = {str(k): [int(s) for s in (v if isinstance(v, list) else [v])] for k, v in seeds.items()}
        seeds.setdefault("default", [0])
        config = cls(
            name=name, root=path.parent.resolve(), out=Path(out or raw.get("out") or Path("runs") / name),
            data=dict(raw["data"]), proxy=dict(raw["proxy"]), target=dict(raw["target"]),
            evaluate=dict(raw.get("evaluate") or {}), methods=[_method_spec(m, path) for m in raw["methods"]],
            budgets=[_budget(b, path) for b in raw["budgets"]], seeds=seeds, keep_models=bool(raw.get("keep_models")),
        )
        labels = [m.label for m in config.methods]
        if len(set(labels)) != len(labels):
            raise InputError(f"method labels repeat ({', '.join(labels)}); give variants a `label`", path)
        config.compare = _comparisons(raw.get("compare"), config, path)
        for part in ("proxy", "target"):
            if "model" not in getattr(config, part):
                raise InputError(f"missing setting {part}.model", path)
        return config

    def input_path(self, value: str | Path) -> Path:
        value = Path(value)
        return value if value.is_absolute() else self.root / value

    def seeds_of(self, method: MethodSpec) -> list[int]:
        return self.seeds.get(method.label, self.seeds.get(method.name, self.seeds["default"]))

    def cells(self) -> list[Cell]:
        """Every (method, budget, seed), smallest budget first: the full pool, then every method at the smallest
        budget (each method's first seed, then every method's second, ...), then the next budget. An interrupted
        run has the comparison at the smallest budget complete, with its seeds, before it starts the next."""
        cells = []
        for order, method in enumerate(self.methods):
            budgets = [None] if method.name == FULL else (method.budgets or self.budgets)
            for rank, seed in enumerate(self.seeds_of(method)):
                cells += [(-1.0 if b is None else float(b), rank, order, Cell(method, b, seed)) for b in budgets]
        return [cell for *_, cell in sorted(cells, key=lambda c: c[:3])]

    # Each stage's settings, built (and so checked) from the YAML sections.
    def record_config(self, role: str) -> RecordConfig:
        return RecordConfig.from_mapping(getattr(self, role).get("record"), f"{role}.record")

    def score_config(self, role: str) -> ScoreConfig:
        return ScoreConfig.from_mapping(getattr(self, role).get("score"), f"{role}.score")

    def data_config(self, role: str) -> DataConfig:
        return DataConfig.from_mapping(getattr(self, role).get("data"), f"{role}.data")

    def train_config(self, seed: int | None = None) -> TrainConfig:
        """The target's training; `seed` (a cell's) unless the YAML sets one."""
        values = dict(self.target.get("train") or {})
        if seed is not None:
            values.setdefault("seed", seed)
        return TrainConfig.from_mapping({**values, "data": self.data_config("target")}, "target.train")

    def eval_config(self, test: "TestSet | None" = None) -> EvalConfig:
        """The `evaluate` section, with a test set's own settings (its generation cap, say) on top."""
        if test is None or not test.settings:
            return EvalConfig.from_mapping(self.evaluate, "evaluate")
        return EvalConfig.from_mapping({**self.evaluate, **test.settings}, f"data.tests.{test.name}")

    def test_sets(self) -> list["TestSet"]:
        """`data.tests` (name → a path, or {path, sources, and any `evaluate` setting}), or `data.test` as one
        set named `test`. Paths are relative to the generated data folder when the data is generated, else
        to the config's folder."""
        tests = self.data.get("tests")
        if tests is None:
            if "test" not in self.data and "generate" not in self.data:
                raise InputError("missing setting data.tests (or data.test)", parameter="data")
            tests = {"test": self.data.get("test", "test.jsonl")}
        if not isinstance(tests, dict) or not tests:
            raise InputError("data.tests must map test set names to files", parameter="data.tests")
        base = self.out / "data" if "generate" in self.data else self.root
        out = []
        for name, spec in tests.items():
            spec = {"path": spec} if isinstance(spec, (str, Path)) else dict(spec or {})
            if "path" not in spec:
                raise InputError("a test set needs a path", parameter=f"data.tests.{name}")
            path = Path(spec.pop("path"))
            sources = spec.pop("sources", None)
            if sources is not None and (not isinstance(sources, list) or not all(isinstance(x, str) for x in sources)):
                raise InputError("sources must be a list of source names", parameter=f"data.tests.{name}.sources")
            out.append(TestSet(str(name), path if path.is_absolute() else base / path, sources, spec))
        for test in out:
            self.eval_config(test)  # a misspelt setting fails now
        return out


def _method_spec(value: Any, path: Path) -> MethodSpec:
    if isinstance(value, str):
        return MethodSpec(value, value)
    if isinstance(value, dict) and "name" in value:
        unknown = sorted(set(value) - {"name", "label", "params", "budgets"})
        if unknown:
            raise InputError(f"method {value['name']!r}: unknown keys {', '.join(unknown)} (known: name, label, "
                             "params, budgets)", path)
        budgets = value.get("budgets")
        return MethodSpec(str(value["name"]), str(value.get("label") or value["name"]), dict(value.get("params") or {}),
                          None if budgets is None else [_budget(b, path) for b in budgets])
    raise InputError(f"a method is a name or {{name, label, params, budgets}}, got {value!r}", path)


def _comparisons(value: Any, config: "ExperimentConfig", path: Path) -> dict[str, list[str]]:
    """`compare`: {label: label or [labels]}, every one a method of the experiment that shares a budget with it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"compare: a mapping of method label to the labels it is compared with, got {value!r}", path)
    methods = {m.label: m for m in config.methods}
    out = {}
    for method, others in value.items():
        others = list(dict.fromkeys(str(o) for o in (others if isinstance(others, list) else [others])))
        for label in (str(method), *others):
            if label not in methods:
                raise InputError(f"compare: {label!r} is not a method label (labels: {', '.join(methods)})", path)
            if methods[label].name == FULL:
                raise InputError(f"compare: {label!r} trains on the whole pool; every method is already compared "
                                 "with it (Δ full)", path)
        if str(method) in others:
            raise InputError(f"compare: {method!r} is compared with itself", path)
        budgets = set(methods[str(method)].budgets or config.budgets)
        for other in others:
            if not budgets & set(methods[other].budgets or config.budgets):
                raise InputError(f"compare: {method!r} and {other!r} have no budget in common", path)
        out[str(method)] = others
    return out


def _budget(value: Any, path: Path) -> float | int:
    from s2l.selection.base import parse_budget

    try:
        return parse_budget(value)
    except InputError as e:
        raise InputError(f"budgets: {e.problem}", path) from None
