"""The store's measures besides the loss: the mean top-1 probability (least-confidence) and the response's
loss without its prompt (IFD), computed by hand with transformers, through the store, and into selection."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from s2l.cli import app
from s2l.data import TokenizedExample, load_pool, tokenize_examples
from s2l.errors import InputError
from s2l.selection import make_selector
from s2l.selection.run import run_selection
from s2l.trajectories import Trajectories, TrajectoryStore
from s2l.trajectories import scoring
from s2l.trajectories.record import ScoreConfig, score
from s2l.trajectories.scoring import response_alone, score_columns, score_examples


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, math_pool):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pool = load_pool(math_pool)
    return model, tokenizer, pool, tokenize_examples(tokenizer, pool.examples, 512)


def direct_top1(model, example: TokenizedExample) -> float:
    """The mean, over the positions that predict a response token, of the largest softmax probability."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(example.input_ids, dtype=torch.long)[None]).logits[0, :-1].float()
    probabilities = torch.softmax(logits, dim=-1).max(dim=-1).values
    return probabilities[torch.from_numpy(example.loss_mask[1:])].double().mean().item()


def direct_loss(model, ids: list[int], labelled_from: int) -> float:
    """transformers' own mean loss over tokens `labelled_from`… (the ones before are labelled -100)."""
    input_ids = torch.tensor(ids, dtype=torch.long)[None]
    labels = input_ids.clone()
    labels[0, :labelled_from] = -100
    with torch.no_grad():
        return model(input_ids=input_ids, labels=labels).loss.item()


@pytest.mark.parametrize("path", ["head at response positions, in chunks", "the model's full logits"])
def test_top1_probability_matches_a_direct_softmax(tiny, monkeypatch, path):
    model, _, _, tokenized = tiny
    batch = tokenized[:6]
    if path.startswith("head"):
        monkeypatch.setattr(scoring, "HEAD_CHUNK", 7)  # several chunks per batch
    else:
        monkeypatch.setattr(scoring, "HEAD_ONLY_AT_RESPONSE", set())
    losses, n_tokens, measures = score_columns(model, batch, max_batch_tokens=600, max_batch_size=3)
    expected = np.array([direct_top1(model, e) for e in batch])
    np.testing.assert_allclose(measures["top1_prob"], expected, rtol=0, atol=1e-6)
    assert ((0 < expected) & (expected < 1)).all() and set(measures) == {"top1_prob"}
    # Keeping it leaves the losses bit for bit as the plain scorer's.
    plain, plain_tokens = score_examples(model, batch, max_batch_tokens=600, max_batch_size=3)
    np.testing.assert_array_equal(losses, plain)
    np.testing.assert_array_equal(n_tokens, plain_tokens)


def test_top1_probability_on_a_hand_made_batch():
    """A two-token vocabulary model whose logits are known: the top-1 probability is the larger softmax."""

    class Fixed(torch.nn.Module):
        config = type("Config", (), {"model_type": "fixed", "bos_token_id": None})()

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            # Position p predicts with logits (p, 0): softmax max = sigmoid(p).
            width = input_ids.shape[1]
            logits = torch.stack([torch.arange(width, dtype=torch.float32), torch.zeros(width)], dim=-1)
            return type("Out", (), {"logits": logits.expand(input_ids.shape[0], width, 2)})()

    example = TokenizedExample("a", None, np.array([0, 1, 0, 1], dtype=np.int32),
                               np.array([False, False, True, True]), False)
    losses, _, measures = score_columns(Fixed(), [example])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    # Tokens 2 and 3 are predicted from positions 1 and 2; targets 0 and 1.
    assert measures["top1_prob"][0] == pytest.approx((sigmoid(1) + sigmoid(2)) / 2, abs=1e-7)
    assert losses[0] == pytest.approx((-np.log(sigmoid(1)) - np.log(1 - sigmoid(2))) / 2, abs=1e-6)


def test_ifd_alone_loss_matches_transformers_on_the_response_text(tiny):
    """SmolLM2's tokenizer adds no BOS: the response alone is its text tokenized on its own (EOS appended),
    and its first token, with nothing before it, is not scored (GPT-2's case in Superfiltering)."""
    model, tokenizer, pool, tokenized = tiny
    batch = tokenized[:5]
    losses, _, measures = score_columns(model, batch, ifd=True)
    for example, tok, loss, alone in zip(pool.examples, batch, losses, measures["loss_alone"]):
        response_ids = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert tok.input_ids[tok.loss_mask].tolist() == response_ids  # the same tokens as in the prompted pass
        prompted = direct_loss(model, tok.input_ids.tolist(), int(np.argmax(tok.loss_mask)))
        assert loss == pytest.approx(prompted, abs=1e-5)
        assert alone == pytest.approx(direct_loss(model, response_ids, 0), abs=1e-5)
    ifd = losses / measures["loss_alone"]
    assert np.isfinite(ifd).all() and (ifd > 0).all()


