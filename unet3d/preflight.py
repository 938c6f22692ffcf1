"""Validate a whole experiment before any compute: every name, every constructor argument, the labels, the channel
counts against the data, and every file of every case. Each stage contributes its own checks; this runs them all.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time

from unet3d.config.fields import Problems
from unet3d.config.regions import declared_values
from unet3d.config.schema import SPLIT_BLOCKS, TRACKER_SETTINGS, Config, TrainingConfig
from unet3d.data.checks import CaseInfo, check_cases
from unet3d.data.datasets import available_memory
from unet3d.data.labels import check_label_spec, n_target_channels
from unet3d.data.transforms import build_transforms
from unet3d.devices import accelerator_type, total_memory
from unet3d.errors import ConfigError, DataError
from unet3d.losses import activation_from_loss, check_loss_spec
from unet3d.models import check_input_shape, check_model_spec, check_output_bias_prior, spatial_dims
from unet3d.optim import check_optim_specs
from unet3d.registry import check_kwargs, lookup, suggest
from unet3d.training.selection import EMA_COLUMN

log = logging.getLogger("unet3d")
ORIENTATION_CODES = ("LR", "PA", "IS")


def check_orientation(code: str | None) -> None:
    """An axis code such as 'RAS': one letter of each of L/R, P/A, I/S."""
    if code is None:
        return
    letters = code.upper()
    axes = sorted(next((i for i, pair in enumerate(ORIENTATION_CODES) if c in pair), -1) for c in letters)
    if len(letters) not in (2, 3) or axes != list(range(len(letters))):
        raise ConfigError(f"dataset.orientation: {code!r} is not an axis code like 'RAS' or 'LPS'")


def check_monitor(config: Config) -> None:
    """`training.select_by` needs validation cases for a Dice; `scheduler.monitor` must name a column every epoch's
    log row has."""
    validated = bool(config.groups.get("validation")) or config.cross_validation is not None
    if config.training.select_by in ("val_dice", EMA_COLUMN) and not validated:
        raise ConfigError(
            f"training.select_by: {config.training.select_by!r} needs validation_filenames (or cross_validation); "
            "without validation cases use val_loss (the training loss then) or last"
        )
    if config.scheduler is None or "monitor" not in config.scheduler.kwargs:
        return
    regions = config.region_names
    columns = ["loss", "val_loss", "val_dice", *(f"val_dice_{r}" for r in regions)]
    columns += [EMA_COLUMN] if config.training.select_by == EMA_COLUMN else []
    monitor = config.scheduler.kwargs["monitor"]
    if monitor.startswith(("val", EMA_COLUMN)) and not validated:
        raise ConfigError(f"scheduler.monitor: {monitor!r} needs validation_filenames (or cross_validation)")
    if monitor not in columns:
        raise ConfigError(
            f"scheduler.monitor: {monitor!r} is not a column of every log row "
            f"({', '.join(columns)}){suggest(str(monitor), columns)}"
        )


PATCH_SIZE_KEYS = ("spatial_size", "roi_size")  # what MONAI's croppers call the size of the patch they cut


def check_patch_sizes(config: Config) -> None:
    """Sizes that reach the network, besides `desired_shape`: the sliding-window size, and the patch size of crops
    among the training augmentations. Each must fit the model's total downsampling, or training would stop with a
    shape error in the middle of the first epoch."""
    if config.inference is not None and isinstance(config.inference.kwargs.get("roi_size"), list):
        check_input_shape(config.model, config.inference.kwargs["roi_size"], "inference.roi_size")
    training = config.dataset_for("training")
    for i, spec in enumerate(training.spatial_augmentations):
        if "Crop" not in spec.name:
            continue
        for key in PATCH_SIZE_KEYS:
            size = spec.kwargs.get(key)
            if isinstance(size, list) and all(isinstance(v, int) and v > 0 for v in size):
                check_input_shape(config.model, size, f"dataset.training.spatial_augmentations[{i}].{key}")


def warn_cross_entropy_over_regions(config: Config, activation: str) -> None:
    """MONAI's DiceCELoss takes a softmax cross-entropy over several channels even with `sigmoid: true`: wrong for
    independent or nested regions (binary cross-entropy per channel is what fits them)."""
    n_channels = n_target_channels(config.labels, activation) if config.labels else 1
    if config.loss.name == "DiceCELoss" and activation == "sigmoid" and n_channels > 1:
        log.warning(
            "loss: DiceCELoss with sigmoid on %d channels computes its cross-entropy as a softmax over the channels, "
            "which does not fit independent or nested regions; DiceFocalLoss with gamma 0 is Dice + binary "
            "cross-entropy per channel",
            n_channels,
        )


def check_tensorboard(training: TrainingConfig) -> None:
    """`training.tensorboard` needs the tensorboard package: a ConfigError before any compute when it is missing."""
    if not training.tensorboard:
        return
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError(
            "training.tensorboard: true needs the tensorboard package; pip install 'unet3d[tensorboard]'"
        ) from None


def check_tracker(training: TrainingConfig) -> None:
    """`training.tracker` needs its package, and only its own keys: a ConfigError before any compute otherwise."""
    if training.tracker is None:
        return
    if importlib.util.find_spec(training.tracker) is None:
        raise ConfigError(
            f"training.tracker: {training.tracker!r} needs the {training.tracker} package; "
            f"pip install 'unet3d[{training.tracker}]'"
        )
    known = TRACKER_SETTINGS[training.tracker]
    unknown = sorted(set(training.tracker_kwargs) - set(known))
    if unknown:
        raise ConfigError(
            f"training.tracker_kwargs: {unknown} are not {training.tracker} settings (known: {sorted(known)})"
        )
    for key, value in training.tracker_kwargs.items():
        choices = known[key]
        if not isinstance(value, str) or not value or (choices and value not in choices):
            expected = f"one of {list(choices)}" if choices else "a non-empty string"
            raise ConfigError(f"training.tracker_kwargs.{key}: expected {expected}, got {value!r}")


FIRST_WIDTH_KEYS = ("filters", "channels", "init_filters", "feature_size")  # the first layer's width, by network


def check_memory(config: Config) -> None:
    """Refuse a training input that cannot fit: one batch of inputs, targets and the first layer's activations (a
    lower bound of what a step needs) against the memory of the accelerator, or the RAM available now."""
    shape = config.dataset.desired_shape
    if not shape:
        return
    kwargs = config.model.kwargs
    width = next((kwargs[k] for k in FIRST_WIDTH_KEYS if k in kwargs), 0)
    width = width[0] if isinstance(width, list) and width else width
    channels = int(kwargs.get("in_channels", 1)) + int(kwargs.get("out_channels", 1)) + 2 * int(width or 0)
    needed = config.training.batch_size * channels * math.prod(shape) * 4
    present = accelerator_type()
    device_memory = total_memory(present) if present and config.training.device in ("auto", present) else None
    if device_memory:
        where, available = f"of {present} device memory", device_memory
    else:  # the CPU, or MPS (which shares the RAM)
        where, available = "of memory available", available_memory()
    if available and needed > available:
        raise ConfigError(
            f"dataset.desired_shape: {shape} with batch_size {config.training.batch_size} needs at least "
            f"{needed / 2**20:.0f} MiB for one batch (inputs, targets and the first layer's activations); this "
            f"machine has {available / 2**20:.0f} MiB {where}: lower desired_shape or batch_size, or train on "
            "patches (random_crop)"
        )


def check_experiment(config: Config, train: bool = True) -> None:
    """Everything that can be checked without reading data; one ConfigError lists every problem, each naming its key
    (a check that needs what an earlier one refused is skipped)."""
    problems = Problems()
    activation = problems.run(activation_from_loss, config.loss)
    problems.run(check_loss_spec, config.loss)
    problems.run(check_optim_specs, config.optimizer, config.scheduler)
    if config.inference is not None:
        inferer = problems.run(lookup, "inferer", config.inference.name, "inference.name")
        if inferer is not None:
            problems.run(check_kwargs, inferer, config.inference.kwargs, "inference")
    dataset = config.dataset
    before = len(problems.lines)
    if activation is not None:
        problems.run(check_label_spec, dataset.labels, dataset.setup_label_hierarchy, activation)
    labels_fit = activation is not None and len(problems.lines) == before  # the output channels follow from them
    problems.run(check_orientation, dataset.orientation)
    dims = problems.run(spatial_dims, config.model)
    for key in ("desired_shape", "spacing"):
        values = getattr(dataset, key)
        if dims is not None and values is not None and len(values) != dims:
            problems.add(f"dataset.{key}: has {len(values)} values but the model is {dims}D")
    if dataset.random_crop and not dataset.desired_shape:
        problems.add("dataset.random_crop: needs dataset.desired_shape (the patch size)")
    problems.run(check_input_shape, config.model, dataset.desired_shape)
    problems.run(check_patch_sizes, config)
    if config.training.iterations_per_epoch is not None and config.training.samples_per_epoch is not None:
        problems.add("training.iterations_per_epoch: give it or samples_per_epoch, not both")
    problems.run(check_monitor, config)
    if activation is not None:
        warn_cross_entropy_over_regions(config, activation)
        for split in SPLIT_BLOCKS:
            problems.run(
                lambda split: build_transforms(
                    config.dataset_for(split), True, activation == "softmax", augment=True, where=f"dataset.{split}"
                ),
                split,
            )
        if labels_fit:
            out_channels = n_target_channels(config.labels, activation)
            problems.run(lambda: check_model_spec(config.model, in_channels=None, out_channels=out_channels))
        if labels_fit and config.training.output_bias_prior is not None:
            problems.run(check_output_bias_prior, len(config.labels), config.training.output_bias_prior, activation)
    if train and not config.groups.get("training"):
        problems.add("training_filenames: required (a list of cases or a path to a .npy/.json list)")
    if train:
        problems.run(check_tensorboard, config.training)
        problems.run(check_tracker, config.training)
        problems.raise_any()  # the memory estimate needs a valid model and patch
        check_memory(config)
    problems.raise_any()


def check_constant_cases(infos: dict[str, list[CaseInfo]], crop_foreground: bool) -> None:
    """A case whose every image holds one value has nothing to learn from: refused with `crop_foreground` (there is
    no foreground to crop to), noted otherwise."""
    constant = [
        f"{group}_filenames: case {info.case_id!r}" for group, items in infos.items() for info in items if info.constant
    ]
    if constant and crop_foreground:
        raise DataError(
            "\n".join(
                f"{where}: every image is constant (one value in all voxels); dataset.crop_foreground finds no "
                "foreground in it: fix the files or leave the case out"
                for where in constant
            )
        )
    for where in constant:
        log.warning("%s: every image is constant (one value in all voxels)", where)


def check_data(config: Config, n_threads: int = 4) -> dict[str, list[CaseInfo]]:
    """Check every file of every group, and the image channel count against model.in_channels."""
    labelled = [g for g in ("training", "validation") if g in config.groups]
    start = time.perf_counter()
    infos = check_cases(config.groups, declared_values(config.labels), spatial_dims(config.model), labelled, n_threads)
    channels = next((info.n_channels for group in infos.values() for info in group), None)
    check_model_spec(config.model, in_channels=channels, out_channels=None)
    check_constant_cases(infos, config.dataset.crop_foreground)
    n_cases = sum(len(group) for group in infos.values())
    log.info(
        "checked %d cases in %d file groups in %.2f s: all readable and consistent",
        n_cases,
        len(infos),
        time.perf_counter() - start,
    )
    return infos
