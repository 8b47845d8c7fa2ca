"""Helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The real published sets beside the repository (a fresh clone has none: tests that need them skip).
SHARED_DATA = Path(os.environ.get("S2L_SHARED_DATA") or ROOT / "../shared/data")
NO_SHARED_DATA = f"needs the real published data in {SHARED_DATA} (absent here, as in a fresh clone; set S2L_SHARED_DATA)"

# A proxy run of the tiny model in seconds: 2 epochs, 4 snapshots besides the base model.
FAST = dict(epochs=2, snapshots=4, batch_size=4, learning_rate=1e-3, precision="float32")


def make_pool(out: Path, size: int, seed: int = 0) -> Path:
    """examples/make_math_pool.py's pool of `size` math problems (and a 5-row test split) in `out`."""
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_math_pool.py"), "--out", str(out),
                    "--size", str(size), "--test-size", "5", "--seed", str(seed)],
                   check=True, capture_output=True)
    return out / "pool.jsonl"


def reference_losses(model, tokenized) -> np.ndarray:
    """The papers' way: one example at a time, transformers' `.loss` with the prompt labelled -100."""
    import torch

    out = []
    with torch.no_grad():
        for t in tokenized:
            ids = torch.tensor(t.input_ids, dtype=torch.long)[None]
            labels = ids.clone()
            labels[0, ~torch.tensor(t.loss_mask)] = -100
            out.append(model(input_ids=ids, labels=labels).loss.item())
    return np.array(out)
