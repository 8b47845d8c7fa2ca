"""The vocabulary projection and cross-entropy of training, a chunk of positions at a time, forward and backward.

Autograd through `lm_head(hidden).float()` and `cross_entropy` keeps every position's float32 logits (and
their bf16 copy) until the backward pass: for Gemma's 262,144 words that is 1 MiB per response token. Here
the forward pass keeps only what the backward needs to rebuild them — the hidden states, the head weight
and each position's log-sum-exp — and the backward recomputes the logits chunk by chunk, turning each
into its gradient in place:

    d loss_i / d logit_ij = g_i * (softmax_ij - [j == target_i])      (g_i: the gradient of loss_i)
    grad_hidden = dlogits @ W                grad_W = dlogits^T @ hidden  (summed over chunks in float32)

so at most one chunk of logits (HEAD_CHUNK_ELEMENTS floats) is alive at any time. The price is one more
vocabulary matmul per position (three instead of two, forward included).

Arithmetic follows the plain path: under bf16 autocast (or with bf16 weights) the matmuls run in bfloat16
and the softmax in float32; Gemma 2's final logit soft-capping (`tanh(z / c) * c`) is applied to the
float32 logits and differentiated (`1 - tanh^2`). The head weight may be tied to the input embeddings:
its gradient comes back in the weight's own dtype and autograd adds it to the embedding's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logit elements per chunk (float32: 128 MiB): 682 positions of SmolLM2's 49,152 words, 128 of Gemma's 262,144.
HEAD_CHUNK_ELEMENTS = 2**25


def chunk_rows(vocab: int) -> int:
    return max(1, HEAD_CHUNK_ELEMENTS // vocab)


def compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The matmul dtype the plain path would use: autocast's when it is on for the weight's device."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _logits(hidden: torch.Tensor, weight: torch.Tensor, softcap: float | None):
    """float32 logits of a chunk, and the tanh of soft-capping (None without it)."""
    z = (hidden @ weight.t()).float()
    if not softcap:
        return z, None
    t = torch.tanh(z / softcap)
    return t * softcap, t


class ChunkedHeadLoss(torch.autograd.Function):
    """Per-position cross-entropy of `hidden @ weight.T` against `targets`, without holding all the logits."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, dtype):
        n, rows = hidden.shape[0], chunk_rows(weight.shape[0])
        h, w = hidden.to(dtype), weight.to(dtype)
        losses = hidden.new_empty(n, dtype=torch.float32)
        lse = hidden.new_empty(n, dtype=torch.float32)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, rows):
                end = min(n, start + rows)
                z, _ = _logits(h[start:end], w, softcap)
                losses[start:end] = F.cross_entropy(z, targets[start:end], reduction="none")
                # log-sum-exp = loss + the target's logit
                lse[start:end] = losses[start:end] + z.gather(1, targets[start:end, None]).squeeze(1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.softcap, ctx.dtype = softcap, dtype
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, targets, lse = ctx.saved_tensors
        softcap, dtype = ctx.softcap, ctx.dtype
        n, rows = hidden.shape[0], chunk_rows(weight.shape[0])
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        h, w = hidden.to(dtype), weight.to(dtype)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n, rows):
                end = min(n, start + rows)
                hc = h[start:end]
                z, t = _logits(hc, w, softcap)
                d = z.sub_(lse[start:end, None]).exp_()  # softmax, in place of the logits
                d[torch.arange(end - start, device=d.device), targets[start:end]] -= 1
                d.mul_(grad_losses[start:end, None].float())
                if t is not None:
                    d.mul_(1 - t * t)
                d = d.to(dtype)
                if want_h:
                    grad_h[start:end] = d @ w
                if want_w:
                    grad_w.add_(d.t() @ hc)  # accumulated in float32, no float32 temporary
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None)


def chunked_head_losses(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        softcap: float | None = None) -> torch.Tensor:
    """float32 cross-entropy of each row of `hidden` projected by `weight` ([vocab, hidden]) against `targets`."""
    if not len(targets):
        return hidden.new_zeros(0, dtype=torch.float32)
    return ChunkedHeadLoss.apply(hidden, weight, targets, softcap, compute_dtype(weight))
