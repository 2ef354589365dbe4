"""Atomic writes: a reader (or a process killed mid-write) sees the old content or the new, never a mix.

A file is written under a temporary name in its own folder, flushed to disk, then renamed over the target
(``os.replace`` is atomic within one file system). A folder of several files that must change together
(an adapter's config and weights) is built beside the target and swapped in with one atomic exchange of
the two directory entries (Linux ``renameat2(RENAME_EXCHANGE)``); where that call is missing, the swap is
two renames and :func:`recover_folder` finishes an interrupted one.

Temporary files are created with mode 0o666 and the process umask applies, as for any ``open()``: no
process-wide umask is read or changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _temp_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{secrets.token_hex(4)}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened and synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside `path`, sync it, then move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    os.close(fd)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write `value` as indented, key-sorted JSON with a final newline."""
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the directory entries `a` and `b`; False where the system has no such call."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (38, 22, 95):  # ENOSYS, EINVAL (file system without exchange), EOPNOTSUPP
        return False
    raise OSError(err, os.strerror(err), str(b))


def _old_copies(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f".{folder.name}.old-*"))


def recover_folder(folder: str | os.PathLike) -> None:
    """Finish a two-rename swap that was interrupted between its renames (systems without exchange).

    If `folder` is missing but a previous copy was moved aside, that copy is moved back.
    """
    folder = Path(folder)
    if not folder.exists():
        olds = _old_copies(folder)
        if olds:
            os.replace(olds[-1], folder)


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, keep: Callable[[Path], bool] = lambda p: True) -> Iterator[Path]:
    """Build the new content of `folder` in the yielded temporary folder; on success it replaces `folder`.

    Entries of the existing folder that the new content does not write are carried over when ``keep(entry)``
    is true (hard links, so nothing is copied). If the block raises, `folder` is left untouched.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    tmp = _temp_name(folder, "new")
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        if folder.is_dir():
            for entry in folder.iterdir():
                target = tmp / entry.name
                if target.exists() or not keep(entry):
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, target)
                else:
                    try:
                        os.link(entry, target)
                    except OSError:
                        shutil.copy2(entry, target)
        for entry in tmp.iterdir():
            if entry.is_file():
                _fsync_file(entry)
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not folder.exists():
        os.rename(tmp, folder)
    elif _exchange(tmp, folder):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous content
    else:
        old = _temp_name(folder, "old")
        os.rename(folder, old)
        os.rename(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(folder.parent)
