"""The selector contract, budgets and the registry of methods.

A selector follows scikit-learn's estimator contract: `__init__` only stores its parameters,
`fit(trajectories, sources=None)` learns (state in attributes ending in `_`), and `select(budget)`
returns exactly `budget` distinct example ids. Every selector is registered by name so the CLI and a
notebook build the same object:

    >>> sel = make_selector("s2l", n_clusters=100, seed=0).fit(trajectories)
    >>> ids = sel.select(0.1)

Learned state shared by all selectors:
    ids_        (N,) example ids, in the order they were given
    sources_    (N,) source of each example (None when the data has no sources)
    excluded_   (N,) why an example cannot be selected ("" when it can): e.g. no_response_tokens
    scores_     (N,) the method's score (NaN where it has none, or for methods without one)
    labels_     (N,) cluster of each example (-1 where none, or for methods without clusters)
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections import Counter
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
        raise InputError(f"budget must be a count or a fraction, not {text!r}", "--budget")
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
            raise InputError(f"budget {text!r} is neither a count (3000) nor a fraction (0.1, 10%)", "--budget") from None
    if isinstance(value, float):
        if not (0.0 < value <= 1.0) or math.isnan(value):
            raise InputError(f"a fractional budget must be in (0, 1], got {text!r}", "--budget")
    elif value < 1:
        raise InputError(f"budget must be at least 1 example, got {text!r}", "--budget")
    return value


def resolve_budget(budget: str | int | float, n_usable: int, n_selectable: int | None = None) -> int:
    """The number of examples to deliver. Fractions are of `n_usable` (examples with a full trajectory),
    so every method gets the same count; asking for more than a method can select is an error."""
    value = parse_budget(budget)
    count = max(1, math.floor(value * n_usable + 0.5)) if isinstance(value, float) else value
    limit = n_usable if n_selectable is None else n_selectable
    if count > limit:
        extra = "" if limit == n_usable else f" (of {n_usable} with a trajectory, this method can use {limit})"
        raise InputError(f"budget {count} is larger than the {limit} examples that can be selected{extra}", "--budget")
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
    """Base class. Subclasses implement `_fit(t)` and `_select(count, rng)`; this class does the checks."""

    name = "selector"
    draw_stream = 0  # methods that share another's fit draw from their own random stream

    def __init__(self, seed: int = 0):
        self.seed = seed

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
        if inputs:
            raise TypeError(f"{self.name} takes no fit inputs besides trajectories and sources, got {sorted(inputs)}")

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
@dataclass(frozen=True)
class Method:
    name: str
    factory: Callable[..., Selector]
    description: str
    fixed: dict[str, Any]  # parameters the name implies (e.g. band="mid")

    def make(self, **params: Any) -> Selector:
        cls = self.factory
        accepted = set(cls._param_names())
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise InputError(f"method {self.name} does not take {', '.join(unknown)} "
                             f"(it takes: {', '.join(sorted(accepted - set(self.fixed))) or 'nothing'})", "--method")
        clash = sorted(set(params) & set(self.fixed))
        if clash:
            raise InputError(f"method {self.name} fixes {', '.join(clash)}", "--method")
        return cls(**self.fixed, **params)


METHODS: dict[str, Method] = {}


def register(name: str, description: str, **fixed: Any):
    """Class decorator: make a selector class available under `name` (once per fixed-parameter variant)."""
    def decorate(cls):
        METHODS[name] = Method(name, cls, description, fixed)
        return cls
    return decorate


def make_selector(method: str, **params: Any) -> Selector:
    """The selector registered as `method`, with `params` (only those it takes)."""
    import s2l.selection  # noqa: F401  (registers every method)

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)} (s2l select --method list)",
                         "--method")
    selector = METHODS[method].make(**params)
    selector.name = method
    return selector
