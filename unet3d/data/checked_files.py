"""What the up-front file check remembers, so that a rerun, each fold's SLURM task and `unet3d-predict` do not read
every scan again (on 1,251 BraTS cases the check reads 25 GB: about 40 minutes on a workstation, per command).

A case's record is keyed by the state of its files (resolved path, size, modification and change time in ns; for a
DICOM series folder, every file in it) and the check's settings (declared labels, dimensions, whether the label map
is checked, the check's version): a changed, replaced or touched file, or other settings, miss and are read again.
Only cases that passed are remembered (a broken file is reported by every run), and not while one of their files
was written in the last seconds: a file rewritten within the file system's timestamp granularity after its check
could keep its size and times (git calls such entries "racily clean").

The records live in `$UNET3D_CACHE_DIR/file_checks` (default `~/.cache/unet3d`, or `$XDG_CACHE_HOME/unet3d`), one
small JSON file per case and settings, written atomically, so concurrent SLURM tasks share them safely.
`UNET3D_CACHE_DIR=off` turns the memory off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from unet3d.atomic import atomic_write_json
from unet3d.config.cases import Case
from unet3d.errors import MachineError
from unet3d.version import __version__

log = logging.getLogger("unet3d")

CHECK_VERSION = 1  # raise it when the rules of `unet3d.data.checks` change: every record is then read again
RACY_SECONDS = 3.0
ENVIRONMENT = "UNET3D_CACHE_DIR"


def records_folder() -> Path | None:
    """Where the records live, or None when `UNET3D_CACHE_DIR` is 'off'."""
    configured = os.environ.get(ENVIRONMENT)
    if configured is not None and configured.strip().lower() in ("off", "0", "none", ""):
        return None
    if configured:
        root = Path(configured).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "unet3d"
    return root / "file_checks"


def _state(path: Path) -> list[Any]:
    """(resolved path, size, mtime, ctime) of a file, or of every file of a folder (a DICOM series)."""
    resolved = os.path.realpath(path)
    stat = os.stat(resolved)
    if not os.path.isdir(resolved):
        return [resolved, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
    inside = sorted((entry.name, entry.stat()) for entry in os.scandir(resolved) if entry.is_file())
    return [resolved, [[name, s.st_size, s.st_mtime_ns, s.st_ctime_ns] for name, s in inside]]


def _newest_change(states: list[list[Any]]) -> int:
    times = []
    for state in states:
        if isinstance(state[1], list):
            times.extend(max(entry[2], entry[3]) for entry in state[1])
        else:
            times.append(max(state[2], state[3]))
    return max(times, default=0)


class CheckedFiles:
    """Records of cases that passed the check, for one set of check settings."""

    def __init__(self, settings: dict[str, Any], folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else records_folder()
        self.settings = {"check_version": CHECK_VERSION, "unet3d": __version__, **settings}
        self.hits = 0
        self._warned = False

    def _key(self, case: Case, with_label: bool) -> tuple[str, int] | None:
        paths = [*case.images, *([case.label] if with_label and case.label is not None else [])]
        try:
            states = [_state(Path(p)) for p in paths]
        except OSError:
            return None  # a missing or unreadable file: the check itself says what is wrong
        settings = {**self.settings, "with_label": with_label}
        if not with_label:
            settings.pop("labels", None)  # the images' checks do not depend on the labels
        text = json.dumps({"settings": settings, "files": states}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest(), _newest_change(states)

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def recall(self, case: Case, with_label: bool) -> dict[str, Any] | None:
        """What the check learned about `case` when its files were as they are now, or None."""
        if self.folder is None:
            return None
        key = self._key(case, with_label)
        if key is None:
            return None
        try:
            record = json.loads(self._path(key[0]).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("info"), dict):
            return None
        self.hits += 1
        return record["info"]

    def remember(self, case: Case, with_label: bool, info: dict[str, Any]) -> None:
        """Record that `case` passed (also for its images alone, which `unet3d-predict` checks); never raises."""
        if self.folder is None:
            return
        for labelled in {with_label, False}:
            key = self._key(case, labelled)
            if key is None or key[1] > (time.time() - RACY_SECONDS) * 1e9:
                continue
            files = [str(p) for p in [*case.images, *([case.label] if labelled and case.label else [])]]
            try:
                atomic_write_json(self._path(key[0]), {"files": files, "info": info})
            except (OSError, MachineError) as error:  # a full or read-only disk: the next run reads the files again
                if not self._warned:
                    log.warning("%s: cannot record the file checks: %s", self.folder, error)
                    self._warned = True
                return
