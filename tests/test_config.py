"""Settings defined once: every config field carries its help and bounds, a bad value fails naming the
parameter (as its flag on the command line), and the CLI's options are the fields themselves."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from s2l.cli import app
from s2l.config import (DataConfig, EvalConfig, ExperimentConfig, RecordConfig, ScoreConfig, Settings, TrainConfig)
from s2l.errors import InputError

CONFIGS = (DataConfig, ScoreConfig, RecordConfig, TrainConfig, EvalConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_help_and_its_default_passes_its_own_checks(cls):
    cls()  # the defaults are valid
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


@pytest.mark.parametrize("cls, values, parameter, problem", [
    (RecordConfig, {"epochs": 0}, "epochs", "must be at least 1, got 0"),
    (RecordConfig, {"capture": "sometimes"}, "capture", "unknown value 'sometimes'; choose one of snapshots, in-training"),
    (RecordConfig, {"warmup_ratio": 1.0}, "warmup_ratio", "must be below 1"),
    (TrainConfig, {"learning_rate": 0.0}, "learning_rate", "must be positive"),
    (TrainConfig, {"lr_scheduler": "sawtooth"}, "lr_scheduler", "unknown value 'sawtooth'"),
    (TrainConfig, {"lora": True, "lora_target_modules": " "}, "lora_target_modules", "names no module"),
    (ScoreConfig, {"dtype": "int4"}, "dtype", "unknown value 'int4'"),
    (EvalConfig, {"limit": 0}, "limit", "must be at least 1"),
    (DataConfig, {"max_length": "long"}, "max_length", "expected a number"),
])
def test_a_bad_value_fails_when_built_naming_its_parameter(cls, values, parameter, problem):
    with pytest.raises(InputError) as e:
        cls(**values)
    assert e.value.parameter == parameter and problem in e.value.problem and e.value.path is None
    assert str(e.value).startswith(f"{parameter}: ")


def test_an_experiment_section_names_where_the_bad_value_is():
    with pytest.raises(InputError) as e:
        TrainConfig.from_mapping({"precision": "fp8"}, "target.train")
    assert e.value.parameter == "target.train.precision"
    with pytest.raises(InputError, match="unknown settings lr"):
        RecordConfig.from_mapping({"lr": 1e-4}, "proxy.record")
    nested = EvalConfig.from_mapping({"data": {"max_length": 256}}, "evaluate")
    assert isinstance(nested.data, DataConfig) and nested.data.max_length == 256
    with pytest.raises(InputError) as e:
        EvalConfig.from_mapping({"data": {"max_length": 1}}, "evaluate")
    assert e.value.parameter == "evaluate.data.max_length"


def test_record_and_train_share_their_optimisation_fields():
    shared = {f.name for f in dataclasses.fields(RecordConfig)} & {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"epochs", "learning_rate", "batch_size", "warmup_ratio", "weight_decay", "max_grad_norm", "precision",
            "optim", "seed"} <= shared
    for name in shared:  # one definition: the same field object, so the same default and help
        record_field = next(f for f in dataclasses.fields(RecordConfig) if f.name == name)
        train_field = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
        assert record_field.default == train_field.default and record_field.metadata == train_field.metadata


@pytest.mark.parametrize("command, cls", [("record", RecordConfig), ("train", TrainConfig), ("evaluate", EvalConfig),
                                          ("score", ScoreConfig)])
def test_the_commands_options_are_the_config_fields(command, cls):
    import typer.main

    click_command = typer.main.get_command(app).commands[command]
    options = {p.name: p for p in click_command.params}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            assert f.name not in options
        elif f.name == "data":
            continue  # the nested DataConfig: its own fields are options (checked below)
        else:
            assert f.name in options, f"s2l {command} has no option for {cls.__name__}.{f.name}"
            assert options[f.name].default == f.default and options[f.name].help == f.metadata["help"]
    assert {"format", "template", "id_column", "split", "max_length"} <= options.keys()


def test_record_takes_weight_decay_and_max_grad_norm_and_lr_means_learning_rate():
    result = CliRunner().invoke(app, ["record", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--weight-decay", "--max-grad-norm", "--learning-rate", "--lr"):
        assert flag in result.output


@pytest.mark.parametrize("args, message", [
    (["record", "--data", "x.jsonl", "--proxy", "p", "--out", "o", "--epochs", "0"], "--epochs: must be at least 1"),
    (["train", "--data", "x.jsonl", "--model", "m", "--out", "o", "--lr", "-1"], "--learning-rate: must be positive"),
    (["evaluate", "--model", "m", "--data", "x.jsonl", "--out", "o.json", "--dtype", "int4"], "--dtype: unknown value"),
    (["check-data", "x.jsonl", "--format", "sharegpt"], "--format: unknown value 'sharegpt'"),
])
def test_the_cli_shows_a_bad_setting_as_its_flag_with_exit_2(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_settings_subclasses_check_on_construction():
    assert all(issubclass(cls, Settings) for cls in CONFIGS)
    assert not issubclass(ExperimentConfig, Settings)  # loaded from YAML; its sections are the configs above
