"""What the bench scripts share: a generated example pool, the matmul peak measured in the same process, other
processes' CPU share, and the closing JSON line. Importing it quiets the libraries' chatter and warnings (set
before any bench imports transformers), so the figures are what a bench prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def math_pool(folder: Path, size: int, test_size: int = 10, seed: int = 0) -> Path:
    """`size` math examples from examples/make_math_pool.py in `folder` (made once), as folder/pool.jsonl."""
    pool = Path(folder) / "pool.jsonl"
    if not pool.is_file():
        made = subprocess.run([sys.executable, str(REPO / "examples" / "make_math_pool.py"), "--out", str(folder),
                               "--size", str(size), "--test-size", str(test_size), "--seed", str(seed)],
                              capture_output=True, text=True)
        if made.returncode:
            sys.exit(f"making the example pool failed:\n{made.stderr[-2000:]}")
    return pool


def emit(result: dict, out_json: str | None) -> dict:
    """The bench contract: the headline figures as one JSON object, the last line of stdout (and a file)."""
    if out_json:
        Path(out_json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


class MatmulPeak:
    """The machine's matmul GFLOP/s: square `torch.matmul` per dtype and size, the fastest of all samples.

    Samples are taken a few at a time between the variants' pieces (and the rest at the end), so the
    peak is measured under the same load from other processes as the variants it is compared with.
    """

    def __init__(self, dtypes, sizes):
        self.operands = {(d, n): (torch.randn(n, n).to(d), torch.randn(n, n).to(d)) for d in dtypes for n in sizes}
        self.best = {key: float("inf") for key in self.operands}
        self.samples = {key: 0 for key in self.operands}
        for a, b in self.operands.values():
            torch.matmul(a, b)  # warm-up

    def sample(self) -> None:
        for key, (a, b) in self.operands.items():
            start = time.perf_counter()
            torch.matmul(a, b)
            self.best[key] = min(self.best[key], time.perf_counter() - start)
            self.samples[key] += 1

    def sampler(self, times: int):
        def run():
            for _ in range(times):
                self.sample()
        return run

    def gflops(self, dtype) -> dict[int, float]:
        return {n: 2 * n**3 / t / 1e9 for (d, n), t in self.best.items() if d == dtype}


class CpuShare:
    """How much of the machine's CPU time other processes took while we ran (Linux /proc/stat; None elsewhere)."""

    def __init__(self):
        self.start = self._now()

    @staticmethod
    def _now():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
        ticks = os.sysconf("SC_CLK_TCK")
        return busy / ticks, time.process_time(), time.perf_counter()

    def others(self) -> float | None:
        """Share of all CPUs' time used by other processes since construction (0 = a quiet machine)."""
        end = self._now()
        if self.start is None or end is None:
            return None
        busy, ours, wall = (b - a for a, b in zip(self.start, end))
        return max(0.0, (busy - ours) / (wall * (os.cpu_count() or 1)))
