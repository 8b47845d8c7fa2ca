"""SFT record formats and prompt templates.

A record becomes an `Example`: either a prompt/response pair (alpaca, prompt-response and
MathInstruct-style records, rendered through a prompt template) or a chat conversation (`messages`,
rendered later with the tokenizer's own chat template, loss on assistant turns only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from s2l.data.readers import Record, record_error
from s2l.errors import InputError

FORMATS = ("alpaca", "mathinstruct", "prompt-response", "chat")

# Why a well-formed record still cannot teach anything: it is kept (listed, with no loss, never trained on or
# selected) and counted, or refused with `strict`.
EMPTY_PROMPT = "empty_prompt"  # the instruction or prompt is empty or whitespace
EMPTY_RESPONSE = "empty_response"  # the output / response / an assistant turn is empty or whitespace
NO_ASSISTANT_TURN = "no_assistant_turn"  # a conversation with nothing for the model to say
EMPTY_REASONS = (EMPTY_PROMPT, EMPTY_RESPONSE, NO_ASSISTANT_TURN)

# The Stanford Alpaca template, as used by both papers' reference code (prompt ends at "### Response:",
# the response follows directly and is closed by EOS).
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_WITHOUT_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)


@dataclass(frozen=True)
class PromptTemplate:
    """How an instruction (and optional input) becomes the prompt text the response follows."""

    name: str
    with_input: str
    without_input: str

    def render(self, instruction: str, input_text: str = "") -> str:
        template = self.with_input if input_text else self.without_input
        return template.format_map({"instruction": instruction, "input": input_text})

    @classmethod
    def from_option(cls, value: str | None) -> "PromptTemplate":
        """`alpaca` (default), `none` (the prompt as given), a file holding a template, or a template string."""
        if value in (None, "", "alpaca"):
            return cls("alpaca", ALPACA_WITH_INPUT, ALPACA_WITHOUT_INPUT)
        if value == "none":
            return cls("none", "{instruction}\n\n{input}", "{instruction}")
        text = value
        if "{" not in value and Path(value).is_file():
            text = Path(value).read_text(encoding="utf-8")
        if "{instruction}" not in text:
            raise InputError(f"a prompt template must contain {{instruction}}; got {value!r}", parameter="template")
        try:
            text.format_map({"instruction": "", "input": ""})
        except (KeyError, ValueError, IndexError) as e:
            raise InputError(f"template {value!r} has a placeholder other than {{instruction}} and {{input}} ({e})", parameter="template") from None
        without = text if "{input}" not in text else text.replace("{input}", "").rstrip()
        return cls("custom", text, without)


@dataclass(frozen=True)
class Example:
    """One SFT example, normalised. Exactly one of (prompt, response) or messages is set."""

    example_id: str
    index: int  # position in the input file
    line: int | None
    source: str | None
    prompt: str | None = None
    response: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs
    excluded: str | None = None  # one of EMPTY_REASONS: kept in place, but nothing to learn from

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


def detect_format(record: Record) -> str | None:
    keys = record.data.keys()
    if "messages" in keys:
        return "chat"
    if "instruction" in keys and "output" in keys:
        return "mathinstruct" if "source" in keys else "alpaca"
    if "prompt" in keys and ("response" in keys or "completion" in keys):
        return "prompt-response"
    return None


def describe_value(value) -> str:
    """A value's kind for an error message: `int`, `list`, and NaN or Infinity by name (JSON allows neither, but
    Python's reader takes both)."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return f"the number {'NaN' if math.isnan(value) else repr(value).replace('inf', 'Infinity')}"
    return type(value).__name__


def _text_field(path: Path, record: Record, name: str, required: bool = True) -> str:
    if name not in record.data or record.data[name] is None:
        if required:
            null = ": it is null" if name in record.data else ""
            raise record_error(path, record, f"missing field {record.field_name(name)}{null}")
        return ""
    value = record.data[name]
    if not isinstance(value, str):
        raise record_error(path, record, f"field {record.field_name(name)} must be a string, got "
                                         f"{describe_value(value)}")
    return value


