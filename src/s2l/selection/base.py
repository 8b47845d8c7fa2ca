"""The selector contract, budgets and the registry of methods.

A selector follows scikit-learn's estimator contract: `__init__` only stores its parameters,
`fit(trajectories, sources=None)` learns (state in attributes ending in `_`), and `select(budget)`
returns exactly `budget` distinct example ids. Every selector is registered by name so the CLI and a
notebook build the same object:

    >>> sel = make_selector("s2l", n_clusters=100, seed=0).fit(trajectories)
    >>> ids = sel.select(0.1)

A selector class declares what it needs and what it reports (docs/extending.md):
    fit_inputs            inputs `fit` takes besides the trajectories: "texts" (each example's request, to
                          embed), "embeddings", "lengths" (response lengths); `needed_inputs()` says which
                          of them `s2l select` must supply for the parameters given (default: all)
    manifest_attributes   learned attributes written into the selection manifest's "learned"
    uses_proxy            False for a method that reads nothing the proxy's training produced (random,
                          source-random, length): its cost leaves out the recording
    Parameters: block     in the class docstring, `name   help` lines: the help `s2l methods` shows

The registry (`METHODS`) finds its methods itself: the first time it is read it imports every module of
the `s2l.selection` package and loads every entry point of the group `s2l.methods` (other packages'
methods); a module's `@register` lines do the rest.

Learned state shared by all selectors:
    ids_        (N,) example ids, in the order they were given
    sources_    (N,) source of each example (None when the data has no sources)
    excluded_   (N,) why an example cannot be selected ("" when it can): e.g. no_response_tokens
    scores_     (N,) the method's score (NaN where it has none, or for methods without one)
    labels_     (N,) cluster of each example (-1 where none, or for methods without clusters)
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import pkgutil
import re
import types
import typing
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from s2l.errors import InputError
from s2l.trajectories.matrix import Trajectories

NO_RESPONSE_TOKENS = "no_response_tokens"


# -- budgets --------------------------------------------------------------------------------------------
def parse_budget(text: str | int | float) -> int | float:
    """'3000' → a count; '0.1' or '10%' → a fraction of the usable pool."""
    if isinstance(text, bool):
        raise InputError(f"budget must be a count or a fraction, not {text!r}", parameter="budget")
    if isinstance(text, (int, np.integer)):
        value: int | float = int(text)
    elif isinstance(text, (float, np.floating)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            if s.endswith("%"):
                value = float(s[:-1]) / 100.0
            elif any(c in s for c in ".eE"):
                value = float(s)
            else:
                value = int(s)
        except ValueError:
            raise InputError(f"budget {text!r} is neither a count (3000) nor a fraction (0.1, 10%)",
                             parameter="budget") from None
    if isinstance(value, float):
        if not (0.0 < value <= 1.0) or math.isnan(value):
            raise InputError(f"a fractional budget must be in (0, 1], got {text!r}", parameter="budget")
    elif value < 1:
        raise InputError(f"budget must be at least 1 example, got {text!r}", parameter="budget")
    return value


def resolve_budget(budget: str | int | float, n_usable: int, n_selectable: int | None = None) -> int:
    """The number of examples to deliver. Fractions are of `n_usable` (examples with a full trajectory),
    so every method gets the same count; asking for more than a method can select is an error."""
    value = parse_budget(budget)
    count = max(1, math.floor(value * n_usable + 0.5)) if isinstance(value, float) else value
    limit = n_usable if n_selectable is None else n_selectable
    if count > limit:
        extra = "" if limit == n_usable else f" (of {n_usable} with a trajectory, this method can use {limit})"
        raise InputError(f"budget {count} is larger than the {limit} examples that can be selected{extra}",
                         parameter="budget")
    return count


# -- trajectories in ------------------------------------------------------------------------------------
def as_trajectories(trajectories: Trajectories | np.ndarray, sources=None) -> Trajectories:
    """Accept the store's matrix or a plain (N, T+1) array (ids are then the row numbers)."""
    if isinstance(trajectories, Trajectories):
        t = trajectories
        if sources is not None:
            t = dataclasses.replace(t, sources=np.asarray(sources, dtype=object))
        return t
    losses = np.asarray(trajectories, dtype=np.float64)
    if losses.ndim != 2:
        raise ValueError(f"trajectories must be a 2-D array (examples x snapshots), got shape {losses.shape}")
    ids = np.asarray([str(i) for i in range(len(losses))], dtype=object)
    return Trajectories(ids=ids, losses=losses, n_tokens=np.zeros(len(losses), dtype=np.int64),
                        sources=None if sources is None else np.asarray(sources, dtype=object))


