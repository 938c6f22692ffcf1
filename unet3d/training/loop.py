"""The training loop: `fit` runs epochs of named steps and resumes from the last completed epoch.

Every epoch re-seeds all random number generators from (seed, epoch), and each sample's augmentations from (seed,
epoch, position; see `unet3d.data.seeding`), so a run that was interrupted and resumed draws the same shuffles and
augmentations as one that never stopped, with any number of loader workers (bit-identical on the CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from monai.data import MetaTensor
from monai.metrics import DiceMetric
from tqdm import tqdm

from unet3d import checkpoint as ckpt
from unet3d.atomic import atomic_write_json
from unet3d.config.schema import Config, TrainingConfig
from unet3d.data.decoding import activate
from unet3d.data.labels import region_masks
from unet3d.devices import autocast, synchronize
from unet3d.errors import TrainingDiverged, raise_if_terminated
from unet3d.optim import current_lr, step_scheduler
from unet3d.runtime import Runtime, all_reduce_mean, seed_everything
from unet3d.training.components import Components
from unet3d.training.history import LOG_FILENAME, write_log
from unet3d.training.resume import Change
from unet3d.training.selection import EMA_COLUMN, Selection, add_ema, selection_for
from unet3d.training.state import TrainingState, restore, save_epoch, should_stop
from unet3d.training.trackers import log_mirrors

log = logging.getLogger("unet3d")
CONFIG_FILENAME = "config.json"  # the exact config of the run, written once a (resumed) run has accepted it


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: distinct per epoch, the same on every rerun."""
    return (seed * 1_000_003 + epoch) % 2**32


def _autocast(components: Components, device: torch.device) -> Any:
    return autocast(components.amp_dtype, device)


