"""Atomic file writes: a file is replaced in one step or not at all, so a crash never leaves half of one.

The data goes to a temporary file in the target's folder, is flushed to disk, and is renamed over the target
(`os.replace` is atomic on POSIX and Windows within one file system). Temporary names are hidden, unique per write
and carry the writer's process id (`.<name>.<pid>-<random>.tmp...`), so two writers never share one, and only the
leftovers of writers that have died are cleaned up.

A write that fails because the disk is full, the folder is read-only or permission is denied raises `MachineError`
naming the file and what to do; the previous content of the target is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from unet3d.errors import MachineError

LOW_SPACE = 64 * 2**20  # below this many free bytes, a failed write is taken for a full disk
_WRITER = re.compile(r"\.(\d+)-[A-Za-z0-9_]+\.tmp")


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path` for a write in progress, unique to this write, ending like `path`."""
    suffix = "".join(Path(path).suffixes[-2:]) if Path(path).name.endswith(".nii.gz") else Path(path).suffix
    return Path(path).with_name(f".{Path(path).name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}")


def machine_error(path: Path, error: BaseException) -> MachineError | None:
    """The MachineError that a failed write of `path` means (disk full, read-only, no permission), or None."""
    code = getattr(error, "errno", None)
    folder = Path(path).parent
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return MachineError(
            f"{path}: cannot write in {folder} ({os.strerror(code)}); make it writable or choose another folder "
            "(--output_dir / --output_directory)"
        )
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free is not None and free < LOW_SPACE):
        left = f" ({free / 2**20:.0f} MiB free)" if free is not None else ""
        return MachineError(
            f"{path}: the disk is full{left}; free some space and rerun the same command (what was saved before is "
            "intact)"
        )
    return None


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and write (and remove) a probe file in it: a MachineError now, before any compute,
    instead of a failure at the first checkpoint."""
    probe = Path(folder) / ".unet3d-write-probe.tmp"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        atomic_write(probe, lambda handle: handle.write(b"probe"))
        probe.unlink()
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise MachineError(
                f"{folder}: cannot write here ({os.strerror(error.errno)}); make it writable or choose another folder "
                "(--output_dir / --output_directory)"
            ) from None
        raise machine_error(probe, error) or error from None


def atomic_save(path: Path, save: Callable[[str], Any]) -> None:
    """Write a file through `save(temporary path)` (for writers that need a file name: nibabel, ITK, Pillow), then
    flush it to disk and rename it over `path`."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        problem = machine_error(path, error) if isinstance(error, Exception) else None
        if problem is not None:
            raise problem from None
        raise
    _fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through `write(handle)` so that `path` is replaced in one step or not at all (see `atomic_save`)."""

    def save(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    atomic_save(path, save)


def atomic_duplicate(source: Path, path: Path) -> None:
    """Give `path` the content of the finished file `source`, replacing it in one step: a hard link (no second write
    of a large checkpoint; both names stay valid when either is later replaced, since replacing makes a new file), or
    a copy where the file system has no hard links."""
    path = Path(path)
    tmp = temporary_name(path)
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


def writer_alive(name: str) -> bool:
    """Whether the process that a temporary name was made by is still running on this machine (False for names
    without a process id, left by versions before them)."""
    match = _WRITER.search(name)
    if match is None:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files (and folders: a MetaImage is written as two files in one) that interrupted atomic
    writes left in `folder`: only ours (hidden, `.tmp`), and only those of writers that are no longer running."""
    removed = []
    for path in Path(folder).glob(TEMPORARY_PATTERN):
        if writer_alive(path.name):
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(path)
    return removed


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
