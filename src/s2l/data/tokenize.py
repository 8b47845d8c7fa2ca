"""Tokenisation with the prompt masked: the one code path shared by recording, scoring and training.

Text formats: the response carries loss, EOS appended. Where the prompt ends and the response begins is the
`boundary` rule (`DataConfig.boundary`), which matters when the tokenizer merges the prompt's last character
with the response's first into one token (SmolLM2 reads "### Response:-129" as ":-", "1", "2", "9"):

    reference   prompt + response tokenised together, the first len(tokenize(prompt)) tokens masked: the rule
                of Stanford Alpaca's code, which both papers' code uses. The merged token counts as prompt.
    characters  prompt + response tokenised together; every token touching a response character carries
                loss. The merged token counts as response. (What stores recorded before the option used.)
    separate    prompt and response tokenised apart and joined: no token merges them, and the prompt's tokens
                are those a model is given at generation time.

Chat: the tokens whose characters lie in an assistant turn (rendered with the tokenizer's chat template, the
turn's end marker included).
Sequences are truncated to `max_length`; an example left with no loss-carrying token is kept with
`n_tokens == 0` and reported, never scored as a number. So is an example the pool excluded (an empty prompt
or response): it is tokenised like any other, with no token carrying loss, so that it keeps its row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from s2l.config import BOUNDARIES, DataConfig
from s2l.data.formats import Example
from s2l.data.readers import HubDataset
from s2l.errors import InputError

_MARKER = "\ue000s2l-assistant-content\ue000"  # a private-use marker no real text contains
BATCH = 512  # texts per call to the (Rust, multi-threaded) fast tokenizer
NO_RESPONSE_TOKENS = "no_response_tokens"  # truncation left no loss-carrying token


@dataclass
class TokenizedExample:
    example_id: str
    source: str | None
    input_ids: np.ndarray  # int32, at most max_length long
    loss_mask: np.ndarray  # bool, True where the token is predicted and counted in the loss
    truncated: bool
    excluded: str | None = None  # the pool's reason (an empty prompt or response); no token carries loss then

    @property
    def n_tokens(self) -> int:
        """Tokens that carry loss (the 'n_tokens' of the trajectory store)."""
        return int(self.loss_mask.sum())

    @property
    def exclusion(self) -> str | None:
        """Why the example has no loss, if it has none: the pool's reason, else no_response_tokens."""
        if self.excluded:
            return self.excluded
        return NO_RESPONSE_TOKENS if not self.loss_mask.any() else None

    def __len__(self) -> int:
        return len(self.input_ids)


def _check_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; s2l needs offset mappings "
            "to find the response tokens", getattr(tokenizer, "name_or_path", "tokenizer"))
    if tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no EOS token to close responses with", getattr(tokenizer, "name_or_path", "tokenizer"))


def _mask_from_spans(offsets, spans: list[tuple[int, int]]) -> np.ndarray:
    """True for every token whose characters overlap a loss span; special tokens added by the
    tokenizer itself (offset (0, 0)) never do."""
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    mask = np.zeros(len(offsets), dtype=bool)
    for span_start, span_end in spans:
        mask |= (starts < span_end) & (ends > span_start)
    return mask & (ends > starts)


def _finish(example: Example, ids: list[int], mask: np.ndarray, max_length: int) -> TokenizedExample:
    truncated = len(ids) > max_length
    ids_arr = np.asarray(ids[:max_length], dtype=np.int32)
    mask = mask[:max_length].copy()
    if len(mask):
        mask[0] = False  # the first token has nothing before it to be predicted from
    if example.excluded:
        mask[:] = False
    return TokenizedExample(example.example_id, example.source, ids_arr, mask, truncated, example.excluded)


def exclusion_counts(tokenized: Sequence[TokenizedExample]) -> dict[str, int]:
    """Examples without a loss, by reason (no_response_tokens, empty_response, ...)."""
    return dict(sorted(Counter(t.exclusion for t in tokenized if t.exclusion).items()))


