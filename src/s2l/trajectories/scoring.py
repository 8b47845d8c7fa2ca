"""Batched response-token loss: the measurement every trajectory point is made of.

For each example, the mean token cross-entropy over the tokens that carry loss (the response, EOS
included), exactly what transformers' `model(input_ids, labels=...).loss` gives one example at a time.
Two things make it fast:
- batches are length-sorted and sized by tokens, not by count, so little is spent on padding;
- the output projection and the cross-entropy are computed only at positions that predict a response
  token (the vocabulary projection is a large share of a small model's FLOPs and most of its memory).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from s2l.config import ScoreConfig
from s2l.data.tokenize import TokenizedExample
from s2l.distributed import is_sharded
from s2l.trajectories.head_loss import chunked_head_losses

# Architectures whose logits are exactly `lm_head(last_hidden_state)` (Gemma 2's soft-capping is applied
# below). Others go through the model's own forward, which is correct but computes every logit.
HEAD_ONLY_AT_RESPONSE = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                         "gpt_neox", "phi", "phi3", "olmo", "olmo2", "smollm3", "stablelm", "starcoder2"}
HEAD_CHUNK = 2048  # positions projected to the vocabulary at once; bounds the logits' memory


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_size: int) -> list[np.ndarray]:
    """Indices grouped into batches, longest first, each with (size x longest) <= max_tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        new_longest = max(longest, int(lengths[i]))
        if current and (len(current) + 1 > max_size or (len(current) + 1) * new_longest > max_tokens):
            batches.append(np.asarray(current))
            current, new_longest = [], int(lengths[i])
        current.append(i)
        longest = new_longest
    if current:
        batches.append(np.asarray(current))
    return batches


def pad_batch(examples: Sequence[TokenizedExample], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and loss mask for a batch."""
    width = max(len(e) for e in examples)
    input_ids = np.zeros((len(examples), width), dtype=np.int64)
    attention = np.zeros((len(examples), width), dtype=np.int64)
    loss_mask = np.zeros((len(examples), width), dtype=bool)
    for row, e in enumerate(examples):
        input_ids[row, : len(e)] = e.input_ids
        attention[row, : len(e)] = 1
        loss_mask[row, : len(e)] = e.loss_mask
    as_tensor = lambda a: torch.from_numpy(a).to(device)
    return as_tensor(input_ids), as_tensor(attention), as_tensor(loss_mask)


def token_losses(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                 chunked: bool = False, body=None, grad_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (float32) at every loss-carrying token, and the batch row each belongs to.

    Token p is predicted from position p - 1, so the loss mask is shifted by one against the outputs.
    `chunked`: when gradients are wanted, project and differentiate the vocabulary a chunk at a time
    (`head_loss.chunked_head_losses`: the same losses, gradients equal up to rounding, far less memory).
    `grad_scale`: with `chunked`, the gradient each token's loss will get, so that the vocabulary's gradients are
    made in the forward pass (see ChunkedHeadLoss). `body`: the transformer body to call instead of `model.base_model` (a compiled one).
    """
    predicts = loss_mask[:, 1:]  # output position p-1 predicts token p
    targets = input_ids[:, 1:][predicts]
    rows = predicts.nonzero()[:, 0]
    # A model sharded with FSDP gathers its outer weights (embeddings, head) only inside its own forward, so it
    # takes the plain path with full logits.
    if model.config.model_type in HEAD_ONLY_AT_RESPONSE and not is_sharded(model):
        body = model.base_model if body is None else body
        hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden[:, :-1][predicts]
        head = model.get_output_embeddings()
        softcap = getattr(model.config, "final_logit_softcapping", None)
        if chunked and torch.is_grad_enabled() and getattr(head, "bias", None) is None:
            return chunked_head_losses(hidden, head.weight, targets, softcap, grad_scale), rows
        pieces = []
        for start in range(0, len(targets), HEAD_CHUNK):
            logits = head(hidden[start : start + HEAD_CHUNK]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            pieces.append(F.cross_entropy(logits, targets[start : start + HEAD_CHUNK], reduction="none"))
        losses = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][predicts].float()
        losses = F.cross_entropy(logits, targets, reduction="none")
    return losses, rows


@torch.inference_mode()
def score_examples(
    model,
    examples: Sequence[TokenizedExample],
    max_batch_tokens: int = ScoreConfig.max_batch_tokens,
    max_batch_size: int = ScoreConfig.max_batch_size,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean response-token cross-entropy of every example (NaN where it has no loss-carrying token),
    and its number of loss-carrying tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_tokens = np.array([e.n_tokens for e in examples], dtype=np.int64)
    losses = np.full(len(examples), np.nan)
    scorable = np.flatnonzero(n_tokens > 0)
    lengths = [len(examples[i]) for i in scorable]
    try:
        for batch in token_budget_batches(lengths, max_batch_tokens, max_batch_size):
            members = scorable[batch]
            input_ids, attention, loss_mask = pad_batch([examples[i] for i in members], device)
            token_ce, rows = token_losses(model, input_ids, attention, loss_mask)
            sums = torch.zeros(len(members), dtype=torch.float64, device=device).index_add_(0, rows, token_ce.double())
            losses[members] = (sums.cpu().numpy() / n_tokens[members])
            if on_batch:
                on_batch(len(members))
    finally:
        model.train(was_training)
    return losses, n_tokens
