"""One run per work dir: an exclusive lock on `<folder>/.unet3d.lock` while a run trains or writes predictions there.

Two runs on one work dir would both train every epoch and write over each other's files. The lock is the operating
system's (`flock`), so it is released when its process ends in any way, `kill -9` and a requeued SLURM job included:
a later run takes it over without any clean-up. The file also records who holds it (host, process id, since when)
for the message the next run prints.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from unet3d.errors import Busy

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_FILENAME = ".unet3d.lock"
_held: set[str] = set()  # folders this process holds already (a CV run locks its folds inside its own lock)


def holder_text() -> str:
    """Who is locking: host, process id and start time, as written into the lock file."""
    return f"host {socket.gethostname()}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"


@contextmanager
def work_dir_lock(folder: Path, what: str = "work dir") -> Iterator[None]:
    """Hold the lock of `folder` for the block; `Busy` at once, naming the holder, when another process has it."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held or fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        busy = _busy(folder, what, fd)
        os.close(fd)
        raise busy from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_text() + "\n").encode(), 0)
        _held.add(key)
        yield
    finally:
        _held.discard(key)
        os.close(fd)  # releases the lock


def _busy(folder: Path, what: str, fd: int) -> Busy:
    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
    return Busy(
        f"{folder}: this {what} is in use by another unet3d run ({holder}); wait for it to end or stop it, "
        "then rerun (a run that died releases it by itself)"
    )


def check_not_busy(folder: Path, what: str = "work dir") -> None:
    """`Busy` at once when another process holds the lock of `folder`, so that a second run stops before it reads
    any data; creates nothing (the run takes the lock itself later)."""
    path = Path(folder) / LOCK_FILENAME
    if fcntl is None or os.path.realpath(folder) in _held or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise _busy(Path(folder), what, fd) from None
    finally:
        os.close(fd)