def test_ifd_alone_loss_after_the_bos(tiny):
    """A sequence that starts with the model's BOS: the response alone goes after the BOS, every token scored."""
    model, _, _, tokenized = tiny
    bos = model.config.bos_token_id
    e = tokenized[0]
    with_bos = TokenizedExample(e.example_id, None, np.concatenate([[bos], e.input_ids]).astype(np.int32),
                                np.concatenate([[False], e.loss_mask]), False)
    alone = response_alone([with_bos], bos)[0]
    response = e.input_ids[e.loss_mask].tolist()
    assert alone.input_ids.tolist() == [bos] + response and alone.n_tokens == len(response)
    _, _, measures = score_columns(model, [with_bos], ifd=True)
    assert measures["loss_alone"][0] == pytest.approx(direct_loss(model, [bos] + response, 1), abs=1e-5)
    # Without a BOS, a one-token response alone has nothing to be predicted from: no number.
    one = TokenizedExample("x", None, np.array([5, 6, 7], dtype=np.int32), np.array([False, False, True]), False)
    assert np.isnan(score_columns(model, [one], ifd=True)[2]["loss_alone"][0])


# -- the store ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored_run(tiny_checkpoints, math_pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("measures") / "run"
    return score(math_pool, [str(c) for c in tiny_checkpoints], out, score_config=ScoreConfig(shard_size=16, ifd=True),
                 show_progress=False)


