"""What to predict: cases from a file list or a folder (found by the modality endings of the config's cases)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from unet3d.config.load import case_id_from_path, parse_cases
from unet3d.config.schema import Case, Config
from unet3d.errors import ConfigError, DataError
from unet3d.formats import image_suffix

log = logging.getLogger("unet3d")


def modality_suffixes(config: Config) -> list[str]:
    """How the config's cases name their modalities: the end of each image file name after the case's common
    prefix (cut back to its last separator, which stays in the prefix), e.g. ['flair.nii.gz', 't1.nii.gz', ...] for
    BraTS, ['0000.nii.gz', ...] for nnU-Net-style names."""
    for group in ("training", "validation", *sorted(config.groups)):
        for case in config.groups.get(group, []):
            names = [p.name for p in case.images]
            if len(names) == 1:
                return [image_suffix(names[0]) or Path(names[0]).suffix]
            prefix = _case_prefix(names)
            return [name[len(prefix) :] for name in names]
    raise ConfigError("the config lists no case to learn the modality file names from; give --modality_suffixes")


def _case_prefix(names: Sequence[str]) -> str:
    """The common start of a case's file names, cut back to a separator ('X_t1' of X_t1 and X_t1ce → 'X_')."""
    common = os.path.commonprefix(list(names))  # noqa: RUF071 - file names compared character by character on purpose
    cut = max(common.rfind(c) for c in "_-.")
    return common[: cut + 1]


def _files_ending(folder: Path, ending: str) -> list[Path]:
    """Files under `folder` whose names end with `ending`, sorted; symlinked folders and files are followed (each
    real folder once, so a link loop ends)."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(root) / name for name in files if name.endswith(ending) and (Path(root) / name).is_file()]
    return sorted(found)


def cases_in_folder(folder: Path, suffixes: Sequence[str]) -> list[Case]:
    """Cases found under `folder` (recursively): files that share a prefix and end with each modality suffix."""
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder does not exist")
    first, *others = suffixes
    cases = []
    incomplete = []
    for path in _files_ending(folder, first):
        prefix = path.name[: -len(first)] if first else path.name
        images = [path] + [path.with_name(prefix + suffix) for suffix in others]
        if not all(p.exists() for p in images):
            incomplete.append(str(path))
            continue
        cases.append(Case(images=images, label=None, case_id=prefix.rstrip("_-.") or case_id_from_path(path)))
    if incomplete:
        raise DataError(
            f"{folder}: {len(incomplete)} case(s) lack a modality ({', '.join(suffixes)}), e.g. {incomplete[0]}"
        )
    if not cases:
        raise DataError(f"{folder}: no image ending with {first!r} (the config's first modality)")
    ids = [case.case_id for case in cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise DataError(
            f"{folder}: several cases are named {duplicated[0]!r} in different subfolders; "
            "give a .json file list with case_id instead"
        )
    log.info("%s: found %d case(s) by the endings %s", folder, len(cases), ", ".join(suffixes))
    return cases


def cases_from_input(path: Path, config: Config, suffixes: Sequence[str] | None = None) -> list[Case]:
    """Cases from `--input`: a folder of cases, or a `.json`/`.npy` file list (relative paths beside the list)."""
    path = Path(path).resolve()
    if path.suffix in (".json", ".npy"):
        return parse_cases(str(path), path.parent, f"--input {path.name}")
    return cases_in_folder(path, suffixes or modality_suffixes(config))