# -- the contract -----------------------------------------------------------------------------------------
class Selector:
    """Base class. Subclasses implement `_fit(t, **inputs)` and `_select(count, rng)`; this class does the checks.

    Parameters:
        seed                 seeds every random choice the method makes
    """

    name = "selector"
    draw_stream = 0  # methods that share another's fit draw from their own random stream
    fit_inputs: tuple[str, ...] = ()  # what `fit` takes besides trajectories and sources
    manifest_attributes: tuple[str, ...] = ()  # learned attributes the manifest records (those that are set)
    uses_proxy = True  # reads what the proxy's training produced (False: the pool's tokens alone), so pays for it

    def __init__(self, seed: int = 0):
        self.seed = seed

    def needed_inputs(self) -> tuple[str, ...]:
        """The fit inputs `s2l select` must supply with these parameters (e.g. texts only when diversity is on)."""
        return tuple(self.fit_inputs)

    # scikit-learn style parameters: the __init__ arguments, read back from the attributes.
    @classmethod
    def _param_names(cls) -> list[str]:
        names = []
        for klass in cls.__mro__:
            if "__init__" in vars(klass):
                for p in inspect.signature(klass.__init__).parameters.values():
                    if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names:
                        names.append(p.name)
        return names

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def fit(self, trajectories: Trajectories | np.ndarray, sources=None, **inputs) -> "Selector":
        unknown = sorted(set(inputs) - set(self.fit_inputs))
        if unknown:
            raise TypeError(f"{self.name} takes no fit input {', '.join(unknown)} besides trajectories and sources"
                            + (f" (it takes: {', '.join(self.fit_inputs)})" if self.fit_inputs else ""))
        t = as_trajectories(trajectories, sources)
        n = len(t.ids)
        self.ids_ = np.asarray(t.ids, dtype=object)
        self.sources_ = None if t.sources is None else np.asarray(t.sources, dtype=object)
        self.excluded_ = np.where(t.usable, "", NO_RESPONSE_TOKENS).astype(object)
        self.n_usable_ = int(t.usable.sum())
        self.scores_ = np.full(n, np.nan)
        self.labels_ = np.full(n, -1, dtype=np.int64)
        self.details_: dict[str, np.ndarray] = {}
        self.warnings_: list[str] = []  # things the user should know about this fit (printed, kept in the manifest)
        self._fit(t, **inputs)
        return self

    def select(self, budget: str | int | float) -> np.ndarray:
        """Exactly `budget` distinct, selectable example ids, in the order the examples were given."""
        if not hasattr(self, "ids_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(trajectories) first")
        selectable = self.excluded_ == ""
        count = resolve_budget(budget, self.n_usable_, int(selectable.sum()))
        rng = np.random.default_rng([self.seed, self.draw_stream])
        rows = np.asarray(self._select(count, rng), dtype=np.int64)
        # A method reproducing a reference that overshoots says so (`delivered_`); every other delivers `count`.
        count = getattr(self, "delivered_", count)
        # The contract every method must keep; a failure here is a bug in the method, not bad input.
        if len(rows) != count or len(np.unique(rows)) != count or not selectable[rows].all():
            raise AssertionError(f"{self.name} returned {len(rows)} rows ({len(np.unique(rows))} distinct) "
                                 f"for a budget of {count}")
        self.selected_ = np.sort(rows)
        return self.ids_[self.selected_]

    def exclusion_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r for r in self.excluded_ if r).items()))

    # -- for subclasses ---------------------------------------------------------------------------------
    def _fit(self, t: Trajectories, **inputs) -> None:
        """Learn from the trajectories (and the declared `fit_inputs`); nothing to learn by default."""

    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _selectable_rows(self) -> np.ndarray:
        return np.flatnonzero(self.excluded_ == "")


