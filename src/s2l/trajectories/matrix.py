"""The N x (T+1) trajectory matrix, aligned by example id, and its one-table form.

The table has `example_id`, `source`, `n_tokens` and one column per snapshot `loss_0 … loss_T`
(snapshot 0 is the untrained base model). It is what `s2l export` writes and what selection reads,
so losses computed elsewhere can be brought in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Trajectories:
    ids: np.ndarray  # (N,) str
    losses: np.ndarray  # (N, T+1) float64; NaN where an example has no loss (no response token)
    n_tokens: np.ndarray  # (N,) int, loss-carrying tokens
    sources: np.ndarray | None = None  # (N,) str or None
    snapshots: list[dict] = field(default_factory=list)  # step, epoch, epoch_end per column

    @property
    def shape(self) -> tuple[int, int]:
        return self.losses.shape

    @property
    def usable(self) -> np.ndarray:
        """Rows with a loss at every snapshot."""
        return np.isfinite(self.losses).all(axis=1)

    def to_table(self):
        import pyarrow as pa

        columns = {"example_id": pa.array(self.ids.tolist(), pa.string())}
        sources = self.sources.tolist() if self.sources is not None else [None] * len(self.ids)
        columns["source"] = pa.array(sources, pa.string())
        columns["n_tokens"] = pa.array(self.n_tokens.astype(np.int64))
        for k in range(self.losses.shape[1]):
            columns[f"loss_{k}"] = pa.array(self.losses[:, k])
        return pa.table(columns)

    def write_table(self, path: str | Path) -> None:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        from s2l.io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix.lower() == ".csv":
                pcsv.write_csv(self.to_table(), tmp)
            else:
                pq.write_table(self.to_table(), tmp)
