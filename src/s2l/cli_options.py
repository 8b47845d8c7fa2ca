"""Command-line options built from the config dataclasses (`s2l.config`), so that every default and help
text is written once, beside the field it belongs to.

    @app.command()
    @config_options(config=RecordConfig, data_config=DataConfig)
    def record(data: Path = ..., *, config: RecordConfig, data_config: DataConfig): ...

adds one option per field (`--learning-rate` for `learning_rate`, or the field's own `flags`; a nested
config's fields too; a `tuple[str, ...]` field is an option given once per item) and calls the command with
the built configs under the keywords given. The option's name is the field's, so an error that names a parameter (`learning_rate`) is shown as its flag.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from typing import Any, List, Optional, Union

import typer


def _fields(cls) -> list[tuple[dataclasses.Field, Any]]:
    """(field, type) for every command-line field of `cls`, nested configs' fields in their place."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += _fields(kind)
        elif f.metadata.get("cli", True):
            out.append((f, kind))
    return out


def _repeatable(kind) -> bool:
    """A `tuple[str, ...]` field: an option given once per item (`--field a=b --field c=d`)."""
    return typing.get_origin(kind) is tuple and typing.get_args(kind)[1:] == (Ellipsis,)


def _option_type(kind):
    """`str | None` as Typer understands it; a `tuple[str, ...]` as a repeatable option."""
    if _repeatable(kind):
        return Optional[List[typing.get_args(kind)[0]]]
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return Optional[args[0]]
    return kind


def _option(f: dataclasses.Field, kind) -> Any:
    flags = f.metadata.get("flags") or ()
    if not flags:
        flag = "--" + f.name.replace("_", "-")
        flags = (f"{flag}/--no-{flag[2:]}",) if kind is bool and f.default is True else (flag,)
    # A repeatable option given no time is None; the config turns it into its empty default.
    return typer.Option(None if _repeatable(kind) else f.default, *flags, help=f.metadata.get("help") or None)


def field_option(cls, name: str) -> Any:
    """The option for one field of `cls`, for a command that takes only some of a config's fields."""
    hints = typing.get_type_hints(cls)
    return _option(next(f for f in dataclasses.fields(cls) if f.name == name), hints[name])


def _build(cls, values: dict[str, Any]):
    """`cls` from the option values (taken out of `values`), nested configs built the same way."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values)
        elif f.name in values:
            kwargs[f.name] = values.pop(f.name)
    return cls(**kwargs)


def config_options(**configs: type) -> typing.Callable:
    """Decorate a Typer command: an option for every field of each config class, the built config passed
    as the keyword it is given under."""
    def decorate(command):
        signature = inspect.signature(command)
        own = [p for name, p in signature.parameters.items() if name not in configs]
        taken = {p.name for p in own}
        added = []
        for cls in configs.values():
            for f, kind in _fields(cls):
                if f.name in taken:
                    raise TypeError(f"option {f.name} of {cls.__name__} is declared twice in {command.__name__}")
                taken.add(f.name)
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_option(f, kind),
                                               annotation=_option_type(kind)))

        @functools.wraps(command)
        def wrapper(**values):
            built = {keyword: _build(cls, values) for keyword, cls in configs.items()}
            return command(**values, **built)

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        wrapper.__signature__ = signature.replace(parameters=parameters)
        hints = typing.get_type_hints(command)
        wrapper.__annotations__ = {p.name: hints.get(p.name, p.annotation) for p in parameters}
        return wrapper
    return decorate
