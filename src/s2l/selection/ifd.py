"""Instruction-following difficulty, IFD (Li et al., NAACL 2024 "From Quantity to Quality", the Cherry
data; and with a small model, Li et al., ACL 2024 "Superfiltering").

    IFD = loss(response | prompt) / loss(response alone)

both the mean cross-entropy over the same response tokens (EOS included), the first from the store's loss
column, the second from its `loss_alone` column (`record`/`score` with `--ifd`: the response scored with no
prompt, after the BOS when the model's inputs start with one). A high IFD means the prompt helps little
in predicting the response: the examples the papers keep. IFD >= 1 (the prompt does not help at all, or
hurts) marks a response that does not follow from its instruction; those are excluded, as the papers
filter them, and counted. The rest are ranked highest IFD first.

By default the proxy's base model scores (snapshot 0: the papers use a model before any fine-tuning on the
pool, Superfiltering a small one); any snapshot can be chosen.
"""

from __future__ import annotations

import numpy as np

from s2l.errors import InputError
from s2l.selection.base import RankingSelector, register
from s2l.selection.baselines import one_column
from s2l.trajectories.matrix import Trajectories

AT_LEAST_ONE = "ifd_at_least_1"
NOT_FINITE = "ifd_not_finite"
RATIOS = ("loss", "perplexity")


@register("ifd", "Instruction-following difficulty loss(response | prompt) / loss(response alone): the highest "
          "below 1 first (Cherry, Superfiltering); needs a run scored with --ifd")
class IFD(RankingSelector):
    """Parameters:
        snapshot   the column that scores (default 0, the base model; -1 the final snapshot)
        ratio      "loss": the ratio of mean losses (the Cherry paper's definition and its selection code);
                   "perplexity": the ratio of perplexities exp(loss) (Superfiltering's code), which ranks by
                   the loss difference instead. Both exclude the same examples (ratio >= 1).
        seed       unused (the ranking is deterministic; ties go to the earlier example)
    """

    ascending = False
    manifest_attributes = ("snapshot_columns_",)

    def __init__(self, snapshot: int = 0, ratio: str = "loss", seed: int = 0):
        self.snapshot = snapshot
        self.ratio = ratio
        self.seed = seed

    def _fit(self, t: Trajectories) -> None:
        if self.ratio not in RATIOS:
            raise InputError(f"unknown ratio {self.ratio!r}; choose one of {', '.join(RATIOS)}", parameter="ratio")
        column = one_column(self.snapshot, t.losses.shape[1])
        usable = self.excluded_ == ""
        alone = t.measure("loss_alone", column, "ifd", usable)
        prompted = t.losses[:, column]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ifd = prompted / alone if self.ratio == "loss" else np.exp(prompted - alone)
        self.excluded_[usable & ~np.isfinite(ifd)] = NOT_FINITE  # a response alone with nothing to score, or 0 loss
        self.excluded_[(self.excluded_ == "") & (ifd >= 1)] = AT_LEAST_ONE
        self.details_ = {"ifd": np.where(usable, ifd, np.nan), "loss_alone": np.where(usable, alone, np.nan)}
        self.scores_ = np.where(self.excluded_ == "", ifd, np.nan)
        self.snapshot_columns_ = [column]
