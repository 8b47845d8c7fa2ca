"""Packaged models: conversion into a plain Hugging Face folder, idempotent and never half-finished;
name / directory / hub id resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from s2l import models
from s2l.errors import InputError


def test_prepare_converts_once_and_ignores_a_half_finished_conversion(tmp_path, monkeypatch, smollm2_dir):
    monkeypatch.setenv("S2L_CACHE", str(tmp_path))
    target = tmp_path / "models" / "smollm2-135m-instruct"
    # What a killed conversion leaves: a temporary folder, and a final folder without the marker.
    stale = tmp_path / "models" / ".smollm2-135m-instruct.tmp-99999"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert not models.is_prepared("smollm2-135m-instruct")

    path = models.prepare("smollm2-135m-instruct")
    assert path == target and models.is_prepared("smollm2-135m-instruct")
    assert not stale.exists()
    marker = json.loads((target / models.MARKER).read_text())
    assert marker["parameters"] == 134_515_008 and len(marker["gguf_sha256"]) == 64
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert list(target.glob("*.safetensors"))

    # The folder loads as a plain model, with the same weights as the cached one used elsewhere.
    model = AutoModelForCausalLM.from_pretrained(target)
    reference = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name
    assert AutoTokenizer.from_pretrained(target).eos_token == "<|im_end|>"

    mtime = (target / models.MARKER).stat().st_mtime_ns
    assert models.prepare("smollm2-135m-instruct") == target
    assert (target / models.MARKER).stat().st_mtime_ns == mtime, "a second prepare does nothing"


def test_resolve_names_directories_and_hub_ids(tmp_path, smollm2_dir):
    assert models.resolve(str(tmp_path)) == str(tmp_path)
    assert models.resolve("smollm2-135m-instruct") == str(smollm2_dir)
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(InputError, match="no such model directory"):
        models.resolve(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="unknown packaged model"):
        models.prepare("no-such-model")


def test_revision_identifies_weights(smollm2_dir, tiny_model_dir):
    assert models.revision(str(smollm2_dir)).startswith("gguf-sha256:")
    assert models.revision(str(tiny_model_dir)).startswith("local:")
    assert models.revision(str(tiny_model_dir)) == models.revision(str(tiny_model_dir))


def test_a_folder_without_a_tokenizer_is_a_clear_error(tmp_path, tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.save_pretrained(tmp_path / "weights-only")
    with pytest.raises(InputError, match="tokenizer"):
        models.load_tokenizer(str(tmp_path / "weights-only"))
    assert models.load_tokenizer(str(tmp_path / "weights-only"), tokenizer=str(tiny_model_dir)).eos_token == "<|im_end|>"


def test_models_list_and_prepare_cli(smollm2_dir):
    listed = subprocess.run([sys.executable, "-m", "s2l.cli", "models", "list"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert listed.returncode == 0
    assert "smollm2-135m-instruct" in listed.stdout and "gemma-3-270m" in listed.stdout
    prepared = subprocess.run([sys.executable, "-m", "s2l.cli", "models", "prepare", "smollm2-135m-instruct"],
                              capture_output=True, text=True)
    assert prepared.returncode == 0 and prepared.stdout.strip() == str(smollm2_dir)
    unknown = subprocess.run([sys.executable, "-m", "s2l.cli", "models", "prepare", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown packaged model" in unknown.stderr
