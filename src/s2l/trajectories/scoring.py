"""Batched response-token loss: the measurement every trajectory point is made of.

For each example, the mean token cross-entropy over the tokens that carry loss (the response, EOS
included), exactly what transformers' `model(input_ids, labels=...).loss` gives one example at a time.
Two things make it fast:
- batches are length-sorted and sized by tokens, not by count, so little is spent on padding;
- the output projection and the cross-entropy are computed only at positions that predict a response
  token (the vocabulary projection is a large share of a small model's FLOPs and most of its memory).

For the store, `score_columns` also keeps, from the same logits, each example's mean top-1 probability
(the probability of the model's own most likely next token, averaged over the response positions:
least-confidence ranks by it), and optionally scores each response alone, with no prompt before it
(`loss_alone`: the denominator of instruction-following difficulty, IFD).
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
    losses, _, rows = token_measures(model, input_ids, attention_mask, loss_mask, chunked=chunked, body=body,
                                     grad_scale=grad_scale)
    return losses, rows


def _measure(logits: torch.Tensor, targets: torch.Tensor, top1: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cross-entropy of `targets` under float32 `logits`, and with `top1` the largest probability at each
    position. Both come from one log-softmax, the one `F.cross_entropy` computes itself, so the losses are
    bit for bit those of the plain path (`-log_softmax[target]` is how it reduces); the extra cost is one max
    over the logits."""
    if not top1:
        return F.cross_entropy(logits, targets, reduction="none"), None
    log_probs = logits.log_softmax(-1)
    return -log_probs.gather(1, targets[:, None]).squeeze(1), log_probs.amax(-1).exp()


def token_measures(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                   top1: bool = False, chunked: bool = False, body=None,
                   grad_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`token_losses`, plus (with `top1`) the model's top-1 probability at each of those positions (float32;
    None without). `chunked`, `body`, `grad_scale`: as `token_losses`."""
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
        if chunked and not top1 and torch.is_grad_enabled() and getattr(head, "bias", None) is None:
            return chunked_head_losses(hidden, head.weight, targets, softcap, grad_scale), None, rows
        pieces, top1_pieces = [], []
        for start in range(0, len(targets), HEAD_CHUNK):
            logits = head(hidden[start : start + HEAD_CHUNK]).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            losses, top1_probs = _measure(logits, targets[start : start + HEAD_CHUNK], top1)
            pieces.append(losses)
            top1_pieces.append(top1_probs)
        empty = hidden.new_zeros(0, dtype=torch.float32)
        losses = torch.cat(pieces) if pieces else empty
        top1_probs = (torch.cat(top1_pieces) if pieces else empty) if top1 else None
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][predicts].float()
        losses, top1_probs = _measure(logits, targets, top1)
    return losses, top1_probs, rows


def score_examples(
    model,
    examples: Sequence[TokenizedExample],
    max_batch_tokens: int = ScoreConfig.max_batch_tokens,
    max_batch_size: int = ScoreConfig.max_batch_size,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean response-token cross-entropy of every example (NaN where it has no loss-carrying token),
    and its number of loss-carrying tokens."""
    losses, _, n_tokens = _example_means(model, examples, max_batch_tokens, max_batch_size, on_batch, top1=False)
    return losses, n_tokens


def score_columns(
    model,
    examples: Sequence[TokenizedExample],
    max_batch_tokens: int = ScoreConfig.max_batch_tokens,
    max_batch_size: int = ScoreConfig.max_batch_size,
    on_batch: Callable[[int], None] | None = None,
    ifd: bool = ScoreConfig.ifd,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """What a store cell holds: `score_examples`' losses and token counts, and the further columns by name:
    `top1_prob`, each example's mean over its loss-carrying positions of the model's top-1 probability; with
    `ifd`, `loss_alone`, the mean loss of the same tokens scored with no prompt (`response_alone`)."""
    losses, top1_probs, n_tokens = _example_means(model, examples, max_batch_tokens, max_batch_size, on_batch,
                                                  top1=True)
    columns = {"top1_prob": top1_probs}
    if ifd:
        alone = response_alone(examples, getattr(model.config, "bos_token_id", None))
        columns["loss_alone"], _, _ = _example_means(model, alone, max_batch_tokens, max_batch_size, on_batch,
                                                     top1=False)
    return losses, n_tokens, columns


def response_alone(examples: Sequence[TokenizedExample], bos_token_id: int | None) -> list[TokenizedExample]:
    """Each example's loss-carrying tokens (its response, EOS included; a chat's assistant turns, in order) with
    no prompt before them: the tokens the prompted pass scores, so the two losses average over the same tokens.

    After the BOS when the example's own sequence starts with one (a tokenizer that adds a BOS for its model:
    Llama, Gemma); otherwise the response starts the sequence and its first token, with nothing before it to be
    predicted from, carries no loss (as GPT-2 scores a text alone)."""
    out = []
    for e in examples:
        response = e.input_ids[e.loss_mask]
        if len(response) and bos_token_id is not None and e.input_ids[0] == bos_token_id:
            ids = np.concatenate([np.asarray([bos_token_id], dtype=e.input_ids.dtype), response])
        else:
            ids = response
        mask = np.ones(len(ids), dtype=bool)
        if len(mask):
            mask[0] = False
        out.append(TokenizedExample(e.example_id, e.source, ids, mask, e.truncated))
    return out


@torch.inference_mode()
def _example_means(model, examples: Sequence[TokenizedExample], max_batch_tokens: int, max_batch_size: int,
                   on_batch: Callable[[int], None] | None, top1: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Per example, the mean over its loss-carrying tokens of the cross-entropy and (with `top1`) of the top-1
    probability, NaN where it has no such token; and its number of them."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_tokens = np.array([e.n_tokens for e in examples], dtype=np.int64)
    losses = np.full(len(examples), np.nan)
    top1_probs = np.full(len(examples), np.nan) if top1 else None
    scorable = np.flatnonzero(n_tokens > 0)
    lengths = [len(examples[i]) for i in scorable]
    try:
        for batch in token_budget_batches(lengths, max_batch_tokens, max_batch_size):
            members = scorable[batch]
            input_ids, attention, loss_mask = pad_batch([examples[i] for i in members], device)
            token_ce, token_top1, rows = token_measures(model, input_ids, attention, loss_mask, top1)
            sums = torch.zeros(len(members), dtype=torch.float64, device=device).index_add_(0, rows, token_ce.double())
            losses[members] = (sums.cpu().numpy() / n_tokens[members])
            if top1:
                sums = torch.zeros(len(members), dtype=torch.float64, device=device).index_add_(0, rows,
                                                                                              token_top1.double())
                top1_probs[members] = sums.cpu().numpy() / n_tokens[members]
            if on_batch:
                on_batch(len(members))
    finally:
        model.train(was_training)
    return losses, top1_probs, n_tokens