def _empty(path: Path, record: Record, strict: bool, reason: str, problem: str) -> str:
    """An empty request or answer teaches nothing but noise: the example is excluded (`reason`), or with
    `strict` the record is refused."""
    if strict:
        raise record_error(path, record, f"{problem} (--strict refuses such records; without it the example is "
                                         "left out and reported)")
    return reason


def _source(path: Path, record: Record) -> str | None:
    value = record.data.get("source")
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise record_error(path, record, f"field {record.field_name('source')} must be a string, got "
                                         f"{describe_value(value)}")
    return str(value)


# The roles a conversation may hold: those every chat template s2l renders knows (a template meets a "tool" or
# "function" turn with an error or renders it as text the model never learnt to read).
CHAT_ROLES = ("system", "user", "assistant")


def _messages(path: Path, record: Record, strict: bool) -> tuple[tuple[tuple[str, str], ...], str | None]:
    value = record.data.get("messages")
    name = record.field_name("messages")
    if not isinstance(value, list) or not value:
        raise record_error(path, record, f"field {name} must be a non-empty list of {{role, content}} objects")
    turns = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise record_error(path, record, f"messages[{i}] must be an object, got {describe_value(message)}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise record_error(path, record, f"messages[{i}] needs string 'role' and 'content' fields")
        if role not in CHAT_ROLES:
            raise record_error(path, record, f"messages[{i}] has role {role!r}, which the chat template does not "
                                             f"know; the roles allowed are {', '.join(CHAT_ROLES)}")
        turns.append((role, content))
    excluded = None
    empty = [i for i, (role, content) in enumerate(turns) if role == "assistant" and not content.strip()]
    if not any(role == "assistant" for role, _ in turns):
        excluded = _empty(path, record, strict, NO_ASSISTANT_TURN, "the conversation has no assistant turn, so "
                          "nothing to learn")
    elif empty:  # an empty turn would teach the model to end its turn at once
        excluded = _empty(path, record, strict, EMPTY_RESPONSE, f"messages[{empty[0]}]: the assistant turn is empty")
    return tuple(turns), excluded


def to_example(path: Path, record: Record, fmt: str, example_id: str, template: PromptTemplate,
               strict: bool = False) -> Example:
    """Check one record against its format and normalise it. An empty (or whitespace) prompt or response makes
    the example excluded (`Example.excluded`), or with `strict` is an error naming the record."""
    common = dict(example_id=example_id, index=record.index, line=record.line, source=_source(path, record))
    if fmt == "chat":
        messages, excluded = _messages(path, record, strict)
        return Example(**common, messages=messages, excluded=excluded)
    if fmt in ("alpaca", "mathinstruct"):
        prompt_key, response_key = "instruction", "output"
        instruction = _text_field(path, record, prompt_key)
        prompt = template.render(instruction, _text_field(path, record, "input", required=False))
    elif fmt == "prompt-response":
        prompt_key, response_key = "prompt", "response" if "response" in record.data else "completion"
        instruction = _text_field(path, record, prompt_key)
        prompt = template.render(instruction)
    else:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", parameter="format")
    response = _text_field(path, record, response_key)
    excluded = None
    if not response.strip():
        excluded = _empty(path, record, strict, EMPTY_RESPONSE, f"field {record.field_name(response_key)} is empty")
    elif not instruction.strip():
        excluded = _empty(path, record, strict, EMPTY_PROMPT, f"field {record.field_name(prompt_key)} is empty")
    return Example(**common, prompt=prompt, response=response, excluded=excluded)


def resolve_format(path: Path, records: list[Record], fmt: str) -> str:
    """The format to read all records with: forced, or detected from the first record."""
    if fmt != "auto":
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)} or auto", parameter="format")
        return fmt
    detected = detect_format(records[0])
    if detected is None:
        keys = ", ".join(sorted(records[0].data)) or "(none)"
        raise record_error(
            path, records[0],
            f"cannot tell the format from the fields ({keys}); expected instruction/output (alpaca), "
            "prompt/response or prompt/completion, or messages (chat); or name yours with --field (like "
            "--field instruction=question --field output=answer), or pass --format",
        )
    return detected

