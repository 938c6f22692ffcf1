"""One rule for every file a command writes: no command replaces what it did not make.

Every writer (train, predict, plan, export, report, evaluate) declares the files it will write, with what each is,
and the inputs in play (the images and labels of every case of the configs and data sets involved, the models' own
configs included, the data sets' `dataset.json`, the models and configs given), before it computes anything.
`check_outputs` then refuses, with one line per file naming it and what it belongs to:

- a file that is an input of the run: never, whatever flag is given;
- a checkpoint, config, split or log of any unet3d work dir (a folder holding `model.pth`, `splits.json` or a
  `.unet3d.lock`), or the experiment config a work dir was trained from (`exp.json` beside `exp/`): never;
- a folder: never (a file name is needed);
- an existing file the command did not make (`made_here` says which it made): only when the command's flag for that
  (`--overwrite`) is given.

Paths are compared resolved (symlinks, `..` and relative paths followed) and by inode (hard links).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from unet3d.errors import ConfigError
from unet3d.locking import LOCK_FILENAME

# The files that make a folder a unet3d work dir, and those of them no command but training may write. The guard
# comes before the modules that write them, so it names them itself; tests/test_workdir.py holds the two lists equal.
WORK_DIR_MARKERS = ("model.pth", "splits.json", LOCK_FILENAME)
TRAINED_MARKERS = ("model.pth", "splits.json")  # a work dir that training wrote (a prediction folder holds a lock)
WORK_DIR_FILES = ("config.json", "splits.json", "training_log.csv", "train.log", "predictions.json")
WORK_DIR_PATTERNS = ("*.pth", "fold*.json")
# The folders of an MSD or nnU-Net v2 data set that hold cases; the data set's description lies beside them.
DATA_SET_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
DATA_SET_DESCRIPTION = "dataset.json"
MAX_LINES = 10  # refused files listed in one message; the rest are counted


class CaseFiles(Protocol):
    """What the guard reads of a case (`unet3d.config.schema.Case` has it)."""

    case_id: str
    images: list[Path]
    label: Path | None


class CaseGroups(Protocol):
    """What the guard reads of a config (`unet3d.config.schema.Config` has it)."""

    @property
    def groups(self) -> Mapping[str, Sequence[CaseFiles]]: ...


def _keys(path: Path) -> list[Path | tuple[int, int]]:
    """A path's resolved form and, when it exists, its device and inode."""
    resolved = Path(os.path.realpath(path))
    try:
        status = resolved.stat()
    except OSError:
        return [resolved]
    return [resolved, (status.st_dev, status.st_ino)]


class Inputs:
    """The files of a run that no output may replace, each with what it is."""

    def __init__(self) -> None:
        self._what: dict[Path | tuple[int, int], str] = {}
        self._data_sets: set[Path] = set()  # the folders whose dataset.json was looked for

    def add(self, path: str | Path, what: str) -> Inputs:
        for key in _keys(Path(path)):
            self._what.setdefault(key, what)
        return self

    def add_cases(self, cases: Iterable[CaseFiles], source: str) -> Inputs:
        """Every image and label of `cases`, described as belonging to `source` (a config or data set), and the
        `dataset.json` of the MSD / nnU-Net v2 data sets they lie in."""
        for case in cases:
            for index, image in enumerate(case.images):
                self._add_case_file(image, f"image {index + 1} of case {case.case_id!r} of {source}")
            if case.label is not None:
                self._add_case_file(case.label, f"the label of case {case.case_id!r} of {source}")
        return self

    def add_config(self, config: CaseGroups, source: str) -> Inputs:
        """Every case of every `*_filenames` group of `config`, e.g. source "the model's config fold1/config.json"."""
        for group, cases in config.groups.items():
            self.add_cases(cases, f"{source} ({group}_filenames)")
        return self

    def _add_case_file(self, path: Path, what: str) -> None:
        self.add(path, what)
        folder = Path(path).parent
        description = folder.parent / DATA_SET_DESCRIPTION
        if folder.name in DATA_SET_FOLDERS and folder.parent not in self._data_sets:
            self._data_sets.add(folder.parent)
            if description.is_file():
                self.add(description, f"the description of the data set {folder.parent}")

    def owner(self, path: Path) -> str | None:
        """What `path` is, when it is one of these inputs."""
        return next((self._what[key] for key in _keys(path) if key in self._what), None)


def _is_work_dir(folder: Path, markers: Sequence[str] = WORK_DIR_MARKERS) -> bool:
    return any((folder / marker).exists() for marker in markers)


def work_dir_file(path: Path) -> str | None:
    """What `path` is when it is a checkpoint, config, split or log of a unet3d work dir, or the experiment config
    beside a work dir that training wrote; None otherwise. `path` is resolved first (a symlink names its target)."""
    resolved = Path(os.path.realpath(path))
    name = resolved.name
    if _is_work_dir(resolved.parent) and (
        name in WORK_DIR_FILES or any(Path(name).match(pattern) for pattern in WORK_DIR_PATTERNS)
    ):
        return f"{name} of the unet3d work dir {resolved.parent}"
    if resolved.suffix == ".json" and _is_work_dir(resolved.with_suffix(""), TRAINED_MARKERS):
        return f"the experiment config of the unet3d work dir {resolved.with_suffix('')}"
    return None


def check_outputs(
    outputs: Mapping[Path, str],
    inputs: Inputs,
    replace: bool = False,
    made_here: Callable[[Path], bool] = lambda path: False,
    flag: str = "--overwrite",
) -> None:
    """Refuse (one ConfigError, a line per file) the `outputs` (path → what it will be) that would replace an input,
    a work dir's checkpoint or config, a folder, or, unless `replace`, an existing file that `made_here` does not
    claim. Call it before any compute."""
    lines = []
    for path, what in outputs.items():
        path = Path(path)
        owner = inputs.owner(path) or work_dir_file(path)
        if owner is not None:
            lines.append(f"refusing to write {path} ({what}): it is {owner}; choose another output")
        elif path.is_dir():
            lines.append(f"refusing to write {path} ({what}): it is a folder; give a file name")
        elif path.exists() and not replace and not made_here(path):
            lines.append(
                f"refusing to write {path} ({what}): it exists and this command did not write it; choose another "
                f"output, or pass {flag} to replace it"
            )
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"... and {len(lines) - MAX_LINES} more files alike"]
    if lines:
        raise ConfigError("\n".join(lines))