def to_device(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and targets as plain tensors on the device: MONAI's MetaTensor would carry its metadata through every
    operation of the network (slower, and torch.compile cannot trace it)."""
    return tuple(  # type: ignore[return-value]
        torch.as_tensor(batch[key].as_tensor() if isinstance(batch[key], MetaTensor) else batch[key]).to(
            device, non_blocking=True
        )
        for key in ("image", "label")
    )


def train_step(
    components: Components, batch: dict[str, Any], device: torch.device, clip: float | None
) -> tuple[float, int]:
    """One optimisation step (memory format, autocast, gradient scaler, clipping, per-iteration scheduler): the one
    definition the loop and the benchmark share. Returns the loss and the batch size; TrainingDiverged, before the
    weights are updated, when the loss is not finite."""
    if components.device_augmentation is not None:
        batch = components.device_augmentation(batch, device)
    images, target = to_device(batch, device)
    if components.memory_format is not None:
        images = images.contiguous(memory_format=components.memory_format)
    components.optimizer.zero_grad(set_to_none=True)
    with _autocast(components, device):
        loss = components.loss(components.network(images), target)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise TrainingDiverged(f"the training loss is {value}")
    components.scaler.scale(loss).backward()
    if clip is not None:
        components.scaler.unscale_(components.optimizer)
        torch.nn.utils.clip_grad_norm_(components.model.parameters(), clip)
    components.scaler.step(components.optimizer)
    components.scaler.update()
    if components.scheduler is not None and components.scheduler_step == "iteration":
        components.scheduler.step()
    return value, int(images.shape[0])


class EpochTraining(NamedTuple):
    """What one epoch's training phase did: its mean loss per sample, the samples (patches) it trained on and the
    seconds it took (loading included, validation not)."""

    loss: float
    samples: int
    seconds: float


def train_one_epoch(
    components: Components, device: torch.device, epoch: int, training: TrainingConfig
) -> EpochTraining:
    """One epoch of optimisation (`training_iterations_per_epoch` passes over the loader); returns the mean training
    loss per sample, the sample count and the time. Per-iteration schedulers step after every batch."""
    components.network.train()
    total, count, iteration = 0.0, 0, 0
    start = time.perf_counter()
    passes = training.training_iterations_per_epoch
    bar = tqdm(
        total=len(components.train_loader) * passes,
        desc=f"epoch {epoch}/{training.n_epochs}",
        unit="batch",
        leave=False,
        disable=None,
    )
    for _ in range(passes):
        for batch in components.train_loader:
            raise_if_terminated()
            try:
                value, size = train_step(components, batch, device, training.gradient_clip)
            except TrainingDiverged as error:
                raise TrainingDiverged(f"epoch {epoch}, iteration {iteration + 1}: {error}") from None
            total += value * size
            count += size
            iteration += 1
            bar.update()
            bar.set_postfix(loss=f"{total / count:.4f}", samples_per_s=f"{count / (time.perf_counter() - start):.1f}")
            every = training.log_every_n_iterations
            if every and iteration % every == 0:
                log.info(
                    "epoch %d iteration %d | loss %.4f | lr %.3g | %.1f samples/s",
                    epoch,
                    iteration,
                    total / count,
                    current_lr(components.optimizer),
                    count / (time.perf_counter() - start),
                )
    bar.close()
    if count == 0:
        raise RuntimeError("the training loader yielded no batch")
    synchronize(device)
    return EpochTraining(total / count, count, time.perf_counter() - start)


def decoded_regions(logits: torch.Tensor, groups: Sequence[tuple[int, ...]], activation: str) -> torch.Tensor:
    """(B, C, *spatial) network outputs → (B, R, *spatial) float region masks, decoded as the written label maps
    are (`unet3d.data.labels.decode`: nested regions stay nested)."""
    probabilities = activate(logits, activation)
    return torch.stack([region_masks(sample, groups, activation) for sample in probabilities.cpu()]).float()


@torch.no_grad()
def validate(components: Components, device: torch.device) -> dict[str, float]:
    """Mean validation loss per sample and Dice per region, in the preprocessed space; the regions come from the
    same decoding as the written label maps, so this Dice and the full-volume Dice differ only by the resampling."""
    components.network.eval()
    softmax = components.activation == "softmax"
    dice = DiceMetric(include_background=True, reduction="mean_batch", ignore_empty=False)
    total, count = 0.0, 0
    for batch in components.val_loader:
        raise_if_terminated()
        images, target = to_device(batch, device)
        with _autocast(components, device):
            logits = components.inferer(images, components.network)
        logits = logits.float()
        total += float(components.eval_loss(logits, target)) * images.shape[0]
        count += images.shape[0]
        regions = target[:, 1:] if softmax else target  # a softmax target has the background channel first
        dice(decoded_regions(logits, components.groups, components.activation), regions.cpu())
    per_channel = dice.aggregate().cpu().tolist()
    result = {"val_loss": total / count, "val_dice": sum(per_channel) / len(per_channel)}
    result.update(
        {f"val_dice_{name}": value for name, value in zip(components.channel_names, per_channel, strict=True)}
    )
    return result


def check_finite(row: dict[str, Any], model: torch.nn.Module, epoch: int) -> None:
    """TrainingDiverged when an epoch's losses or the weights are NaN or infinite: such an epoch is never saved."""
    for key in ("loss", "val_loss"):
        if key in row and not math.isfinite(row[key]):
            raise TrainingDiverged(f"epoch {epoch}: {key} is {row[key]}")
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingDiverged(f"epoch {epoch}: the weights {name} hold NaN or infinite values")


FullValidation = Callable[[torch.nn.Module], dict[str, float]]
FULL_VALIDATION_BUDGET = 0.1  # share of the epoch time the adaptive full-volume validation may take


def full_validation_due(epoch: int, n_epochs: int, interval: int) -> bool:
    """Whether the full-volume validation runs after `epoch`: every `interval` epochs, and after the last one."""
    return epoch % interval == 0 or epoch == n_epochs


def adapted_interval(validation_time: float, epoch_time: float) -> int:
    """The smallest interval that keeps full-volume validation within its share of the training time."""
    return max(1, math.ceil(validation_time / (FULL_VALIDATION_BUDGET * max(epoch_time, 1e-9))))


def fit(
    config: Config,
    components: Components,
    work_dir: Path,
    runtime: Runtime,
    seed: int,
    full_validation: FullValidation | None = None,
    accepted: Sequence[Change] = (),
) -> TrainingState:
    """Train until `training.n_epochs` or early stopping, resuming from `work_dir/model.pth` when present.

    `full_validation(model)`, when given, scores the model on whole validation volumes in their original space; its
    values join the log every `training.validation_interval` epochs (adaptive when that is null). `config.json` is
    (re)written once the checkpoint has been restored with this config, so a refused resume never changes it.
    """
    device = runtime.device
    training = config.training
    state = TrainingState(seed=seed)
    if (work_dir / ckpt.LAST).exists():
        state = restore(components, work_dir / ckpt.LAST, device, config, accepted)
        if runtime.is_main:
            write_log(work_dir / LOG_FILENAME, state.rows)
        log.info("resuming after epoch %d from %s", state.epoch, work_dir / ckpt.LAST)
    if runtime.is_main:
        atomic_write_json(work_dir / CONFIG_FILENAME, config.raw)
    selection = selection_for(training.select_by, components.val_loader is not None)
    if state.epoch:
        remeasure_best(state, selection)
    if components.val_loader is None and selection.select_by != "last":
        log.warning("no validation_filenames: the best model and the scheduler follow the training loss")
    interval = training.validation_interval or 1
    with log_mirrors(work_dir, state.rows, training, config.raw, runtime.is_main) as mirror:
        while state.epoch < training.n_epochs and not should_stop(state, training.early_stopping_patience):
            epoch = state.epoch + 1
            # Each process draws its own augmentations; a DistributedSampler shuffles the same way on all of them.
            seed_everything(epoch_seed(state.seed, epoch) + runtime.rank)
            components.sampler.set_epoch(
                epoch, seed=epoch_seed(state.seed, epoch) + runtime.rank, shuffle_seed=state.seed
            )
            started = time.perf_counter()
            row: dict[str, Any] = {"epoch": epoch, "lr": current_lr(components.optimizer)}
            try:
                trained = train_one_epoch(components, device, epoch, training)
                row["loss"] = all_reduce_mean(trained.loss, runtime)
                row.update(throughput(trained, runtime))
                if components.val_loader is not None:
                    row.update(validate(components, device))
                check_finite(row, components.model, epoch)
                if selection.column == EMA_COLUMN:
                    add_ema(row, state.rows)
            except TrainingDiverged as error:
                raise TrainingDiverged(
                    f"{work_dir}: {error}; stopped without saving this epoch: "
                    + (f"{ckpt.LAST} (epoch {state.epoch}) stays the resume point" if state.epoch else "nothing saved")
                    + ". Lower optimizer.lr (--accept_config_changes continues this run with it), set "
                    "training.gradient_clip, or look for extreme values in the data"
                ) from None
            if components.scheduler_step == "epoch":
                step_scheduler(components.scheduler, row.get(components.scheduler_monitor, math.nan))
            if (
                full_validation is not None
                and runtime.is_main
                and full_validation_due(epoch, training.n_epochs, interval)
            ):
                before = time.perf_counter() - started
                row.update(full_validation(components.model))
                if training.validation_interval is None:
                    interval = adapted_interval(time.perf_counter() - started - before, before)
            row["epoch_time"] = time.perf_counter() - started
            improved = selection.badness(row) < state.best_metric
            if improved:
                state.best_metric, state.best_epoch = selection.badness(row), epoch
            state.epoch = epoch
            state.rows.append(row)
            if runtime.is_main:
                save_epoch(work_dir, components, state, config, improved)
                mirror(row)
                log.info(_summary(row, improved))
    if should_stop(state, training.early_stopping_patience) and state.epoch < training.n_epochs:
        log.info(
            "early stopping: no better %s for %d epochs (best epoch %d)",
            selection.column,
            training.early_stopping_patience,
            state.best_epoch,
        )
    return state


def remeasure_best(state: TrainingState, selection: Selection) -> None:
    """On resume, measure the kept best epoch by the current rule (select_by may have changed), so that later epochs
    are compared with `model_best.pth` on the same scale."""
    kept = next((row for row in state.rows if row["epoch"] == state.best_epoch), None)
    if kept is None:
        return
    if selection.column == EMA_COLUMN and EMA_COLUMN not in kept:
        kept = dict(kept)
        add_ema(kept, [row for row in state.rows if row["epoch"] < state.best_epoch])
    if selection.column in kept:
        state.best_metric = selection.badness(kept)


def throughput(trained: EpochTraining, runtime: Runtime) -> dict[str, float]:
    """The log's `train_time` (seconds of the training phase; the mean over processes under torchrun) and
    `samples_per_s`: training samples of all processes per second of it, the images-per-second figure that
    published runs report."""
    seconds = all_reduce_mean(trained.seconds, runtime)
    samples = all_reduce_mean(float(trained.samples), runtime) * runtime.world_size
    return {"train_time": seconds, "samples_per_s": samples / max(seconds, 1e-9)}


def _summary(row: dict[str, Any], improved: bool) -> str:
    shown = [f"epoch {row['epoch']}", f"loss {row['loss']:.4f}"]
    if "val_loss" in row:
        shown += [f"val_loss {row['val_loss']:.4f}", f"val_dice {row['val_dice']:.3f}"]
    if EMA_COLUMN in row:
        shown.append(f"{EMA_COLUMN} {row[EMA_COLUMN]:.3f}")
    if "full_dice" in row:
        shown.append(f"full_dice {row['full_dice']:.3f}")
    shown += [f"lr {row['lr']:.3g}", f"{row['epoch_time']:.1f}s", f"{row['samples_per_s']:.1f} samples/s"]
    return " | ".join(shown) + (" | best" if improved else "")