def test_measures_round_trip_through_the_store(scored_run, tiny, tiny_checkpoints):
    model, _, _, tokenized = tiny
    assert scored_run.manifest["ifd"] is True
    cell = pq.read_table(scored_run.cell_path(0, 0))
    assert cell.column_names == ["example_id", "loss", "n_tokens", "top1_prob", "loss_alone"]
    t = scored_run.load()
    assert t.confidence.shape == t.loss_alone.shape == t.shape == (40, len(tiny_checkpoints))
    assert np.isfinite(t.confidence).all() and np.isfinite(t.loss_alone).all()
    losses, _, measures = score_columns(model, tokenized, ifd=True)  # snapshot 0 is the tiny model itself
    np.testing.assert_allclose(t.losses[:, 0], losses, rtol=0, atol=1e-6)
    np.testing.assert_allclose(t.confidence[:, 0], measures["top1_prob"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(t.loss_alone[:, 0], measures["loss_alone"], rtol=0, atol=1e-6)
    # Exported and read back as a table: the same matrices.
    for name in ("t.parquet", "t.csv"):
        t.write_table(scored_run.root.parent / name)
        back = Trajectories.from_table(scored_run.root.parent / name)
        np.testing.assert_allclose(back.confidence, t.confidence, rtol=1e-12)
        np.testing.assert_allclose(back.loss_alone, t.loss_alone, rtol=1e-12)


def test_ifd_is_part_of_the_runs_identity(scored_run, tiny_checkpoints, math_pool):
    with pytest.raises(InputError, match=r"different settings \(ifd\)"):
        score(math_pool, [str(c) for c in tiny_checkpoints], scored_run.root, score_config=ScoreConfig(shard_size=16),
              show_progress=False)


def test_ifd_selects_from_the_store_by_hand(scored_run, math_pool, tmp_path):
    t = scored_run.load()
    result = run_selection(scored_run.root, None, "ifd", 5, tmp_path / "sel")
    ifd = t.losses[:, 0] / t.loss_alone[:, 0]
    keep = np.flatnonzero(ifd < 1)
    best = keep[np.argsort(-ifd[keep], kind="stable")[:5]]
    assert set(result.ids.tolist()) == set(t.ids[best].tolist())
    excluded = int((ifd >= 1).sum())
    assert result.manifest["excluded"].get("ifd_at_least_1", 0) == excluded
    scores = pq.read_table(tmp_path / "sel" / "scores.parquet").to_pydict()
    np.testing.assert_allclose(np.asarray(scores["ifd"], dtype=float), ifd)


def without_measures(run: TrajectoryStore, root) -> TrajectoryStore:
    """A copy of a run as s2l wrote it before the measures: cells of example_id, loss, n_tokens."""
    shutil.copytree(run.root, root)
    old = TrajectoryStore(root)
    manifest = old.manifest
    manifest.pop("ifd")
    old.write_manifest(manifest)
    for k in range(len(manifest["snapshots"])):
        for s in range(manifest["n_shards"]):
            cell = pq.read_table(old.cell_path(k, s))
            old.write_cell(k, s, cell.column("example_id").to_pylist(), cell.column("loss").to_numpy(),
                           cell.column("n_tokens").to_numpy())
    return old


def test_a_store_without_the_measures_loads_and_says_what_adds_them(scored_run, math_pool, tmp_path):
    old = without_measures(scored_run, tmp_path / "old")
    t = old.load()
    assert t.confidence is None and t.loss_alone is None
    np.testing.assert_array_equal(t.losses, scored_run.load().losses)
    runner = CliRunner()
    result = runner.invoke(app, ["select", "--trajectories", str(old.root), "--method", "least-confidence",
                                 "--budget", "5", "--out", str(tmp_path / "lc")])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "top-1" in message and "s2l score" in message and "new run" in message, message
    assert not (tmp_path / "lc").exists()
    result = runner.invoke(app, ["select", "--trajectories", str(old.root), "--method", "ifd", "--budget", "5",
                                 "--out", str(tmp_path / "ifd")])
    assert result.exit_code == 2 and "--ifd" in " ".join(result.output.split())
    # Every other method reads the old store as it is.
    for method in ("perplexity-high", "learnability", "random"):
        assert runner.invoke(app, ["select", "--trajectories", str(old.root), "--method", method, "--budget", "5",
                                   "--out", str(tmp_path / method)]).exit_code == 0
    # A store with some cells from before (resumed across versions) is refused too, not partly ranked.
    mixed = without_measures(scored_run, tmp_path / "mixed")
    shutil.copy(scored_run.cell_path(2, 0), mixed.cell_path(2, 0))
    shutil.copy(scored_run.marker_path(2, 0), mixed.marker_path(2, 0))
    assert np.isfinite(mixed.load().confidence[:16, 2]).all()
    with pytest.raises(InputError, match=r"24 example\(s\) lack"):
        make_selector("least-confidence").fit(mixed.load())


def test_least_confidence_ranks_by_the_top1_probability_of_the_final_snapshot(scored_run):
    t = scored_run.load()
    sel = make_selector("least-confidence").fit(t)
    np.testing.assert_array_equal(sel.scores_, t.confidence[:, -1])
    expected = t.ids[np.argsort(t.confidence[:, -1], kind="stable")[:8]]
    assert set(sel.select(8).tolist()) == set(expected.tolist())
    assert make_selector("least-confidence", snapshot=0).fit(t).snapshot_columns_ == [0]
    with pytest.raises(InputError, match="out of range"):
        make_selector("least-confidence", snapshot=7).fit(t)


def test_score_cli_has_the_ifd_flag(tiny_model_dir, math_pool, tmp_path):
    result = CliRunner().invoke(app, ["score", "--data", str(math_pool), "--checkpoint", str(tiny_model_dir),
                                      "--ifd", "--no-progress", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    t = TrajectoryStore(tmp_path / "run").load()
    assert t.loss_alone is not None and np.isfinite(t.loss_alone).all()


def test_record_in_training_with_ifd(tiny_model_dir, math_pool, tmp_path):
    """record --ifd: every scored column has loss_alone; in-training visit columns have neither measure."""
    from s2l.trajectories.record import RecordConfig, record

    from conftest import FAST

    run = record(math_pool, str(tiny_model_dir), tmp_path / "run", RecordConfig(**FAST, capture="in-training"),
                 score_config=ScoreConfig(shard_size=16, ifd=True), show_progress=False)
    t = run.load()
    assert run.manifest["ifd"] is True and t.shape == (40, 4)
    for measure in (t.confidence, t.loss_alone):
        assert np.isfinite(measure[:, [0, 3]]).all() and np.isnan(measure[:, 1:3]).all()
    assert make_selector("ifd").fit(t).snapshot_columns_ == [0]
    with pytest.raises(InputError, match="visit column"):
        make_selector("ifd", snapshot=1).fit(t)
