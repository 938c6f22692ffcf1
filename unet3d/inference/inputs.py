"""What to predict and with which models: cases from a config group, a file list or a folder; models from files,
fold folders, or a cross-validation work dir (every fold's best model)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from unet3d.checkpoint import BEST, LAST
from unet3d.config.load import case_id_from_path, parse_cases
from unet3d.config.schema import Case, Config
from unet3d.data.image_io import IMAGE_SUFFIXES
from unet3d.errors import CheckpointError, ConfigError, DataError


def models_in(folders: Sequence[Path]) -> list[Path]:
    """The best model of each fold folder; a CV work dir stands for all of its `fold*/` folders."""
    paths: list[Path] = []
    for folder in map(Path, folders):
        fold_dirs = sorted(folder.glob("fold*/"), key=lambda p: p.name) if not (folder / LAST).exists() else [folder]
        fold_dirs = [d for d in fold_dirs if d.is_dir()]
        if not fold_dirs:
            raise CheckpointError(f"{folder}: neither a model folder (with {LAST}) nor a CV work dir (with fold*/)")
        for fold_dir in fold_dirs:
            best = fold_dir / BEST if (fold_dir / BEST).exists() else fold_dir / LAST
            if not best.exists():
                raise CheckpointError(f"{fold_dir}: no {BEST} or {LAST}; is this fold trained?")
            paths.append(best)
    return paths


def modality_suffixes(config: Config) -> list[str]:
    """How the config's cases name their modalities: the end of each image file name after the case's common
    prefix, e.g. ['_flair.nii.gz', '_t1.nii.gz', ...] for BraTS, ['_0000.nii.gz', ...] for nnU-Net-style names."""
    for group in ("training", "validation", *sorted(config.groups)):
        for case in config.groups.get(group, []):
            names = [p.name for p in case.images]
            if len(names) == 1:
                return [_image_suffix(names[0])]
            prefix = _case_prefix(names)
            return [name[len(prefix) :] for name in names]
    raise ConfigError("the config lists no case to learn the modality file names from; give --modality_suffixes")


def _case_prefix(names: Sequence[str]) -> str:
    """The common start of a case's file names, cut back to a separator ('X_t1' of X_t1 and X_t1ce → 'X_')."""
    common = os.path.commonprefix(list(names))  # noqa: RUF071 - file names compared character by character on purpose
    cut = max(common.rfind(c) for c in "_-.")
    return common[: cut + 1]


def _image_suffix(name: str) -> str:
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), Path(name).suffix)


def cases_in_folder(folder: Path, suffixes: Sequence[str]) -> list[Case]:
    """Cases found under `folder` (recursively): files that share a prefix and end with each modality suffix."""
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder does not exist")
    first, *others = suffixes
    cases = []
    incomplete = []
    for path in sorted(folder.rglob(f"*{first}")):
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
    return cases


def cases_from_input(path: Path, config: Config, suffixes: Sequence[str] | None = None) -> list[Case]:
    """Cases from `--input`: a folder of cases, or a `.json`/`.npy` file list (relative paths beside the list)."""
    path = Path(path).resolve()
    if path.suffix in (".json", ".npy"):
        return parse_cases(str(path), path.parent, f"--input {path.name}")
    return cases_in_folder(path, suffixes or modality_suffixes(config))
