"""Atomic file writes and fingerprints.

Every output goes to a temporary file beside its destination and is renamed into place, so a killed
run never leaves a half-written file that looks whole.
"""

from __future__ import annotations

import logging
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


# Fault injection for tests: with S2L_FAULT_AFTER=N the process kills itself with SIGKILL at the N-th
# fault point it passes (a file written but not yet renamed into place, a training step, a scoring batch),
# so a test can stop a run exactly where real crashes hurt. S2L_FAULT_TRACE=FILE appends each point's name.
_FAULT_AFTER = int(os.environ.get("S2L_FAULT_AFTER") or 0)
_FAULT_TRACE = os.environ.get("S2L_FAULT_TRACE")
_faults_passed = 0


def fault_point(name: str) -> None:
    global _faults_passed
    if not (_FAULT_AFTER or _FAULT_TRACE):
        return
    _faults_passed += 1
    if _FAULT_TRACE:
        with open(_FAULT_TRACE, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if _faults_passed == _FAULT_AFTER:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def is_url(path: str | Path) -> bool:
    """An fsspec URL (s3://, gs://, memory://, …) rather than a local path."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def as_path(path: str | Path):
    """A local `Path`, or for an fsspec URL a `UPath` (the same interface over the URL's file system).
    Give URLs as strings: `Path("s3://b/k")` has already lost one of its slashes."""
    if isinstance(path, Path):
        return path
    if is_url(path):
        from upath import UPath

        return UPath(str(path))
    return Path(str(path)[len("file://"):] if str(path).startswith("file://") else path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    For an fsspec URL, the temporary file is local and is uploaded in one put: an object appears whole
    or not at all."""
    path = as_path(path)
    if not isinstance(path, Path):
        yield from _remote_atomic_path(path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fault_point(f"written, not renamed: {path.name}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _remote_atomic_path(path) -> Iterator[Path]:
    import tempfile

    fd, local = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(local)
        fault_point(f"written, not renamed: {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.fs.put_file(local, path.path)
    finally:
        os.unlink(local)


# What an atomic write leaves when its process is killed: `.NAME.tmp-PID` (being written) or `.NAME.old-PID`
# (a replaced folder, deleted once the new one is in place); a file or a folder.
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)-(\d+)$")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(root: str | Path, beside: str | None = None) -> int:
    """Delete what killed writers left: under `root` (recursively) when the caller holds root's directory
    lock, or, with `beside`, only the leftovers of `root/beside` whose process is no longer running. Returns
    how many were removed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    found = root.glob(f".{beside}.*") if beside else root.rglob(".*")
    removed = 0
    for path in list(found):
        match = _LEFTOVER.match(path.name)
        if not match or (beside and _running(int(match.group(2)))):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


@contextlib.contextmanager
def building_directory(out: str | Path, name: str | None = None, keep_on_error: bool = False) -> Iterator[Path]:
    """Build a folder aside, then swap it into place: yield an empty folder beside `out` (`.OUT.tmp-PID`,
    or `name`); when the block finishes, it replaces `out`. A failure or a kill leaves `out` as it was,
    and the folder aside is removed, unless `keep_on_error` (a build that resumes from it: give a fixed
    `name` and its leftovers stay for the next run)."""
    out = Path(out)
    tmp = out.with_name(name or f".{out.name}.tmp-{os.getpid()}")
    if not keep_on_error:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        if not keep_on_error:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_into_place(tmp, out)


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` onto `out`. A previous, non-empty `out` is moved aside first
    (`.OUT.old-PID`) and deleted only once the new one is in place."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists() and any(out.iterdir()):
        os.replace(out, old)
    elif out.exists():
        out.rmdir()
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with as_path(path).open("rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_path(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(child.relative_to(path)).encode("utf-8") + b"\0")
        digest.update(sha256_file(child).encode("ascii"))
    return digest.hexdigest()


LOCK_NAME = ".s2l.lock"


@contextlib.contextmanager
def directory_lock(root: str | Path) -> Iterator[None]:
    """Hold `root/.s2l.lock` while writing into `root`; a second writer is refused, naming the holder.

    The lock is an flock, so the kernel drops it when its holder dies however it dies. The file keeps
    the holder's pid and command while held and is emptied on release, so a file still naming a holder
    when the lock is free was left by a killed process: it is taken over, and said so.
    """
    from s2l.errors import InputError
    
    if is_url(root):  # object storage has no locks: the job's driver or rank 0 is its only writer
        yield
        return
    root = Path(root)
    made_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    made_file = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(path)
        os.close(fd)
        raise InputError(f"another s2l process is writing here (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                         f"`{holder.get('command', '?')}`, since {holder.get('since', '?')}); wait for it or stop it",
                         root) from None
    try:
        stale = _lock_holder(path)
        if stale:
            log.warning(f"{root}: taking over the lock left by pid {stale.get('pid')} (`{stale.get('command')}`), "
                        "which stopped without releasing it")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        yield
    except BaseException:
        if made_file:  # refused or failed before writing anything: leave the directory as it was
            path.unlink(missing_ok=True)
            if made_root and not any(root.iterdir()):
                root.rmdir()
        raise
    finally:
        os.ftruncate(fd, 0)  # released cleanly: an empty file
        os.close(fd)  # closing drops the flock


def _lock_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def check_writable(path: str | Path, need_bytes: int = 0, what: str = "this run") -> None:
    """Fail now, not hours in: `path` (or the folder it will be made in) must be writable and its disk
    must have `need_bytes` free (an estimate the caller makes)."""
    from s2l.errors import InputError

    if is_url(path):  # neither permissions nor free space can be asked of object storage up front
        return
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{existing} is a file, not a folder", path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write here: {existing} is not writable", path)
    free = shutil.disk_usage(existing).free
    if need_bytes > free:
        raise InputError(f"{what} needs about {_gib(need_bytes)} and only {_gib(free)} is free there", path)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**29 else f"{n / 2**20:.0f} MiB"


def folder_bytes(path: str | Path, pattern: str = "*") -> int:
    """Total size of the files matching `pattern` in a folder (0 for a hub id or a missing folder)."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.glob(pattern) if f.is_file()) if path.is_dir() else 0


# Write failures that are the machine's, not a bug: the disk or quota is full, a file limit is hit, the
# folder became read-only. Libraries written in Rust or C++ (safetensors, torch.save) wrap them in their
# own exception types, so their text is matched too.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_STORAGE_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system",
                  "os error 28", "os error 27", "os error 122", "os error 30")


def storage_failure(error: BaseException) -> str | None:
    """A one-line description of `error` if it is a failed write to storage, else None."""
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
        where = f" writing {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where}"
    text = str(error)
    if any(t in text for t in _STORAGE_TEXTS):
        return text.splitlines()[0] if text else type(error).__name__
    return None
