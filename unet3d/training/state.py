"""What a checkpoint holds and how an epoch is committed: the training state besides the weights, the full-state
checkpoint written once per epoch (`model.pth` last: the commit point), and its restore on resume."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unet3d import checkpoint as ckpt
from unet3d.atomic import atomic_duplicate
from unet3d.config.schema import Config
from unet3d.errors import CheckpointError
from unet3d.optim import missing_state
from unet3d.training.components import Components
from unet3d.training.history import LOG_FILENAME, write_log
from unet3d.training.plots import PLOT_FILENAME, write_progress_plot
from unet3d.training.resume import Change, apply_accepted, optimizer_replaced, scheduler_replaced

log = logging.getLogger("unet3d")


@dataclass
class TrainingState:
    """What a checkpoint remembers besides the weights: progress, the best metric, and the log rows."""

    epoch: int = 0
    best_metric: float = math.inf
    best_epoch: int = 0
    seed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_state(components: Components, state: TrainingState, config: Config) -> ckpt.Checkpoint:
    """The full state to save: weights, optimizer, scheduler, scaler, progress, log rows and config."""
    return ckpt.Checkpoint(
        model=components.model.state_dict(),
        optimizer=components.optimizer.state_dict(),
        scheduler=components.scheduler.state_dict() if components.scheduler is not None else None,
        scaler=components.scaler.state_dict(),
        epoch=state.epoch,
        best_metric=state.best_metric,
        best_epoch=state.best_epoch,
        seed=state.seed,
        rows=state.rows,
        config=config.raw,
    )


def progress(saved: ckpt.Checkpoint) -> TrainingState:
    """The training state a checkpoint records."""
    return TrainingState(saved.epoch, saved.best_metric, saved.best_epoch, saved.seed, list(saved.rows))


def restore(
    components: Components, path: Path, device: torch.device, config: Config, accepted: Sequence[Change] = ()
) -> TrainingState:
    """Load a full checkpoint into the components and return the training state it records; config changes the user
    accepted (`--accept_config_changes`) are applied on top of the restored optimizer."""
    saved = ckpt.read_checkpoint(path, map_location=device)
    if not saved.is_training_state:
        raise CheckpointError(
            f"{path}: not a unet3d training checkpoint (no {saved.missing[0]!r}); "
            "use --pretrained_model_filename to start from its weights"
        )
    ckpt.load_model_weights(components.model, saved.model, path)
    _restore_optimizer(components, saved, config, accepted)
    if saved.scaler:
        components.scaler.load_state_dict(saved.scaler)
    return progress(saved)


def _restore_optimizer(
    components: Components, saved: ckpt.Checkpoint, config: Config, accepted: Sequence[Change]
) -> None:
    """The saved optimizer and scheduler states, with the accepted config changes on top (see `apply_accepted`); a
    new optimizer class starts both from scratch, a changed scheduler starts itself from scratch."""
    if optimizer_replaced(accepted):
        log.warning(
            "--accept_config_changes: the optimizer is now %s: it starts with a fresh state (no moments or momentum "
            "from the run so far), and so does the scheduler",
            config.optimizer.name,
        )
        return  # a scheduler's state belongs to the optimizer it was built on
    fresh_groups = [dict(group) for group in components.optimizer.param_groups]
    components.optimizer.load_state_dict(saved.optimizer)
    apply_accepted(accepted, components.optimizer, fresh_groups)
    missing = missing_state(components.optimizer) if any(c.key.startswith("optimizer.") for c in accepted) else []
    if missing:  # e.g. amsgrad turned on: its step would fail with a KeyError
        components.optimizer.state.clear()
        log.warning(
            "--accept_config_changes: the optimizer's new settings keep %s, which the run so far did not: it starts "
            "with a fresh state (no moments or momentum from the run so far)",
            ", ".join(missing),
        )
    if components.scheduler is None:
        return
    if scheduler_replaced(accepted):
        log.warning("the scheduler's settings changed: it starts again from its initial state")
    elif saved.scheduler is not None:
        components.scheduler.load_state_dict(saved.scheduler)
        if hasattr(components.scheduler, "base_lrs"):  # an accepted learning rate is the schedule's new base
            pairs = zip(components.optimizer.param_groups, components.scheduler.base_lrs, strict=True)
            components.scheduler.base_lrs = [group.get("initial_lr", base) for group, base in pairs]


def save_epoch(work_dir: Path, components: Components, state: TrainingState, config: Config, improved: bool) -> None:
    """Write this epoch's files; `model.pth` goes last (the commit point), then the log is rewritten from it."""
    training = config.training
    keep_every = training.save_every_n_epochs and state.epoch % training.save_every_n_epochs == 0
    names = [ckpt.BEST] if improved and training.save_best else []
    names += [ckpt.epoch_filename(state.epoch)] if keep_every or training.save_last_n_models else []
    # The state is written once; the other names are hard links to it (a copy where links are not supported).
    first = work_dir / (names[0] if names else ckpt.LAST)
    ckpt.save_checkpoint(first, checkpoint_state(components, state, config))
    for name in [*names[1:], ckpt.LAST] if names else []:
        atomic_duplicate(first, work_dir / name)
    write_log(work_dir / LOG_FILENAME, state.rows)
    if training.progress_plot:
        write_progress_plot(work_dir / PLOT_FILENAME, state.rows)
    if training.save_last_n_models:
        _prune_epoch_checkpoints(work_dir, state.epoch, training.save_last_n_models, training.save_every_n_epochs)


def _prune_epoch_checkpoints(work_dir: Path, epoch: int, keep_last: int, every: int | None) -> None:
    old = epoch - keep_last
    if old >= 1 and not (every and old % every == 0):
        (work_dir / ckpt.epoch_filename(old)).unlink(missing_ok=True)


def should_stop(state: TrainingState, patience: int | None) -> bool:
    """Early stopping: `patience` epochs in a row without a new best monitored metric (never if patience is None)."""
    return patience is not None and state.epoch - state.best_epoch >= patience
