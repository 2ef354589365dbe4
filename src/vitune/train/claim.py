"""Claims: an exclusive ``flock(2)`` on a lock file, so two vitune processes never write the same folder.

Two uses. Suites that share a RUN_ROOT claim each run beside its folder (``RUN_ROOT/<task>/seed<S>.lock``) and
leave a claimed run to its owner. And every run or search folder is held for the whole command through
``FOLDER/.lock`` (:func:`hold_folder`): a second ``vitune train --resume`` (or search) on it fails at once.

The owner writes its pid and host into the file for people (and error messages) to read. The kernel drops the
lock when its process dies, even by SIGKILL, so a claim left by a dead process is simply taken over by the next
one that asks. A worker process started with the lock's descriptor (``pass_fds``) shares the lock, so the claim
lasts while either lives; a process forked without exec (a DataLoader worker) closes its copy at once, so it
never keeps a killed parent's claim alive.

The file is never removed: unlinking a lock file races with a process that has opened it and waits for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from ..errors import FolderInUseError, RunError

LOCK = ".lock"  # a held folder's lock file, inside it

_held: set[int] = set()  # descriptors of the claims this process holds


def _drop_in_forked_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_drop_in_forked_child)


def claim_path(run_folder: Path) -> Path:
    """A suite's claim file of a run folder: beside it, apart from the ``.lock`` the training process holds inside."""
    return run_folder.with_name(f"{run_folder.name}.lock")


def owner(path: Path) -> str:
    """Who holds (or last held) the claim, as written in the file: 'pid N on HOST', or 'unknown'."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {record['pid']} on {record['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


@contextlib.contextmanager
def claim(path: Path, wait: bool = False) -> Iterator[int | None]:
    """Hold the claim at `path` for the block; yields its file descriptor, or None when another live process
    holds it and `wait` is false (with `wait`, blocks until that process releases it or dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        _held.add(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        yield fd
    finally:
        _held.discard(fd)
        os.close(fd)  # releases the lock unless a live worker process still shares it


@contextlib.contextmanager
def hold_folder(folder: Path, what: str, retry: str) -> Iterator[None]:
    """Hold `folder` (created if needed) for the block through ``folder/.lock``; when another live process holds
    it, raise FolderInUseError at once, naming `what` ("run folder"), the folder, the holder and `retry`."""
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{what} {folder}: exists and is not a folder")
    path = folder / LOCK
    with claim(path) as fd:
        if fd is None:
            raise FolderInUseError(
                f"{what} {folder} is in use by another vitune process ({owner(path)}); two processes must never "
                f"write one folder: wait until that one ends, then {retry}"
            )
        yield
