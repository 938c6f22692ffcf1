"""One model's work dir as numbered, restartable steps: 1. train, 2. predict every non-training file group with the
best model into `<work dir>/<group>/`, 3. score the labelled groups into `<group>/metrics.csv`, 4. check that the
validation cases' full-volume Dice agrees with the training log's (`dice_gaps`).

Each step is skipped when its result is on disk: training when the checkpoint is finished, prediction when
`predictions.json` names the same model file and epoch and lists the same groups.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unet3d import checkpoint as ckpt
from unet3d.atomic import atomic_write_json
from unet3d.config.schema import Config
from unet3d.evaluation.metrics import case_metrics, evaluate_directory, format_summary, read_labels, read_metrics
from unet3d.inference.loop import iter_predictions, predict_cases, prediction_path
from unet3d.inference.predictor import Predictor, make_predictor
from unet3d.inferers import build_inferer
from unet3d.locking import work_dir_lock
from unet3d.losses import activation_from_loss
from unet3d.output_guard import Inputs, check_outputs
from unet3d.runtime import is_main_process, resolve_runtime
from unet3d.training.history import read_log
from unet3d.training.loop import FullValidation
from unet3d.training.options import RunOptions
from unet3d.training.run import train_model
from unet3d.training.state import TrainingState
from unet3d.training.trackers import log_final_metrics
from unet3d.workdir import HELD_OUT_GROUP, RunDir

log = logging.getLogger("unet3d")
DICE_GAP_TOLERANCE = 0.05  # how far the full-volume Dice may fall below the preprocessed-space Dice before a warning


@dataclass(frozen=True)
class DiceGap:
    """A region whose Dice in the written label maps is much lower than the network's Dice in the training log."""

    region: str
    preprocessed: float  # the log's val_dice_<region> at the epoch of the model that made the label maps
    full_volume: float  # the mean dice_<region> of validation/metrics.csv (original space)

    def __str__(self) -> str:
        return f"{self.region}: full-volume Dice {self.full_volume:.3f} vs {self.preprocessed:.3f} in the training log"


@dataclass
class ModelResult:
    """What the steps produced for one work dir."""

    state: TrainingState | None = None
    predicted: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Path] = field(default_factory=dict)


def prediction_groups(config: Config) -> list[str]:
    """Every file group except the training cases, validation first."""
    return sorted((g for g in config.groups if g != "training" and config.groups[g]), key=lambda g: g != "validation")


PREDICTION_KEYS = ("model", "loss", "dataset", "inference")  # the config sections a prediction depends on


def _file_state(path: Path) -> list[Any]:
    try:
        status = Path(path).stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), status.st_size, status.st_mtime_ns]


def _manifest(config: Config, model: Path, groups: list[str]) -> dict:
    """What the predictions were made from: the model file and epoch, the groups, the settings they depend on, and
    every image and label file (size and modification time), so a changed label is scored again."""
    settings = json.dumps({key: config.raw.get(key) for key in PREDICTION_KEYS}, sort_keys=True, default=str)
    return {
        "model": model.name,
        "epoch": ckpt.read_checkpoint(model).epoch,
        "groups": groups,
        "settings": hashlib.sha256(settings.encode()).hexdigest(),
        "files": {
            group: {
                case.case_id: [_file_state(p) for p in [*case.images, *([case.label] if case.label else [])]]
                for case in config.groups[group]
            }
            for group in groups
        },
    }


def predictions_done(config: Config, work_dir: Path) -> bool:
    """True when the groups were predicted (and scored) with the current best model, the same prediction settings
    and the same files."""
    run = RunDir(work_dir)
    written = run.read_manifest()
    if written is None or not run.model().exists():
        return False
    return written == _manifest(config, run.model(), prediction_groups(config))


def predict_and_evaluate(
    config: Config, work_dir: Path, options: RunOptions, tta: bool = False, save_probabilities: bool = False
) -> ModelResult:
    """Steps 2-3: label maps for every non-training group, and metrics for the groups that have labels."""
    result = ModelResult()
    groups = prediction_groups(config)
    if not groups:
        return result
    run = RunDir(work_dir)
    model = run.model()
    runtime = resolve_runtime(
        options.n_devices, options.n_workers, options.pin_memory, options.thread_workers, config.training.device
    )
    predictor = make_predictor(config, [model], runtime.device, tta=tta)
    for group in groups:
        folder = run.group(group)
        cases = config.groups[group]
        predict_cases(predictor, config, cases, folder, save_probabilities, description=f"predict {group}")
        result.predicted[group] = folder
        if all(case.label is not None for case in cases):
            table = evaluate_directory(folder, cases, config.regions, config.region_names)
            result.metrics[group] = run.metrics(group)
            log.info("%s: %d cases, full volume, original space:\n%s", group, len(cases), format_summary(table))
    atomic_write_json(run.manifest, _manifest(config, model, groups))
    return result


