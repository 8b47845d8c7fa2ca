"""Selection: trajectories (and the pool) in, a subset of exactly the budget out.

Importing this package registers every method; `make_selector(name, **params)` builds one.
"""

from s2l.selection.base import METHODS, Selector, make_selector, parse_budget, resolve_budget
from s2l.selection.s2l import S2L
from s2l.selection.lp import LearningPercentage
from s2l.selection import baselines  # noqa: F401  (registers the baselines)
from s2l.selection import ifd  # noqa: F401  (registers ifd)
from s2l.selection.baselines import Cartography, ClusterRandom, RandomSelector, SourceRandom

__all__ = ["METHODS", "Selector", "make_selector", "parse_budget", "resolve_budget", "S2L", "LearningPercentage",
           "Cartography", "ClusterRandom", "RandomSelector", "SourceRandom"]
