"""SFT record formats and prompt templates.

A record becomes an `Example`: either a prompt/response pair (alpaca, prompt-response and
MathInstruct-style records, rendered through a prompt template) or a chat conversation (`messages`,
rendered later with the tokenizer's own chat template, loss on assistant turns only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from s2l.data.readers import Record, record_error
from s2l.errors import InputError

FORMATS = ("alpaca", "mathinstruct", "prompt-response", "chat")

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


def _text_field(path: Path, record: Record, name: str, required: bool = True) -> str:
    if name not in record.data or record.data[name] is None:
        if required:
            raise record_error(path, record, f"missing field {name!r}")
        return ""
    value = record.data[name]
    if not isinstance(value, str):
        raise record_error(path, record, f"field {name!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():  # an empty request or answer teaches nothing but noise
        raise record_error(path, record, f"field {name!r} is empty")
    return value


def _source(path: Path, record: Record) -> str | None:
    value = record.data.get("source")
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise record_error(path, record, f"field 'source' must be a string, got {type(value).__name__}")
    return str(value)


def _messages(path: Path, record: Record) -> tuple[tuple[str, str], ...]:
    value = record.data.get("messages")
    if not isinstance(value, list) or not value:
        raise record_error(path, record, "field 'messages' must be a non-empty list of {role, content} objects")
    turns = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise record_error(path, record, f"messages[{i}] must be an object, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise record_error(path, record, f"messages[{i}] needs string 'role' and 'content' fields")
        turns.append((role, content))
    if not any(role == "assistant" for role, _ in turns):
        raise record_error(path, record, "the conversation has no assistant turn, so nothing to learn")
    if not any(role == "assistant" and content.strip() for role, content in turns):
        raise record_error(path, record, "every assistant turn is empty, so nothing to learn")
    return tuple(turns)


def to_example(path: Path, record: Record, fmt: str, example_id: str, template: PromptTemplate) -> Example:
    """Check one record against its format and normalise it."""
    common = dict(example_id=example_id, index=record.index, line=record.line, source=_source(path, record))
    if fmt == "chat":
        return Example(**common, messages=_messages(path, record))
    if fmt in ("alpaca", "mathinstruct"):
        instruction = _text_field(path, record, "instruction")
        input_text = _text_field(path, record, "input", required=False)
        return Example(**common, prompt=template.render(instruction, input_text), response=_text_field(path, record, "output"))
    if fmt == "prompt-response":
        response_key = "response" if "response" in record.data else "completion"
        prompt = template.render(_text_field(path, record, "prompt"))
        return Example(**common, prompt=prompt, response=_text_field(path, record, response_key))
    raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", parameter="format")


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
            "prompt/response or prompt/completion, or messages (chat); or pass --format",
        )
    return detected

