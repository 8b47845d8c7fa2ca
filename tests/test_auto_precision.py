"""`auto` precision and dtype: bfloat16 only where the hardware does it, and the run records the choice.

An AVX2-only CPU emulates bfloat16 (a training step ~25x slower than float32), so `auto` must read the
CPU's features, not assume them."""

from __future__ import annotations

import json

import pytest

from s2l import models
from s2l.config import RecordConfig, TrainConfig
from s2l.models import bf16_is_native, resolve_dtype, resolve_precision
from s2l.trajectories.record import record
from s2l.training import MANIFEST, train


@pytest.mark.parametrize("flags, native", [
    ({"fma", "avx", "avx2"}, False),  # an AVX2-only EPYC: emulated
    ({"avx2", "avx512f", "avx512_bf16"}, True),
    ({"avx2", "amx_tile", "amx_bf16"}, True),
    ({"fp", "asimd", "bf16"}, True),  # an Arm core with BF16
    (set(), False),  # features unknown (not Linux): the safe answer
])
def test_native_bf16_is_read_from_the_cpu_features(monkeypatch, flags, native):
    monkeypatch.setattr(models, "_cpu_flags", lambda: flags)
    assert bf16_is_native("cpu") is native
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if native else "float32")
    assert resolve_dtype("auto", "cpu") == ("bf16" if native else "float32")


def test_a_named_precision_or_dtype_is_kept_whatever_the_hardware(monkeypatch):
    monkeypatch.setattr(models, "_cpu_flags", lambda: set())
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert resolve_precision("bf16-master", "cpu") == "bf16-master"
    assert resolve_dtype("bf16", "cpu") == "bf16"
    assert resolve_dtype("float32", "cpu") == "float32"


def test_the_cpu_flags_of_this_machine_are_readable():
    flags = models._cpu_flags()
    assert isinstance(flags, set)
    if flags:  # Linux: the features line was found
        assert bf16_is_native("cpu") == bool(flags & models._BF16_CPU_FLAGS)


def test_auto_is_the_default_and_record_and_train_write_what_ran(monkeypatch, tiny_model_dir, math_pool, tmp_path):
    assert RecordConfig().precision == "auto" and TrainConfig().precision == "auto"
    monkeypatch.setattr(models, "_cpu_flags", lambda: {"avx2"})
    store = record(math_pool, str(tiny_model_dir), tmp_path / "run",
                   RecordConfig(epochs=1, snapshots=1, batch_size=8, learning_rate=1e-3),
                   show_progress=False)
    manifest = json.loads((store.root / "manifest.json").read_text())
    assert manifest["training"]["precision"] == "float32"
    out = train(math_pool, str(tiny_model_dir), tmp_path / "target",
                TrainConfig(epochs=1, batch_size=8, learning_rate=1e-3), show_progress=False)
    assert json.loads((out / MANIFEST).read_text())["config"]["precision"] == "float32"
