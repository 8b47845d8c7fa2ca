"""The chunked vocabulary projection + cross-entropy gives the plain path's losses and gradients."""

import pytest
import torch
import torch.nn.functional as F

from s2l.trajectories import head_loss
from s2l.trajectories.head_loss import chunked_head_losses

# float32: the same arithmetic regrouped. bf16: the two paths round the matmul outputs at different points
# (per chunk here, once for the whole batch there), so gradients agree to bf16's precision.
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-3)}


def plain(hidden, weight, targets, softcap):
    logits = (hidden @ weight.t()).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="none")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("group_chunks", [1, 4, 100])  # bf16 weight-gradient matmuls: per chunk, 2 ragged groups, one
def test_losses_and_gradients_match_the_plain_path(dtype, softcap, group_chunks, monkeypatch):
    monkeypatch.setattr(head_loss, "HEAD_CHUNK_ELEMENTS", 7 * 500)  # 7 rows a chunk: several chunks, a ragged last
    monkeypatch.setattr(head_loss, "GROUP_CHUNKS", group_chunks)
    torch.manual_seed(0)
    n, d, vocab = 40, 16, 500
    hidden0, weight0 = torch.randn(n, d), torch.randn(vocab, d) / 2
    targets = torch.randint(0, vocab, (n,))
    grad_out = torch.rand(n)  # per-token weights, as a step's loss gives them
    results = []
    for fn in (plain, chunked_head_losses):
        hidden, weight = hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            losses = fn(hidden, weight, targets, softcap)
        (losses * grad_out).sum().backward()
        assert losses.dtype == torch.float32 and hidden.grad.dtype == weight.grad.dtype == torch.float32
        results.append((losses.detach(), hidden.grad, weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, **TOLERANCE[dtype])


def test_bf16_weights_and_tied_embeddings_add_their_gradients():
    torch.manual_seed(1)
    embedding = torch.nn.Embedding(300, 12).to(torch.bfloat16)
    ids, targets = torch.randint(0, 300, (20,)), torch.randint(0, 300, (20,))
    grads = []
    for fn in (plain, chunked_head_losses):
        embedding.zero_grad(set_to_none=True)
        hidden = embedding(ids) * 1.5
        fn(hidden, embedding.weight, targets, None).sum().backward()
        assert embedding.weight.grad.dtype == torch.bfloat16
        grads.append(embedding.weight.grad.float())
    torch.testing.assert_close(grads[1], grads[0], rtol=2e-2, atol=2e-2)


def test_no_positions_give_no_losses():
    out = chunked_head_losses(torch.zeros(0, 4), torch.randn(10, 4), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("given, received", [(0.25, 0.25), (0.25, 0.5), (0.25, 0.0), (0.25, None)])
def test_gradients_made_in_the_forward_pass_match(dtype, softcap, given, received, monkeypatch):
    """With the loss's gradient given up front the forward makes the gradients; a backward bringing another
    uniform gradient scales them, a non-uniform one (None here: random per token) recomputes."""
    monkeypatch.setattr(head_loss, "HEAD_CHUNK_ELEMENTS", 7 * 500)
    torch.manual_seed(2)
    n, d, vocab = 30, 16, 500
    hidden0, weight0 = torch.randn(n, d), torch.randn(vocab, d) / 2
    targets = torch.randint(0, vocab, (n,))
    grad_out = torch.rand(n) if received is None else torch.full((n,), received)
    results = []
    for fn in (plain, lambda *a: chunked_head_losses(*a, grad_scale=given)):
        hidden, weight = hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            losses = fn(hidden, weight, targets, softcap)
        (losses * grad_out).sum().backward()
        results.append((losses.detach(), hidden.grad, weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, **TOLERANCE[dtype])
