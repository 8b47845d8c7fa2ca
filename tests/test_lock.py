"""One writer per run directory: a second is refused naming the holder; a killed holder's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from s2l.errors import InputError
from s2l.fileio import LOCK_NAME, directory_lock

HOLD = """
import sys, time
from s2l.fileio import directory_lock
with directory_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_in_child(root: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    child = hold_in_child(tmp_path / "run")
    try:
        with pytest.raises(InputError, match=f"pid {child.pid}") as refused:
            with directory_lock(tmp_path / "run"):
                pass
        assert "another s2l process is writing here" in str(refused.value)
    finally:
        child.kill()
        child.wait()


def test_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    root = tmp_path / "run"
    child = hold_in_child(root)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert json.loads((root / LOCK_NAME).read_text())["pid"] == child.pid  # left behind
    with directory_lock(root):
        assert json.loads((root / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "taking over the lock left by pid" in capsys.readouterr().err
    assert (root / LOCK_NAME).read_text() == ""  # released cleanly


def test_a_failed_first_write_leaves_nothing_behind(tmp_path):
    root = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with directory_lock(root):
            raise RuntimeError("refused before writing")
    assert not root.exists()


def test_record_refuses_a_run_directory_in_use(tiny_model_dir, math_pool, tmp_path):
    from s2l.trajectories.record import RecordConfig, record

    root = tmp_path / "run"
    child = hold_in_child(root)
    try:
        with pytest.raises(InputError, match="another s2l process"):
            record(math_pool, str(tiny_model_dir), root, RecordConfig(epochs=1, snapshots=1, precision="float32"),
                   show_progress=False)
        assert not (root / "manifest.json").exists()
    finally:
        child.kill()
        child.wait()


def test_an_unwritable_output_fails_before_any_work(tiny_model_dir, math_pool, tmp_path):
    from s2l.fileio import check_writable
    from s2l.trajectories.record import RecordConfig, record

    if os.geteuid() == 0:  # root writes anywhere; use a file where a folder is needed instead
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        with pytest.raises(InputError, match="is a file, not a folder"):
            record(math_pool, str(tiny_model_dir), blocker / "run", RecordConfig(epochs=1, snapshots=1), show_progress=False)
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="not writable"):
            record(math_pool, str(tiny_model_dir), locked / "run", RecordConfig(epochs=1, snapshots=1), show_progress=False)
    with pytest.raises(InputError, match="recording needs about .* GiB and only .* is free there"):
        check_writable(tmp_path / "run", 2**60, "recording")


def test_a_full_disk_mid_run_is_one_clear_line_and_the_run_resumes(tiny_model_dir, math_pool, tmp_path):
    """A file-size limit makes the disk 'full' for the process (a real write failure, EFBIG): the run
    stops with one line and exit code 3, and the same command afterwards finishes the identical store."""
    import resource
    import subprocess
    import sys

    def command(out):
        return [sys.executable, "-m", "s2l.cli", "record", "--data", str(math_pool), "--proxy", str(tiny_model_dir),
                "--out", str(out), "--epochs", "1", "--snapshots", "2", "--batch-size", "4", "--lr", "1e-3",
                "--precision", "float32", "--shard-size", "16", "--no-progress"]

    def small_files():  # the tiny model's weights are 6 MB: the first resume state does not fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    full = subprocess.run(command(tmp_path / "run"), preexec_fn=small_files, capture_output=True, text=True)
    assert full.returncode == 3, full.stderr[-800:]
    assert "could not write: " in full.stderr and "File too large" in full.stderr
    assert "Traceback" not in full.stderr and "run the same command again" in full.stderr
    subprocess.run(command(tmp_path / "run"), check=True, capture_output=True)
    subprocess.run(command(tmp_path / "reference"), check=True, capture_output=True)

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and p.name not in ("manifest.json", ".s2l.lock")}

    assert files(tmp_path / "run") == files(tmp_path / "reference")


def test_leftovers_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    """A killed `select` leaves `.OUT.tmp-PID` (and, mid --force, `.OUT.old-PID`) beside its output; the next
    writer removes those of dead processes only. Under a held lock, everything of the kind goes."""
    from s2l.fileio import remove_leftovers

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".sel.tmp-{dead_pid}").mkdir()
    (tmp_path / f".sel.tmp-{dead_pid}" / "selected.jsonl").write_text("{}\n")
    (tmp_path / f".sel.old-{dead_pid}").mkdir()
    (tmp_path / f".sel.tmp-{os.getpid()}").mkdir()  # a live writer's
    (tmp_path / "sel").mkdir()
    (tmp_path / ".other.tmp-1").write_text("")  # another output's: not ours to judge here
    assert remove_leftovers(tmp_path, beside="sel") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".sel.tmp-{os.getpid()}", "sel", ".other.tmp-1"])
    nested = tmp_path / "cells" / "a"
    nested.mkdir(parents=True)
    (nested / ".results.csv.tmp-7").write_text("half")
    (nested / "results.csv").write_text("whole")
    assert remove_leftovers(tmp_path) == 3
    assert sorted(p.name for p in nested.iterdir()) == ["results.csv"]
