"""A store at an fsspec URL: `score` writes it, `select`, `export` and `info` read it (fsspec's in-memory
file system stands in for object storage)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from s2l.cli import app
from s2l.errors import InputError
from s2l.selection.run import run_selection
from s2l.trajectories import TrajectoryStore
from s2l.trajectories.record import RecordConfig, ScoreConfig, record, score

runner = CliRunner()


def test_a_store_at_a_url_equals_the_local_one(tiny_model_dir, math_pool, tmp_path):
    config = ScoreConfig(shard_size=16)
    local = score(math_pool, [str(tiny_model_dir)], tmp_path / "local", score_config=config, show_progress=False)
    url = "memory://s2l-test/runs/remote"
    remote = score(math_pool, [str(tiny_model_dir)], url, score_config=config, show_progress=False)
    assert str(remote.root) == url and remote.manifest["complete"]
    np.testing.assert_array_equal(remote.load().losses, local.load().losses)
    assert remote.fingerprint() == local.fingerprint()
    # Run again: every cell is found finished.
    again = score(math_pool, [str(tiny_model_dir)], url, score_config=config, show_progress=False)
    assert again.fingerprint() == local.fingerprint()

    for run in (str(tmp_path / "local"), url):
        result = run_selection(run, math_pool, "random", 10, tmp_path / f"sel-{len(run)}", seed=0)
        assert len(result.ids) == 10
    local_ids = (tmp_path / f"sel-{len(str(tmp_path / 'local'))}" / "selected_ids.txt").read_text()
    assert (tmp_path / f"sel-{len(url)}" / "selected_ids.txt").read_text() == local_ids

    info = runner.invoke(app, ["info", url])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["complete"] is True
    exported = runner.invoke(app, ["export", url, "--out", str(tmp_path / "t.parquet")])
    assert exported.exit_code == 0, exported.output
    assert TrajectoryStore(url).load().shape == (40, 1)


def test_record_refuses_a_url(tiny_model_dir, math_pool):
    with pytest.raises(InputError, match="local"):
        record(math_pool, str(tiny_model_dir), "memory://s2l-test/record", RecordConfig(epochs=1, snapshots=1),
               show_progress=False)