class RankingSelector(Selector):
    """Takes the `count` selectable examples with the lowest (or highest) `scores_`; ties go to the
    earlier example, so the result is the same on every run."""

    ascending = True

    def _select(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return self._ranked_rows()[:count]

    def _ranked_rows(self) -> np.ndarray:
        rows = self._selectable_rows()
        key = self.scores_[rows] if self.ascending else -self.scores_[rows]
        return rows[np.argsort(key, kind="stable")]


# -- registry -------------------------------------------------------------------------------------------
ENTRY_POINT_GROUP = "s2l.methods"  # other packages' methods: an entry point naming a module that registers them


@dataclass(frozen=True)
class Parameter:
    """One parameter of a method, as `s2l methods` shows it and `--param NAME=VALUE` converts it."""

    name: str
    default: Any  # inspect.Parameter.empty when there is none
    annotation: Any  # the evaluated type hint, or None
    help: str
    fixed: bool  # set by the method's name (e.g. approx=True for lp-app)

    def convert(self, text: str) -> Any:
        """`text` as this parameter's type: int, float, bool (true/false), none, text, or comma-separated lists."""
        for kind in _kinds(self.annotation, self.default):
            try:
                return _convert(kind, text.strip())
            except ValueError:
                continue
        expected = " or ".join(_describe(k) for k in _kinds(self.annotation, self.default))
        raise InputError(f"expected {expected}, got {text!r}", parameter=self.name)


@dataclass(frozen=True)
class Method:
    name: str
    factory: Callable[..., Selector]
    description: str
    fixed: dict[str, Any]  # parameters the name implies (e.g. band="mid")

    def parameters(self) -> list[Parameter]:
        """Every parameter, in the order of the selector's `__init__` (subclass first), fixed ones included."""
        cls = self.factory
        hints, helps = {}, _docstring_help(cls)
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass):
                try:
                    hints.update(typing.get_type_hints(klass.__init__))
                except Exception:  # an annotation that does not evaluate: convert by the default instead
                    pass
        result = []
        for name in cls._param_names():
            default = inspect.Parameter.empty
            for klass in cls.__mro__:
                if "__init__" in vars(klass):
                    p = inspect.signature(klass.__init__).parameters.get(name)
                    if p is not None:
                        default = p.default
                        break
            result.append(Parameter(name, self.fixed.get(name, default), hints.get(name), helps.get(name, ""),
                                    name in self.fixed))
        return result

    def parameter(self, name: str) -> Parameter:
        """The parameter `name` that a user may set (not one the method's name fixes)."""
        self._check_names({name: None})
        return next(p for p in self.parameters() if p.name == name)

    def parse_params(self, texts: dict[str, str]) -> dict[str, Any]:
        """Parameter values given as text (`n_clusters="50"`), converted by each parameter's type."""
        self._check_names(texts)
        by_name = {p.name: p for p in self.parameters()}
        return {name: by_name[name].convert(text) for name, text in texts.items()}

    def make(self, **params: Any) -> Selector:
        self._check_names(params)
        return self.factory(**self.fixed, **params)

    def _check_names(self, params) -> None:
        accepted = set(self.factory._param_names())
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise InputError(f"method {self.name} does not take {', '.join(unknown)} "
                             f"(it takes: {', '.join(sorted(accepted - set(self.fixed))) or 'nothing'})",
                             parameter="method")
        clash = sorted(set(params) & set(self.fixed))
        if clash:
            raise InputError(f"method {self.name} fixes {', '.join(clash)}", parameter="method")


