"""Loss trajectories: the on-disk store, the batched scorer, and the proxy run that fills them."""

from s2l.trajectories.matrix import Trajectories
from s2l.trajectories.store import TrajectoryStore

__all__ = ["Trajectories", "TrajectoryStore"]
