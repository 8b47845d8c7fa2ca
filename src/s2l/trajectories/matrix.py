"""The N x (T+1) trajectory matrix, aligned by example id, and its one-table form.

The table has `example_id`, `source`, `n_tokens` and one column per snapshot `loss_0 … loss_T`
(snapshot 0 is the untrained base model). It is what `s2l export` writes and what selection reads,
so losses computed elsewhere can be brought in the same way. The measures a store keeps besides the
loss go in the same way, when there are any: `top1_prob_0 … top1_prob_T` (the mean top-1 token probability,
least-confidence's) and `loss_alone_0 … loss_alone_T` (the response's loss without its prompt, IFD's);
empty or NaN where a snapshot has none.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2l.errors import InputError

LOSS_COLUMN = re.compile(r"^loss_(\d+)$")
SNAPSHOTS_METADATA = b"s2l.snapshots"  # the run's snapshot list, kept in an exported parquet table
# Measures besides the loss: the attribute, and its columns' prefix in a table (the store's cell column).
TABLE_MEASURES = {"confidence": "top1_prob", "loss_alone": "loss_alone"}
# For the messages of the methods that need a measure: what it is, why a store may lack it, what makes it.
MEASURE_HELP = {
    "confidence": ("the mean top-1 token probability (top1_prob)", "a store recorded before s2l kept it",
                   "score the pool again into a new run: `s2l score --data POOL --checkpoint CKPT ... --out NEW` with "
                   "the run's checkpoints (`record --keep-checkpoints` keeps them), or `s2l record` into a new --out"),
    "loss_alone": ("each response's loss without its prompt (loss_alone)", "a store recorded without --ifd",
                   "score with --ifd into a new run: `s2l score --ifd --data POOL --checkpoint PROXY --out NEW` (the "
                   "base proxy alone gives snapshot 0), or `s2l record --ifd` into a new --out"),
}


@dataclass
class Trajectories:
    ids: np.ndarray  # (N,) str
    losses: np.ndarray  # (N, T+1) float64; NaN where an example has no loss (no response token)
    n_tokens: np.ndarray  # (N,) int, loss-carrying tokens
    sources: np.ndarray | None = None  # (N,) str or None
    snapshots: list[dict] = field(default_factory=list)  # step, epoch, epoch_end per column
    # Mean top-1 token probability over the response positions, per example and snapshot: the proxy's
    # confidence in its own predictions. (N, T+1), NaN where a cell has none; None when nothing has it.
    confidence: np.ndarray | None = None
    loss_alone: np.ndarray | None = None  # (N, T+1): the response's loss without its prompt (`ifd` runs)

    @property
    def shape(self) -> tuple[int, int]:
        return self.losses.shape

    @property
    def usable(self) -> np.ndarray:
        """Rows with a loss at every snapshot."""
        return np.isfinite(self.losses).all(axis=1)

    def take(self, rows: np.ndarray) -> "Trajectories":
        """These rows (every per-example array), in this order."""
        pick = lambda a: None if a is None else np.asarray(a)[rows]  # noqa: E731
        return dataclasses.replace(self, ids=self.ids[rows], losses=self.losses[rows], n_tokens=pick(self.n_tokens),
                                   sources=pick(self.sources), confidence=pick(self.confidence),
                                   loss_alone=pick(self.loss_alone))

    def measure(self, name: str, column: int, method: str, usable: np.ndarray) -> np.ndarray:
        """Column `column` of the measure `name` ("confidence", "loss_alone") for a method that needs it; an
        InputError saying what makes it when the trajectories lack it for any `usable` row, never a stand-in.

        The one NaN a scored cell holds for an example with response tokens: `loss_alone` of a one-token
        response with no BOS before it (nothing to predict it from); the method excludes those."""
        what, why, fix = MEASURE_HELP[name]
        values = getattr(self, name)
        if values is None:
            raise InputError(f"{method} needs {what}, which these trajectories do not hold ({why}, or a table "
                             f"without {TABLE_MEASURES[name]}_K columns); {fix}. Every other method reads them as "
                             "they are", "--trajectories")
        snapshot = self.snapshots[column] if column < len(self.snapshots) else {}
        if snapshot.get("capture") == "visits":
            raise InputError(f"{method}: snapshot {column} ({snapshot.get('label')}) is an in-training visit column, "
                             f"which keeps only the loss of the training pass, not {what}; choose a scored column "
                             "(the base model or the final pass)", "--trajectories")
        unscorable = (np.asarray(self.n_tokens) <= 1) if name == "loss_alone" else np.zeros(len(usable), dtype=bool)
        lacking = usable & ~np.isfinite(values[:, column]) & ~unscorable
        if lacking.any():
            raise InputError(f"{method} needs {what} at snapshot {column}, which {int(lacking.sum())} example(s) lack "
                             "(its cells were written without it, or, in a run resumed across s2l versions, some of "
                             f"them); {fix}", "--trajectories")
        return values[:, column]

    def to_table(self):
        import pyarrow as pa

        columns = {"example_id": pa.array(self.ids.tolist(), pa.string())}
        sources = self.sources.tolist() if self.sources is not None else [None] * len(self.ids)
        columns["source"] = pa.array(sources, pa.string())
        columns["n_tokens"] = pa.array(self.n_tokens.astype(np.int64))
        for k in range(self.losses.shape[1]):
            columns[f"loss_{k}"] = pa.array(self.losses[:, k])
        for name, prefix in TABLE_MEASURES.items():
            values = getattr(self, name)
            for k in range(0 if values is None else values.shape[1]):
                columns[f"{prefix}_{k}"] = pa.array(values[:, k], mask=np.isnan(values[:, k]))
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
        measures = {name: _measure_columns(path, table, prefix, len(numbered), csv)
                    for name, prefix in TABLE_MEASURES.items()}
        return cls(ids=ids, losses=losses, n_tokens=n_tokens, sources=sources,
                   snapshots=_table_snapshots(path, table, len(numbered), snapshot_epochs), **measures)

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


def _measure_columns(path: Path, table, prefix: str, n_columns: int, csv: bool) -> np.ndarray | None:
    """A measure's `PREFIX_0 … PREFIX_T` columns of a table (any of them may be absent, or empty where a
    snapshot has none), or None when it has none."""
    present = {int(m.group(1)): name for name in table.column_names
               if (m := re.fullmatch(re.escape(prefix) + r"_(\d+)", name))}
    if not present:
        return None
    beyond = sorted(k for k in present if k >= n_columns)
    if beyond:
        raise InputError(f"column {present[beyond[0]]} has no loss column loss_{beyond[0]}", path, 1 if csv else None)
    values = np.full((table.num_rows, n_columns), np.nan)
    for k, name in present.items():
        try:
            column = table.column(name).cast("float64")
        except Exception as e:  # a text value
            raise InputError(f"column {name} is not numeric ({type(e).__name__})", path, 1 if csv else None) from None
        values[:, k] = column.to_numpy(zero_copy_only=False)  # nulls come out as NaN
    return values


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
