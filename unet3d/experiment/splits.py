"""Cross-validation splits: computed once with scikit-learn, written to `splits.json`, and read back on every rerun.

Cases that share a `subject` (several visits of one patient) always land in the same fold; a `stratify` case key
balances its values across folds. The split is a pure function of the case list, the fold count and the seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold, StratifiedGroupKFold, StratifiedKFold

from unet3d.atomic import atomic_write_json
from unet3d.config.cases import Case
from unet3d.errors import ConfigError


def make_splits(cases: Sequence[Case], n_folds: int, seed: int, stratify: str | None = None) -> list[list[str]]:
    """The held-out case ids of each fold (fold 1 first). Groups by `subject` when any case names one."""
    ids = [case.case_id for case in cases]
    subjects = [case.subject if case.subject is not None else f"case:{case.case_id}" for case in cases]
    grouped = any(case.subject is not None for case in cases)
    n_units = len(set(subjects)) if grouped else len(ids)
    unit = "subjects" if grouped else "cases"
    if n_folds > n_units:
        raise ConfigError(f"cross_validation.n_folds: {n_folds} folds need at least {n_folds} {unit}, got {n_units}")
    if stratify is not None:
        missing = [case.case_id for case in cases if stratify not in case.extra]
        if missing:
            raise ConfigError(f"cross_validation.stratify: case {missing[0]!r} has no key {stratify!r}")
        strata = [str(case.extra[stratify]) for case in cases]
        splitter = (StratifiedGroupKFold if grouped else StratifiedKFold)(n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(ids, strata, groups=subjects if grouped else None)
    else:
        splitter = (GroupKFold if grouped else KFold)(n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(ids, groups=subjects if grouped else None)
    return [[ids[i] for i in sorted(held_out)] for _, held_out in folds]


def splits_document(
    held_out: list[list[str]], all_ids: Sequence[str], n_folds: int, seed: int, stratify: str | None
) -> dict[str, Any]:
    """The `splits.json` content: for each fold its training and validation case ids."""
    return {
        "n_folds": n_folds,
        "random_seed": seed,
        "stratify": stratify,
        "folds": [
            {"fold": k, "training": [i for i in all_ids if i not in set(val)], "validation": val}
            for k, val in enumerate(held_out, start=1)
        ],
    }


def load_or_make_splits(
    path: Path, cases: Sequence[Case], n_folds: int, seed: int, stratify: str | None = None
) -> list[list[str]]:
    """The held-out ids per fold from `path` if it exists (checked against the cases), else computed and written."""
    ids = [case.case_id for case in cases]
    if Path(path).exists():
        saved = json.loads(Path(path).read_text())
        held_out = [fold["validation"] for fold in saved["folds"]]
        listed = [i for fold in held_out for i in fold]
        if len(held_out) != n_folds:
            raise ConfigError(
                f"{path}: holds {len(held_out)} folds but cross_validation.n_folds is {n_folds}; "
                "delete it to split again (finished folds will no longer match)"
            )
        if sorted(listed) != sorted(ids):
            added = sorted(set(ids) - set(listed))
            removed = sorted(set(listed) - set(ids))
            raise ConfigError(
                f"{path}: does not match training_filenames (new cases: {added[:3]}, "
                f"gone: {removed[:3]}); delete it to split again"
            )
        return held_out
    held_out = make_splits(cases, n_folds, seed, stratify)
    atomic_write_json(path, splits_document(held_out, ids, n_folds, seed, stratify))
    return held_out


def inner_validation(cases: Sequence[Case], fraction: float, seed: int) -> list[str]:
    """Ids of about `fraction` of a fold's training cases (whole subjects) held back for model selection."""
    subjects = [case.subject if case.subject is not None else f"case:{case.case_id}" for case in cases]
    n_groups = len(set(subjects))
    n_inner = min(max(1, round(fraction * n_groups)), n_groups - 1)
    if n_inner < 1:
        raise ConfigError("cross_validation.validation_fraction: a fold has too few training cases to hold any back")
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_inner, random_state=seed)
    _, inner = next(splitter.split(cases, groups=subjects))
    return [cases[i].case_id for i in sorted(inner)]


def load_or_make_inner_validation(
    path: Path, cases: Sequence[Case], held_out: list[list[str]], fraction: float, seed: int
) -> list[list[str]]:
    """Per fold, the inner validation ids from `path` (added to it the first time, then reused)."""
    saved = json.loads(Path(path).read_text())
    recorded = saved.get("validation_fraction")
    if recorded is not None:
        if recorded != fraction:
            raise ConfigError(
                f"{path}: was written with validation_fraction {recorded}, the config has {fraction}; "
                "delete it to split again (finished folds will no longer match)"
            )
        return [fold["inner_validation"] for fold in saved["folds"]]
    inner = []
    for k, fold in enumerate(saved["folds"], start=1):
        held = set(held_out[k - 1])
        fold_ids = inner_validation([c for c in cases if c.case_id not in held], fraction, seed + k)
        fold["inner_validation"] = fold_ids
        fold["training"] = [i for i in fold["training"] if i not in set(fold_ids)]
        inner.append(fold_ids)
    saved["validation_fraction"] = fraction
    atomic_write_json(path, saved)
    return inner
