"""Selection: trajectories (and the pool) in, a subset of exactly the budget out.

`make_selector(name, **params)` builds a method; `METHODS` holds them all. The registry finds every
module of this package and every `s2l.methods` entry point itself (base.py, docs/extending.md): a new
method is one file with `@register`, and needs no line here. The names below are for convenience.
"""

from s2l.selection.base import METHODS, Selector, make_selector, parse_budget, resolve_budget
from s2l.selection.s2l import S2L
from s2l.selection.lp import LearningPercentage
from s2l.selection.baselines import Cartography, ClusterRandom, RandomSelector, SourceRandom

__all__ = ["METHODS", "Selector", "make_selector", "parse_budget", "resolve_budget", "S2L", "LearningPercentage",
           "Cartography", "ClusterRandom", "RandomSelector", "SourceRandom"]
