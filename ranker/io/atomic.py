"""Atomic output: write to a temporary file or folder beside the target, rename on success.

A reader never sees half an output: a file appears whole (:func:`atomic_open`), a folder appears whole
(:func:`atomic_dir`), and a failure or an interrupt leaves the previous version, or nothing, in place. An artifact
edited in place (a store, an index) has one writer at a time (:func:`exclusive`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ranker.errors import RankerError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_folder(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sync_folder(path: str | Path) -> None:
    """fsync a folder, so that the renames and new files in it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the writer lock of the artifact at ``path`` (``flock`` on ``.NAME.lock`` beside it: beside, since an
    edit may replace the folder), or refuse at once, in one line, if another process holds it.

    Raises:
        RankerError: Another process is editing ``path`` (``what`` names it: "store", "index").
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RankerError(f"the {what} {path} is being edited by another process: rerun when it has "
                              "finished") from None
        yield


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh temporary folder next to ``path``; it replaces ``path`` (whatever was there) only if the block
    succeeds, and is removed if it fails. A folder is replaced by swapping the two in one step, then deleting the old
    one, so that a stop at any moment leaves the old version or the new at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; the finished folder is for everyone, as mkdir's
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                file.chmod(0o666 & ~_UMASK)
        if path.is_dir() and not path.is_symlink() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # now the previous version
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``), so that a process killed
    at any moment leaves one of them whole at each name; ``False`` where the system or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OS error in the block that names no file (a write to a full disk) is raised naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from None
        raise


def check_writable(path: str | Path, folder: bool = False) -> Path:
    """Fail now, before any work, if ``path`` could not be written later: it is a folder (or, with ``folder``, a
    file), or its nearest existing parent is not a writable folder.

    Raises:
        RankerError: Naming ``path`` and the reason.
    """
    path = Path(path)
    if path.is_dir() and not folder:
        raise RankerError(f"{path}: is a folder, not a file to write")
    if path.exists() and not path.is_dir() and folder:
        raise RankerError(f"{path}: is a file, not a folder to write")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RankerError(f"{path}: cannot be created, {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RankerError(f"{path}: cannot be written, {parent} is not writable")
    return path


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path) as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
