"""Checkpoints: the whole training state, written atomically, read back with ``weights_only=True``.

A checkpoint holds the model, optimizer, scheduler and gradient-scaler states, the epoch it completes, the best
metric so far, the log rows up to that epoch, the seed and the resolved config. Files are written to a temporary
name in the same folder, flushed to disk and renamed over the target, so a crash or ``kill -9`` leaves either the old
or the new file, never half of one. `model.pth` is written last in an epoch and is the commit point of that epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unet3d.atomic import atomic_write
from unet3d.errors import CheckpointError

LAST = "model.pth"
BEST = "model_best.pth"


def epoch_filename(epoch: int) -> str:
    """Name of the checkpoint kept for `epoch` by save_every_n_epochs / save_last_n_models."""
    return f"model_epoch{epoch}.pth"


@dataclass
class Checkpoint:
    """A checkpoint's contents, typed: the one place that knows its keys. A plain state dict (3DUnetCNN's, or a
    model exported elsewhere) reads as weights with no training state (`is_training_state` False, epoch 0)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    epoch: int = 0  # the epoch it completes
    best_metric: float = math.inf
    best_epoch: int = 0
    seed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # the training log up to `epoch`
    config: dict[str, Any] | None = None  # the resolved config it was trained with
    missing: list[str] = field(default_factory=list)  # of TRAINING_KEYS: weights alone lack them all

    @property
    def is_training_state(self) -> bool:
        """Whether training can resume from it (weights alone can only start a run: --pretrained_model_filename)."""
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        """What `save_checkpoint` writes (tensors, numbers, strings, lists and dicts only)."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "seed": self.seed,
            "rows": self.rows,
            "config": self.config,
        }


TRAINING_KEYS = ("model", "optimizer", "epoch", "rows")  # what makes a dict a unet3d training checkpoint


def save_checkpoint(path: Path, state: Checkpoint | dict[str, Any]) -> None:
    """Atomically save a checkpoint (a dict: tensors, numbers, strings, lists and dicts only)."""
    content = state.to_dict() if isinstance(state, Checkpoint) else state
    atomic_write(path, lambda handle: torch.save(content, handle))


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint safely and type its contents; a CheckpointError naming the file and the key if one is
    malformed."""
    path = Path(path)
    state = load_checkpoint(path, map_location)

    def number(key: str, kind: type, default: Any) -> Any:
        value = state.get(key, default)
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: {key!r} is {value!r}, not a number") from None

    rows = state.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise CheckpointError(f"{path}: 'rows' is not a list of log rows")
    return Checkpoint(
        model=_weights(state, path),
        optimizer=_optional_dict(state, "optimizer", path),
        scheduler=_optional_dict(state, "scheduler", path),
        scaler=_optional_dict(state, "scaler", path),
        epoch=number("epoch", int, 0),
        best_metric=number("best_metric", float, math.inf),
        best_epoch=number("best_epoch", int, 0),
        seed=number("seed", int, 0),
        rows=list(rows),
        config=_optional_dict(state, "config", path),
        missing=[key for key in TRAINING_KEYS if key not in state],
    )


def _optional_dict(state: dict[str, Any], key: str, path: Path) -> dict[str, Any] | None:
    value = state.get(key)
    if value is not None and not isinstance(value, dict):
        raise CheckpointError(f"{path}: {key!r} is a {type(value).__name__}, not a dict")
    return value


def _weights(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    try:
        return model_state(state)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw dict behind `read_checkpoint`, loaded safely (``weights_only=True``: no pickled code runs); a
    CheckpointError if unusable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for truncated, foreign or unsafe files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(error).__name__}: {first_line[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (expected a dict, got {type(state).__name__})")
    return state


def model_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a unet3d checkpoint, or the dict itself if it is a plain state dict (3DUnetCNN)."""
    weights = state.get("model", state)
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError("checkpoint holds no model weights")
    return {k.removeprefix("module."): v for k, v in weights.items()}


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights that must match the model exactly; a CheckpointError saying what differs otherwise."""
    result = model.state_dict()
    missing = sorted(set(result) - set(weights))
    unexpected = sorted(set(weights) - set(result))
    mismatched = sorted(k for k in set(result) & set(weights) if result[k].shape != weights[k].shape)
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            k = mismatched[0]
            details.append(
                f"{len(mismatched)} shape mismatch(es), e.g. {k}: {tuple(weights[k].shape)} in the "
                f"checkpoint vs {tuple(result[k].shape)} in the model"
            )
        if missing:
            details.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise CheckpointError(f"{source}: weights do not fit the configured model ({'; '.join(details)})")
    model.load_state_dict(weights)


def load_pretrained(model: torch.nn.Module, path: Path) -> tuple[list[str], list[str]]:
    """Initialise from another model's weights where names and shapes match; returns (loaded, skipped) names."""
    weights = read_checkpoint(path).model
    own = model.state_dict()
    loaded = [k for k, v in weights.items() if k in own and own[k].shape == v.shape]
    skipped = sorted(set(own) - set(loaded))
    if not loaded:
        raise CheckpointError(f"{path}: no layer matches the configured model by name and shape")
    model.load_state_dict({k: weights[k] for k in loaded}, strict=False)
    return loaded, skipped