def dice_gaps(work_dir: Path, tolerance: float = DICE_GAP_TOLERANCE) -> list[DiceGap]:
    """Step 4, the self-check: regions whose full-volume Dice on the validation cases is more than `tolerance` below
    the preprocessed-space Dice of the same model on the same cases. Both come from the same decoding, so a gap points
    at the inversion of the preprocessing or the resampling (or at regions too small to survive it)."""
    run = RunDir(work_dir)
    manifest, means = run.read_manifest(), read_metrics(run.metrics("validation")).means
    if manifest is None or not means:
        return []
    rows = read_log(run.log)
    rows = rows[rows["epoch"] == manifest.get("epoch")]
    if rows.empty:
        return []
    gaps = []
    for column in (c for c in rows.columns if c.startswith("val_dice_")):
        region = column.removeprefix("val_dice_")
        if f"dice_{region}" not in means:
            continue
        logged, full = float(rows[column].iloc[0]), means[f"dice_{region}"]
        if full < logged - tolerance:
            gaps.append(DiceGap(region, logged, full))
    return gaps


def full_volume_validation(config: Config) -> FullValidation | None:
    """A scorer of the model being trained: Dice per region on the whole validation volumes in their original space
    (log columns `full_dice` and `full_dice_<region>`), or None without validation cases."""
    cases = config.groups.get("validation") or []
    if not cases:
        return None
    regions, names = config.regions, config.region_names
    inferer = build_inferer(config)
    activation = activation_from_loss(config.loss)
    truths = {}

    def score(model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        predictor = Predictor([model], inferer, activation, device, amp=config.training.amp)
        was_training = model.training
        model.eval()
        per_case = []
        for prediction in iter_predictions(predictor, config, cases, description="full-volume validation"):
            case = prediction.case
            if case.case_id not in truths:
                truths[case.case_id] = read_labels(case.label, "ground truth")
            truth, spacing = truths[case.case_id]
            per_case.append(case_metrics(prediction.label_map.numpy(), truth, regions, names, spacing, hd95=False))
        model.train(was_training)
        means = {f"full_dice_{n}": float(np.mean([c[f"dice_{n}"] for c in per_case])) for n in names}
        return {"full_dice": float(np.mean(list(means.values()))), **means}

    return score


def track_final_metrics(config: Config, work_dir: Path, metrics: dict[str, Path]) -> None:
    """Send the held-out cases' mean Dice and HD95 per region to the run's tracker (`training.tracker`), if any."""
    path = metrics.get(HELD_OUT_GROUP) or metrics.get("validation")
    if config.training.tracker is None or path is None:
        return
    values = read_metrics(path).region_means()
    log_final_metrics(work_dir, config.training.tracker, config.training.tracker_kwargs, values)


def check_training_outputs(config: Config, work_dir: Path, fold_dirs: Sequence[Path] = ()) -> None:
    """Refuse, before any data are read, a work dir whose label maps would replace an image or label of the config's
    cases (the work dir inside the data's folders); for a cross-validation, the same for every fold's folders."""
    inputs = Inputs().add_config(config, "the config" if config.source is None else f"the config {config.source}")
    outputs: dict[Path, str] = {}
    for run_dir in fold_dirs or [work_dir]:
        for group, cases in config.groups.items():
            # a fold predicts its held-out share of the training cases; a single model predicts the other groups
            folders = [group] if group != "training" else [HELD_OUT_GROUP, "validation"] if fold_dirs else []
            for folder in folders:
                for case in cases:
                    outputs[prediction_path(run_dir / folder, case)] = f"the label map of case {case.case_id!r}"
    check_outputs(outputs, inputs, made_here=lambda path: True)


def run_model(config: Config, work_dir: Path, options: RunOptions) -> ModelResult:
    """Steps 1-4 for one work dir, skipping the steps already done; the work dir is locked while they run (`Busy`
    when another run has it)."""
    lock = work_dir_lock(work_dir) if is_main_process() else nullcontext()
    with lock:
        return _run_steps(config, work_dir, options)


def _run_steps(config: Config, work_dir: Path, options: RunOptions) -> ModelResult:
    result = ModelResult(state=train_model(config, work_dir, options, full_volume_validation(config)))
    if not is_main_process():
        return result  # under torchrun, rank 0 alone predicts and scores
    if predictions_done(config, work_dir):
        log.info("%s: predictions are up to date", work_dir)
        return result
    predicted = predict_and_evaluate(config, work_dir, options)
    result.predicted, result.metrics = predicted.predicted, predicted.metrics
    track_final_metrics(config, work_dir, result.metrics)
    for gap in dice_gaps(work_dir):
        log.warning(
            "self-check: %s; the written label maps score lower than the network (look at the inversion of the "
            "preprocessing and the resampling to the original space)",
            gap,
        )
    return result