def chat_spans(tokenizer, messages: tuple[tuple[str, str], ...], path: str = "chat template") -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and find each assistant turn's characters (content and end marker).

    The text before turn i is the template applied to the turns before it with a generation prompt;
    the text up to its end is the template applied through it. Trailing whitespace after the end
    marker belongs to the template, not to what the model must learn to say.
    """
    if not tokenizer.chat_template:
        raise InputError("chat records need a tokenizer with a chat template; this one has none", path)
    as_dicts = [{"role": r, "content": c} for r, c in messages]
    full = tokenizer.apply_chat_template(as_dicts, tokenize=False)
    spans = []
    for i, (role, _) in enumerate(messages):
        if role != "assistant":
            continue
        if i:
            before = tokenizer.apply_chat_template(as_dicts[:i], tokenize=False, add_generation_prompt=True)
        else:
            # A conversation that opens with the assistant: the template may still write a default
            # system turn and the role header first; find where the content goes with a marker.
            marked = tokenizer.apply_chat_template([{"role": "assistant", "content": _MARKER}], tokenize=False)
            before = marked[: marked.find(_MARKER)] if _MARKER in marked else ""
        through = tokenizer.apply_chat_template(as_dicts[: i + 1], tokenize=False)
        if not (full.startswith(through) and through.startswith(before)):
            raise InputError("the chat template does not render conversations prefix by prefix, so assistant "
                             "turns cannot be located", path)
        spans.append((len(before), len(through.rstrip())))
    return full, spans


def _chat_spans_of(tokenizer, example: Example, source) -> tuple[str, list[tuple[int, int]]]:
    """`chat_spans` of one example; a template that refuses the conversation (its own `raise_exception`: roles
    out of order, a role it does not know) is an error naming the record."""
    name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    try:
        return chat_spans(tokenizer, example.messages, name)
    except InputError:
        raise
    except Exception as e:
        from jinja2 import TemplateError

        if not isinstance(e, TemplateError):
            raise
        where = source if source is not None else name
        problem = f"the chat template of {name} refuses this conversation: {' '.join(str(e).split())}"
        if example.line is None and isinstance(source, HubDataset):
            problem = f"row {example.index}{f' of split {source.split}' if source.split else ''}: {problem}"
        elif example.line is None and source is not None:
            problem = f"record {example.index + 1}: {problem}"
        raise InputError(problem, where, example.line) from None


def _check_boundary(tokenizer, boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise InputError(f"unknown value {boundary!r}; choose one of {', '.join(BOUNDARIES)}", parameter="boundary")
    if boundary == "separate":
        # A tokenizer that starts every text with a space (SentencePiece's dummy prefix, add_prefix_space) would
        # give a response tokenised on its own a space it does not have.
        prompt = tokenizer("x:", add_special_tokens=False)["input_ids"]
        response = tokenizer("y", add_special_tokens=False)["input_ids"]
        if tokenizer.decode(prompt + response) != "x:y":
            raise InputError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} starts every text with a space, so "
                             "a response tokenised apart from its prompt would begin with a space it does not have; "
                             "choose reference or characters", parameter="boundary")


def _text_tokens(tokenizer, examples: list[Example], boundary: str) -> list[tuple[list[int], np.ndarray]]:
    """Input ids and loss mask of text examples (before truncation), EOS appended, under the `boundary` rule."""
    prompts = [e.prompt for e in examples]
    eos = tokenizer.eos_token_id
    if boundary == "separate":
        prompt_ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
        response_ids = tokenizer([e.response for e in examples], add_special_tokens=False)["input_ids"]
        return [(list(p) + list(r) + [eos], np.repeat([False, True], [len(p), len(r) + 1]))
                for p, r in zip(prompt_ids, response_ids)]
    texts = [e.prompt + e.response for e in examples]
    encoded = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=boundary == "characters")
    if boundary == "characters":
        masks = [_mask_from_spans(offsets, [(len(prompt), len(text))])
                 for offsets, prompt, text in zip(encoded["offset_mapping"], prompts, texts)]
    else:  # reference: as many tokens masked as the prompt has alone
        n_prompt = [len(p) for p in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
        masks = [np.arange(len(ids)) >= n for ids, n in zip(encoded["input_ids"], n_prompt)]
    return [(list(ids) + [eos], np.append(mask, True)) for ids, mask in zip(encoded["input_ids"], masks)]


def tokenize_examples(tokenizer, examples: list[Example], max_length: int = DataConfig.max_length,
                      boundary: str = DataConfig.boundary, source=None) -> list[TokenizedExample]:
    """`source` (the pool's file or Hub dataset) names where a conversation the chat template refuses came from."""
    _check_tokenizer(tokenizer)
    _check_boundary(tokenizer, boundary)
    out: list[TokenizedExample | None] = [None] * len(examples)
    text_positions = [i for i, e in enumerate(examples) if not e.is_chat]
    for start in range(0, len(text_positions), BATCH):
        chunk = text_positions[start : start + BATCH]
        for i, (ids, mask) in zip(chunk, _text_tokens(tokenizer, [examples[i] for i in chunk], boundary)):
            out[i] = _finish(examples[i], ids, mask, max_length)
    for i, example in enumerate(examples):
        if example.is_chat:
            text, spans = _chat_spans_of(tokenizer, example, source)
            # The chat template writes its own BOS where the model wants one.
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            out[i] = _finish(example, list(encoded["input_ids"]), _mask_from_spans(encoded["offset_mapping"], spans), max_length)
    return out  # type: ignore[return-value]


def prepare_pool(data, tokenizer, config) -> tuple:
    """Read the pool at `data` as `config` (a `DataConfig`) says and tokenise every example: the
    first step of record, score, train and evaluate alike. Returns (pool, tokenized examples)."""
    pool = load_pool_as(data, config)
    return pool, tokenize_examples(tokenizer, pool.examples, config.max_length, config.boundary, source=pool.path)


def load_pool_as(data, config):
    """The pool at `data` read as `config` (a `DataConfig`) says, without tokenising it."""
    from s2l.data.pool import load_pool

    return load_pool(data, format=config.format, template=config.template, id_column=config.id_column,
                     split=config.split, strict=config.strict, fields=config.field_map,
                     dataset_config=config.dataset_config)
