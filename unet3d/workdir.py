"""A work dir, described once: what a run keeps where, and the rules every command reads it by.

A single run's work dir and each fold folder of a cross-validation are a `RunDir`: checkpoints (`model.pth`, the
resume point; `model_best.pth`, the model to predict with when kept), the training log, the exact config, one folder
per predicted group (`validation/`, or `heldout/` when an inner validation split chose the model) with its label maps
and `metrics.csv`, and `predictions.json`, the manifest of what those predictions were made from. A cross-validation
work dir is a `CrossValidationDir`: `splits.json`, `fold{k}.json` and `fold{k}/` for k = 1..n, `cv_summary.csv` and
`postprocessing.json`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unet3d import checkpoint as ckpt
from unet3d.config.schema import Config, TrainingConfig
from unet3d.evaluation.metrics import METRICS_FILENAME
from unet3d.evaluation.postprocessing import POSTPROCESSING_FILENAME
from unet3d.training.history import LOG_FILENAME
from unet3d.training.loop import CONFIG_FILENAME
from unet3d.training.state import TrainingState, progress, should_stop

MANIFEST = "predictions.json"
HELD_OUT_GROUP = "heldout"  # a fold's held-out cases when an inner validation split selects the model
SPLITS_FILENAME = "splits.json"
SUMMARY_FILENAME = "cv_summary.csv"
_FOLD = re.compile(r"fold(\d+)")


def held_out_group(config: Config) -> str:
    """The group of a fold's held-out cases: `heldout` with an inner validation split, else `validation`."""
    return HELD_OUT_GROUP if config.groups.get(HELD_OUT_GROUP) else "validation"


def is_finished(saved: ckpt.Checkpoint, training: TrainingConfig) -> bool:
    """A run is finished at n_epochs, or once early stopping ended it."""
    return saved.epoch >= training.n_epochs or should_stop(progress(saved), training.early_stopping_patience)


@dataclass(frozen=True)
class RunDir:
    """One model's work dir: a single run, or one fold of a cross-validation."""

    path: Path

    @property
    def last(self) -> Path:
        """`model.pth`: the full state of the last completed epoch, where training resumes."""
        return self.path / ckpt.LAST

    @property
    def best(self) -> Path:
        return self.path / ckpt.BEST

    @property
    def log(self) -> Path:
        return self.path / LOG_FILENAME

    @property
    def config(self) -> Path:
        """The exact config of the run, written once a (resumed) run has accepted it."""
        return self.path / CONFIG_FILENAME

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def name(self) -> str:
        return self.path.name

    def has_model(self) -> bool:
        return self.last.exists()

    def model(self) -> Path:
        """The model to predict with: `model_best.pth`, or `model.pth` when the run keeps no best model."""
        return self.best if self.best.exists() else self.last

    def progress(self) -> TrainingState:
        """How far training got, from the last checkpoint (a fresh state when there is none)."""
        return progress(ckpt.read_checkpoint(self.last)) if self.has_model() else TrainingState()

    def is_finished(self, training: TrainingConfig) -> bool:
        """True when the last checkpoint is at n_epochs, or its run stopped early."""
        return self.has_model() and is_finished(ckpt.read_checkpoint(self.last), training)

    def group(self, name: str) -> Path:
        """The folder of a predicted group's label maps and metrics."""
        return self.path / name

    def metrics(self, group: str) -> Path:
        return self.path / group / METRICS_FILENAME

    def scored_held_out_group(self) -> str | None:
        """Where the held-out cases were scored (`heldout/`, else `validation/`), or None before they are."""
        return next((g for g in (HELD_OUT_GROUP, "validation") if self.metrics(g).exists()), None)

    def read_manifest(self) -> dict[str, Any] | None:
        """What the predictions were made from (see experiment.steps), or None before any prediction."""
        return json.loads(self.manifest.read_text()) if self.manifest.exists() else None


def fold_number(name: str) -> int | None:
    """k of `fold{k}` or `fold{k}.json`; None for any other name."""
    match = _FOLD.fullmatch(name.removesuffix(".json"))
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class CrossValidationDir:
    """A cross-validation work dir: the split, one config and one `RunDir` per fold, the summary."""

    path: Path

    @property
    def splits(self) -> Path:
        return self.path / SPLITS_FILENAME

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILENAME

    @property
    def postprocessing(self) -> Path:
        return self.path / POSTPROCESSING_FILENAME

    def fold_config(self, k: int) -> Path:
        return self.path / f"fold{k}.json"

    def fold(self, k: int) -> RunDir:
        return RunDir(self.path / f"fold{k}")

    def fold_configs(self) -> list[Path]:
        """The fold configs written so far, in fold order."""
        return sorted(
            (p for p in self.path.glob("fold*.json") if p.is_file() and fold_number(p.name) is not None),
            key=lambda p: fold_number(p.name) or 0,
        )

    def fold_dirs(self) -> list[RunDir]:
        """The fold folders there are (fold1, fold2, ...), in fold order."""
        found = (p for p in self.path.glob("fold*") if p.is_dir() and fold_number(p.name) is not None)
        return [RunDir(p) for p in sorted(found, key=lambda p: fold_number(p.name) or 0)]

    def folds(self) -> list[RunDir]:
        """The folds of the experiment: those its fold configs name, else the fold folders there are."""
        configs = self.fold_configs()
        return [self.fold(fold_number(p.name) or 0) for p in configs] if configs else self.fold_dirs()
