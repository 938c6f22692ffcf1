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
        self._warned = False

    def state(self, case: Case, with_label: bool) -> list[list[Any]] | None:
        """The state of the case's files now (images first, then the label map), taken once before the check so
        that what is remembered is the state that was checked; None with the memory off or a file missing."""
        if self.folder is None:
            return None
        paths = [*case.images, *([case.label] if with_label and case.label is not None else [])]
        try:
            return [_state(Path(p)) for p in paths]
        except OSError:
            return None  # a missing or unreadable file: the check itself says what is wrong

    def _path(self, states: list[list[Any]], with_label: bool) -> Path:
        assert self.folder is not None
        settings = {**self.settings, "with_label": with_label}
        if not with_label:
            settings.pop("labels", None)  # the images' checks do not depend on the labels
        key = hashlib.sha256(json.dumps({"settings": settings, "files": states}, sort_keys=True).encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.json"

    def recall(self, states: list[list[Any]] | None, with_label: bool) -> dict[str, Any] | None:
        """What the check learned about a case whose files were in `states`, or None."""
        if states is None:
            return None
        try:
            record = json.loads(self._path(states, with_label).read_text())
        except (OSError, ValueError):
            return None
        return record.get("info") if isinstance(record, dict) and isinstance(record.get("info"), dict) else None

    def remember(self, case: Case, states: list[list[Any]] | None, with_label: bool, info: dict[str, Any]) -> None:
        """Record that `case`, its files in `states`, passed (also for its images alone, which `unet3d-predict`
        checks); never raises."""
        if states is None or _newest_change(states) > (time.time() - RACY_SECONDS) * 1e9:
            return
        for labelled in {with_label, False}:
            checked = states if labelled else states[: len(case.images)]
            files = [str(p) for p in [*case.images, *([case.label] if labelled and case.label else [])]]
            try:
                atomic_write_json(self._path(checked, labelled), {"files": files, "info": info})
            except (OSError, MachineError) as error:  # a full or read-only disk: the next run reads the files again
                if not self._warned:
                    log.warning("%s: cannot record the file checks: %s", self.folder, error)
                    self._warned = True
                return
