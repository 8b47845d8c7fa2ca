"""The vocabulary projection and cross-entropy of training, a chunk of positions at a time, forward and backward.

Autograd through `lm_head(hidden).float()` and `cross_entropy` keeps every position's float32 logits (and
their bf16 copy) until the backward pass: for Gemma's 262,144 words that is 1 MiB per response token. Here
the forward pass keeps only what the backward needs to rebuild them — the hidden states, the head weight
and each position's log-sum-exp — and the backward recomputes the logits chunk by chunk, turning each
into its gradient in place:

    d loss_i / d logit_ij = g_i * (softmax_ij - [j == target_i])      (g_i: the gradient of loss_i)
    grad_hidden = dlogits @ W                grad_W = dlogits^T @ hidden  (summed over chunks in float32)

so at most one chunk of logits (HEAD_CHUNK_ELEMENTS floats) is alive at any time. The price is one more
vocabulary matmul per position (four instead of three, forward included) — unless the caller knows the
gradient each loss will get (training's loss is the sum over the step's response tokens divided by their
number): then the forward pass computes both gradients while it holds each chunk's logits, keeps them
(the weight's in float32: the size of the head) and the backward only hands them over.

Arithmetic follows the plain path: under bf16 autocast (or with bf16 weights) the matmuls take bfloat16
operands (the weight gradient's bf16 products are summed in float32) and the softmax runs in float32; Gemma 2's
final logit soft-capping (`tanh(z / c) * c`) is applied to the float32 logits and differentiated
(`1 - tanh^2`). The head weight may be tied to the input embeddings:
its gradient comes back in the weight's own dtype and autograd adds it to the embedding's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.profiler import record_function

# Logit elements per chunk (float32: 128 MiB): 682 positions of SmolLM2's 49,152 words, 128 of Gemma's 262,144.
HEAD_CHUNK_ELEMENTS = 2**25
# Chunks whose bf16 dlogits make one weight-gradient matmul (bf16: up to 256 MiB kept; see _WeightGradient).
GROUP_CHUNKS = 4


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


class _WeightGradient:
    """grad_W = dlogits^T @ hidden over a pass's chunks, summed into a float32 tensor of the weight's shape.

    float32: each chunk's product is added as it comes (as it always was: float32 runs keep their numbers bit
    for bit). bf16: the bf16 dlogits of up to GROUP_CHUNKS chunks are kept and multiplied by their hidden
    states in one bf16 matmul, whose product (summed in float32 inside the matmul, rounded to bf16 once, as
    the plain path's weight gradient is) is then added to the float32 sum. Per chunk, that vocabulary-sized
    cast and add would cost more than the matmul, and a float32 matmul of the bf16 operands runs at a
    quarter of bf16's speed (docs/benchmarks.md)."""

    def __init__(self, weight: torch.Tensor, hidden: torch.Tensor, dtype: torch.dtype):
        self.sum = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        self.hidden = hidden  # in the compute dtype
        rows = 0 if dtype == torch.float32 else min(len(hidden), GROUP_CHUNKS * chunk_rows(weight.shape[0]))
        self.kept = torch.empty(rows, weight.shape[0], dtype=dtype, device=weight.device) if rows else None
        self.first, self.count = 0, 0  # the kept rows are positions first .. first + count

    def take(self, d: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Account for chunk start:end's float32 dlogits `d`; returns them in the compute dtype."""
        if self.kept is None:
            self.sum.add_(d.t() @ self.hidden[start:end])
            return d
        if self.count + (end - start) > len(self.kept):
            self._flush()
        if self.count == 0:
            self.first = start
        low = self.kept[self.count:self.count + end - start].copy_(d)
        self.count += end - start
        return low

    def _flush(self) -> None:
        if self.count:
            first, count = self.first, self.count
            self.sum.add_(self.kept[:count].t() @ self.hidden[first:first + count])
            self.count = 0

    def result(self) -> torch.Tensor:
        self._flush()
        self.kept = None
        return self.sum


def _chunk_gradients(z, t, lse, targets, grad, w, grad_h, grad_w: _WeightGradient | None, start: int, end: int,
                     dtype) -> None:
    """Turn a chunk's float32 logits `z` into d loss / d logits in place, and add its share of the hidden and
    weight gradients (grad_h rows start:end; grad_w takes the dlogits)."""
    d = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
    d[torch.arange(end - start, device=d.device), targets] -= 1
    d.mul_(grad[:, None] if grad.dim() else grad)
    if t is not None:
        d.mul_(1 - t * t)
    low = d.to(dtype) if grad_w is None else grad_w.take(d, start, end)
    if grad_h is not None:
        grad_h[start:end] = low @ w


class ChunkedHeadLoss(torch.autograd.Function):
    """Per-position cross-entropy of `hidden @ weight.T` against `targets`, without holding all the logits.

    `grad_scale`: the gradient every loss will get (a step's loss is their sum times it). Then the forward
    pass computes the gradients chunk by chunk while it has the logits, and the backward only scales them
    (three vocabulary matmuls, as autograd's path); should the backward bring other gradients, it recomputes."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, dtype, grad_scale):
        n, rows = hidden.shape[0], chunk_rows(weight.shape[0])
        h, w = hidden.to(dtype), weight.to(dtype)
        losses = hidden.new_empty(n, dtype=torch.float32)
        lse = hidden.new_empty(n, dtype=torch.float32)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        early = grad_scale is not None and (want_h or want_w)
        grad_h = torch.empty_like(hidden) if early and want_h else None
        grad_w = _WeightGradient(weight, h, dtype) if early and want_w else None
        scale = torch.tensor(grad_scale if early else 0.0, dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False), record_function("vocab projection"):
            for start in range(0, n, rows):
                end = min(n, start + rows)
                z, t = _logits(h[start:end], w, softcap)
                losses[start:end] = F.cross_entropy(z, targets[start:end], reduction="none")
                # log-sum-exp = loss + the target's logit
                lse[start:end] = losses[start:end] + z.gather(1, targets[start:end, None]).squeeze(1)
                if early:
                    with record_function("vocab projection backward"):
                        _chunk_gradients(z, t, lse[start:end], targets[start:end], scale, w, grad_h, grad_w,
                                         start, end, dtype)
        grad_w = None if grad_w is None else grad_w.result()
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.softcap, ctx.dtype, ctx.scale = softcap, dtype, scale if early else None
        ctx.early = (grad_h, grad_w) if early else None
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, targets, lse = ctx.saved_tensors
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.early is not None and bool((grad_losses == grad_losses[0]).all()):
            grad_h, grad_w = ctx.early
            ctx.early = None
            if not torch.equal(grad_losses[0], ctx.scale):  # another uniform gradient (0 for an idle process)
                factor = grad_losses[0] / ctx.scale
                grad_h = None if grad_h is None else grad_h * factor
                grad_w = None if grad_w is None else grad_w * factor
        else:
            ctx.early = None
            softcap, dtype = ctx.softcap, ctx.dtype
            n, rows = hidden.shape[0], chunk_rows(weight.shape[0])
            h, w = hidden.to(dtype), weight.to(dtype)
            grad_h = torch.empty_like(hidden) if want_h else None
            grad_w = _WeightGradient(weight, h, dtype) if want_w else None
            with torch.autocast(hidden.device.type, enabled=False), record_function("vocab projection backward"):
                for start in range(0, n, rows):
                    end = min(n, start + rows)
                    z, t = _logits(h[start:end], w, softcap)
                    _chunk_gradients(z, t, lse[start:end], targets[start:end], grad_losses[start:end].float(), w,
                                     grad_h, grad_w, start, end, dtype)
            grad_w = None if grad_w is None else grad_w.result()
        return (grad_h if want_h else None, None if grad_w is None or not want_w else grad_w.to(weight.dtype),
                None, None, None, None)


def chunked_head_losses(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                        softcap: float | None = None, grad_scale: float | None = None) -> torch.Tensor:
    """float32 cross-entropy of each row of `hidden` projected by `weight` ([vocab, hidden]) against `targets`.
    `grad_scale`: see ChunkedHeadLoss (the gradients made in the forward pass)."""
    if not len(targets):
        return hidden.new_zeros(0, dtype=torch.float32)
    return ChunkedHeadLoss.apply(hidden, weight, targets, softcap, compute_dtype(weight), grad_scale)
