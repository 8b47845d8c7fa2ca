"""The N x (T+1) trajectory matrix, aligned by example id, and its one-table form.

The table has `example_id`, `source`, `n_tokens` and one column per snapshot `loss_0 … loss_T`
(snapshot 0 is the untrained base model). It is what `s2l export` writes and what selection reads,
so losses computed elsewhere can be brought in the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2l.errors import InputError

LOSS_COLUMN = re.compile(r"^loss_(\d+)$")
SNAPSHOTS_METADATA = b"s2l.snapshots"  # the run's snapshot list, kept in an exported parquet table


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
        table = pa.table(columns)
        if self.snapshots:  # so `s2l select` on an exported table knows each column's epoch
            table = table.replace_schema_metadata({SNAPSHOTS_METADATA: json.dumps(self.snapshots).encode()})
        return table

    @classmethod
    def from_table(cls, path: str | Path, snapshot_epochs: list[float] | None = None) -> "Trajectories":
        """Read a table of `example_id`, optional `source` and `n_tokens`, and `loss_0 … loss_T`.

        `snapshot_epochs` gives each loss column's epoch (learning percentage needs them); a table
        written by `s2l export` carries them already.
        """
        path = Path(path)
        table = _read_table(path)
        csv = path.suffix.lower() == ".csv"

        def where(row: int) -> dict:  # csv: line numbers count the header; parquet: row numbers
            return {"line": row + 2} if csv else {"problem_suffix": f" (row {row + 1})"}

        names = table.column_names
        if "example_id" not in names:
            raise InputError(f"no example_id column (columns: {', '.join(names)})", path, 1 if csv else None)
        numbered = sorted((int(m.group(1)), name) for name in names if (m := LOSS_COLUMN.match(name)))
        if not numbered:
            raise InputError("no loss columns: expected loss_0 (the base model) … loss_T, one per snapshot", path,
                             1 if csv else None)
        if [k for k, _ in numbered] != list(range(len(numbered))):
            raise InputError(f"loss columns must be loss_0 … loss_T without gaps, got {', '.join(n for _, n in numbered)}",
                             path, 1 if csv else None)
        ids_column = table.column("example_id")
        if ids_column.null_count:
            row = ids_column.to_pylist().index(None)
            raise _row_error(path, "example_id is empty", **where(row))
        ids = np.asarray([str(v) for v in ids_column.to_pylist()], dtype=object)
        seen: dict[str, int] = {}
        for row, example_id in enumerate(ids):
            if example_id in seen:
                raise _row_error(path, f"example_id {example_id!r} repeats row {seen[example_id] + 1}", **where(row))
            seen[example_id] = row
        losses = np.empty((len(ids), len(numbered)))
        for k, name in numbered:
            try:
                losses[:, k] = table.column(name).cast("float64").to_numpy(zero_copy_only=False)
            except Exception as e:  # a text value in a loss column
                raise InputError(f"column {name} is not numeric ({type(e).__name__})", path, 1 if csv else None) from None
        bad = ~np.isfinite(losses)
        if bad.any():
            row, k = (int(v) for v in np.argwhere(bad)[0])
            raise _row_error(path, f"loss_{k} of {ids[row]!r} is {losses[row, k]} (losses must be finite numbers; "
                             f"{int(bad.any(axis=1).sum())} rows have such values)", **where(row))
        sources = None
        if "source" in names:
            values = table.column("source").to_pylist()
            if any(v is not None for v in values):
                sources = np.asarray([None if v is None else str(v) for v in values], dtype=object)
        n_tokens = (table.column("n_tokens").cast("int64").to_numpy(zero_copy_only=False) if "n_tokens" in names
                    else np.zeros(len(ids), dtype=np.int64))
        return cls(ids=ids, losses=losses, n_tokens=n_tokens, sources=sources,
                   snapshots=_table_snapshots(path, table, len(numbered), snapshot_epochs))

    def write_table(self, path: str | Path) -> None:
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        from s2l.fileio import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix.lower() == ".csv":
                pcsv.write_csv(self.to_table(), tmp)
            else:
                pq.write_table(self.to_table(), tmp)


def _read_table(path: Path):
    import pyarrow as pa

    if not path.is_file():
        raise InputError("no such file", path)
    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pcsv

            # ids stay text however they look; loss columns are parsed as numbers (empty = null).
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types={"example_id": pa.string(),
                                                                                         "source": pa.string()}))
        import pyarrow.parquet as pq

        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"cannot read the table: {str(e).splitlines()[0]}", path) from None


def _row_error(path: Path, problem: str, line: int | None = None, problem_suffix: str = "") -> InputError:
    return InputError(problem + problem_suffix, path, line)


def _table_snapshots(path: Path, table, n_columns: int, epochs: list[float] | None) -> list[dict]:
    if epochs is not None:
        if len(epochs) != n_columns:
            raise InputError(f"--snapshot-epochs gives {len(epochs)} epochs for {n_columns} loss columns", path)
        if epochs[0] != 0 or any(b < a for a, b in zip(epochs, epochs[1:])):
            raise InputError(f"--snapshot-epochs must start at 0 (the base model) and not decrease, got {epochs}", path)
        return [{"step": None, "epoch": float(e), "epoch_end": float(e) == int(e), "label": f"loss_{k}"}
                for k, e in enumerate(epochs)]
    stored = (table.schema.metadata or {}).get(SNAPSHOTS_METADATA)
    if stored:
        snapshots = json.loads(stored)
        if len(snapshots) == n_columns:
            return snapshots
    return [{"step": None, "epoch": None, "epoch_end": None, "label": f"loss_{k}"} for k in range(n_columns)]
