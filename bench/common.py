"""What the bench scripts share: a generated example pool and the closing JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
