"""Per-run claim files: suites that share a RUN_ROOT never train the same run at the same time.

A claim is an exclusive ``flock(2)`` on ``RUN_ROOT/<task>/seed<S>.lock``; the owner writes its pid and host
into the file for people (and error messages) to read. The kernel drops the lock when its process dies, even
by SIGKILL, so a claim left by a dead suite is simply taken over by the next suite that asks. A worker process
started with the lock's descriptor (``pass_fds``) shares the lock, so the claim lasts while either lives.

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


def claim_path(run_folder: Path) -> Path:
    """The claim file of a run folder: beside it, so the run folder itself stays a plain run folder."""
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
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        yield fd
    finally:
        os.close(fd)  # releases the lock unless a live worker process still shares it