class Registry(Mapping):
    """Methods by name, in the order they were registered. Reading it the first time imports every module of
    this package and every `s2l.methods` entry point, so a method needs no import line anywhere."""

    def __init__(self):
        self._methods: dict[str, Method] = {}
        self._discovered = False

    def add(self, method: Method) -> None:
        old = self._methods.get(method.name)
        if old is not None and _qualname(old.factory) != _qualname(method.factory):
            raise ValueError(f"selection method {method.name!r} is registered twice: by {_qualname(old.factory)} "
                             f"and by {_qualname(method.factory)}")
        self._methods[method.name] = method

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # first: a module that reads the registry while it is imported sees it as is
        import s2l.selection as package

        for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{module.name}")
        from importlib.metadata import entry_points

        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            try:
                ep.load()
            except Exception as e:  # one broken plugin must not take every method down
                warnings.warn(f"the selection methods of entry point {ep.name!r} ({ep.value}) could not be loaded: "
                              f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)

    def __getitem__(self, name: str) -> Method:
        self.discover()
        return self._methods[name]

    def __iter__(self) -> Iterator[str]:
        self.discover()
        return iter(list(self._methods))

    def __len__(self) -> int:
        self.discover()
        return len(self._methods)

    def __contains__(self, name) -> bool:
        self.discover()
        return name in self._methods


METHODS = Registry()


def register(name: str, description: str, **fixed: Any):
    """Class decorator: make a selector class available under `name` (once per fixed-parameter variant)."""
    def decorate(cls):
        METHODS.add(Method(name, cls, description, fixed))
        return cls
    return decorate


def get_method(name: str) -> Method:
    """The registered method `name`; an unknown name is an InputError that lists the known ones."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}", parameter="method")
    return METHODS[name]


def make_selector(method: str, **params: Any) -> Selector:
    """The selector registered as `method`, with `params` (only those it takes)."""
    selector = get_method(method).make(**params)
    selector.name = method
    return selector


# -- parameters from text ---------------------------------------------------------------------------------
_NONE = ("none", "null")
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_ORDER = (type(None), bool, int, float, list, str)  # tried in this order: "5" is an int before it is a text


def _kinds(annotation, default) -> list:
    """The types a parameter takes: from its annotation, else from its default (None: also text)."""
    kinds = []
    if annotation is not None and annotation is not Any:
        for a in (typing.get_args(annotation) if isinstance(annotation, types.UnionType)
                  or typing.get_origin(annotation) is typing.Union else (annotation,)):
            origin = typing.get_origin(a)
            if origin in (list, tuple) or a in (list, tuple):
                args = [x for x in typing.get_args(a) if x is not Ellipsis]
                kinds.append((list, args[0] if args else str))
            elif a in _ORDER:
                kinds.append(a)
    if not kinds:  # not annotated, or with types we do not convert: go by the default
        if default is None or default is inspect.Parameter.empty:
            kinds = [type(None), bool, int, float, str]
        elif isinstance(default, (list, tuple)):
            kinds = [(list, type(default[0]) if default and type(default[0]) in (int, float) else str)]
        else:
            kinds = [type(default)] if type(default) in _ORDER else [str]
    return sorted(kinds, key=lambda k: _ORDER.index(k[0] if isinstance(k, tuple) else k))


def _convert(kind, text: str):
    if kind is type(None):
        if text.lower() in _NONE:
            return None
    elif kind is bool:
        if text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
    elif kind is int:
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
    elif kind is float:
        return float(text)  # ValueError when it is not a number
    elif isinstance(kind, tuple):
        items = [x.strip() for x in text.split(",")]
        if all(items):
            return [_convert(kind[1], x) for x in items]
    elif kind is str:
        return text
    raise ValueError(text)


def _describe(kind) -> str:
    if isinstance(kind, tuple):
        return f"a comma-separated list of {_describe(kind[1]).split(' ', 1)[1]}s"
    return {type(None): "none", bool: "true or false", int: "a whole number", float: "a number",
            str: "a text"}.get(kind, getattr(kind, "__name__", str(kind)))


def _docstring_help(cls) -> dict[str, str]:
    """Per-parameter help from `name   help` lines in the docstrings of the class and its bases."""
    names = set(cls._param_names())
    helps: dict[str, str] = {}
    for klass in cls.__mro__:
        for name, text in re.findall(r"^[ \t]+(\w+)[ \t]{2,}(\S.*)$", klass.__doc__ or "", re.M):
            if name in names:
                helps.setdefault(name, text.strip())
    return helps


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
