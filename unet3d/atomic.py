"""Atomic file writes: a file is replaced in one step or not at all, so a crash never leaves half of one.

The data goes to a temporary file in the target's folder, is flushed to disk, and is renamed over the target
(`os.replace` is atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through `write(handle)` so that `path` is replaced in one step or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the permissions open() would
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_duplicate(source: Path, path: Path) -> None:
    """Give `path` the content of the finished file `source`, replacing it in one step: a hard link (no second write
    of a large checkpoint; both names stay valid when either is later replaced, since replacing makes a new file), or
    a copy where the file system has no hard links."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        atomic_write(path, lambda handle: _copy_into(Path(source), handle))
        return
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _copy_into(source: Path, handle: BinaryIO) -> None:
    with open(source, "rb") as original:
        shutil.copyfileobj(original, handle, length=2**24)


TEMPORARY_PATTERN = ".*.tmp*"


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (and folders: a MetaImage is written as two files in one) an interrupted atomic
    write left in `folder` (only ours: hidden, `.tmp`)."""
    removed = []
    for path in Path(folder).glob(TEMPORARY_PATTERN):
        if path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace a text file (configs, logs, summaries)."""
    atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_write_json(path: Path, data: Any) -> None:
    """Atomically replace a JSON file, indented for people to read."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
