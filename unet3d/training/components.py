"""Assemble everything a training run needs from a validated config: data loaders, model, loss, optimizer, ..."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data import Dataset
from monai.inferers import Inferer
from monai.transforms import Compose

from unet3d.config.schema import Config
from unet3d.data.datasets import (
    automatic_cache,
    available_memory,
    case_items,
    fingerprint_dir,
    make_dataset,
    make_loader,
    preprocessed_bytes,
)
from unet3d.data.device_augmentation import DeviceAugmentation, loader_part
from unet3d.data.labels import n_target_channels
from unet3d.data.seeding import SeededDataset, SeededSampler
from unet3d.data.transforms import build_transforms, preprocessing_fingerprint
from unet3d.devices import amp_dtype, grad_scaler
from unet3d.inferers import build_inferer
from unet3d.losses import activation_from_loss, build_loss
from unet3d.models import build_model, deep_supervision_heads, initialize_output_bias, spatial_dims
from unet3d.optim import Scheduler, build_optimizer, build_scheduler, scheduler_monitor, scheduler_step_mode
from unet3d.runtime import Runtime
from unet3d.training.selection import selection_for

log = logging.getLogger("unet3d")


@dataclass
class Components:
    """The objects of one training run. `model` is the bare network (never the DistributedDataParallel wrapper)."""

    model: torch.nn.Module
    network: torch.nn.Module  # what training forward passes go through (DistributedDataParallel under torchrun)
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    eval_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    activation: str
    groups: list[tuple[int, ...]]  # the label values of each region (output channel besides a softmax background)
    channel_names: list[str]
    train_dataset: Dataset
    train_transform: Compose  # the whole chain, also where its random part runs on the device
    device_augmentation: DeviceAugmentation | None  # the random part of the chain, with `training.augment_on` device
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    sampler: SeededSampler  # seeds each epoch's augmentations (and a DistributedSampler's shuffle): set_epoch()
    memory_format: torch.memory_format | None  # channels-last layout of the inputs, when the network uses it
    scheduler_step: str  # 'epoch' or 'iteration'
    scheduler_monitor: str  # the log column ReduceLROnPlateau follows
    inferer: Inferer


def cache_settings(config: Config, work_dir: Path) -> tuple[str, Path | None]:
    """The cache mode and the disk cache's root folder. 3DUnetCNN's 'SegmentationDatasetPersistent' means disk;
    'auto' picks memory when the preprocessed cases fit in a quarter of the available memory, else disk."""
    mode = config.dataset.cache
    if mode == "auto":
        if config.dataset.name == "SegmentationDatasetPersistent":
            mode = "disk"
        else:
            cases = [*config.groups.get("training", []), *config.groups.get("validation", [])]
            targets = n_target_channels(config.labels, activation_from_loss(config.loss)) if config.labels else 1
            estimated = preprocessed_bytes(cases, config.dataset.desired_shape, targets, config.dataset.spacing)
            mode = automatic_cache(estimated, available_memory())
            # an upper bound: the foreground crop is unknown until the data are read (32 BraTS-size cases: 7,629 MiB
            # estimated, 1,528 MiB on disk)
            log.info("cache: %s (preprocessed cases at most about %.0f MiB)", mode, estimated / 2**20)
    root = Path(config.dataset.cache_dir) if config.dataset.cache_dir else work_dir / "cache"
    return mode, (root if mode == "disk" else None)


def build_dataset(
    config: Config, split: str, work_dir: Path, runtime: Runtime, augment: bool, on_device: bool = False
) -> tuple[Dataset, Compose]:
    """The dataset of one split (`training` or `validation` cases) with the configured caching, and its whole chain
    of transforms. With `on_device` the dataset runs the chain up to its random part (`loader_part`)."""
    softmax = activation_from_loss(config.loss) == "softmax"
    dataset_config = config.dataset_for(split)
    transform = build_transforms(
        dataset_config,
        with_label=True,
        softmax=softmax,
        augment=augment,
        where=f"dataset.{split}" if dataset_config is not config.dataset else "dataset",
    )
    mode, root = cache_settings(config, work_dir)
    cache_dir = fingerprint_dir(root, preprocessing_fingerprint(dataset_config, softmax)) if root else None
    items = case_items(config.groups[split], with_label=True)
    loaded = loader_part(transform) if on_device else transform
    return make_dataset(items, loaded, mode, cache_dir, runtime.n_workers), transform


def channels_last_format(config: Config) -> torch.memory_format:
    """torch.channels_last_3d for volumes, torch.channels_last for 2D images."""
    return torch.channels_last_3d if spatial_dims(config.model) == 3 else torch.channels_last


def training_sampler(dataset: Dataset, samples_per_epoch: int | None, runtime: Runtime) -> torch.utils.data.Sampler:
    """How training cases are drawn: each process gets its own share under torchrun; `samples_per_epoch` draws that
    many (over all processes, with replacement when more than the cases); else a plain shuffle."""
    if samples_per_epoch is not None:
        per_process = math.ceil(samples_per_epoch / runtime.world_size)
        return torch.utils.data.RandomSampler(
            dataset, replacement=samples_per_epoch > len(dataset), num_samples=per_process, generator=torch.Generator()
        )
    if runtime.distributed:
        return torch.utils.data.DistributedSampler(
            dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True
        )
    return torch.utils.data.RandomSampler(dataset, generator=torch.Generator())


def build_components(config: Config, work_dir: Path, runtime: Runtime) -> Components:
    """Everything `fit` needs, on `runtime.device`."""
    activation = activation_from_loss(config.loss)
    groups = config.regions
    channel_names = config.region_names
    on_device = config.training.augment_on == "device"
    train_dataset, train_transform = build_dataset(config, "training", work_dir, runtime, True, on_device)
    device_augmentation = DeviceAugmentation(train_transform) if on_device else None
    if device_augmentation is not None:
        log.info("augmentations on %s: %s", runtime.device, ", ".join(device_augmentation.names) or "none")
    samples = config.training.samples_per_epoch
    if config.training.iterations_per_epoch is not None:
        samples = config.training.iterations_per_epoch * config.training.batch_size * runtime.world_size
    sampler = SeededSampler(training_sampler(train_dataset, samples, runtime))
    train_loader = make_loader(
        SeededDataset(train_dataset, with_seed=on_device),
        config.training.batch_size,
        n_workers=runtime.n_workers,
        pin_memory=runtime.pin_memory,
        sampler=sampler,
        prefetch_factor=config.training.prefetch_factor,
        thread_workers=runtime.thread_workers,
    )
    val_loader = None
    if config.groups.get("validation"):
        val_dataset, _ = build_dataset(config, "validation", work_dir, runtime, augment=False)
        val_loader = make_loader(
            val_dataset,
            config.training.validation_batch_size,
            n_workers=runtime.n_workers,
            pin_memory=runtime.pin_memory,
            variable_shapes=config.dataset.random_crop or not config.dataset.desired_shape,
            thread_workers=runtime.thread_workers,
        )
    model = build_model(config.model)
    prior = config.training.output_bias_prior
    if prior is not None:
        n_layers = initialize_output_bias(model, n_target_channels(config.labels, activation), prior, activation)
        log.info("output biases of %d layer(s) set: every region starts at probability %g", n_layers, prior)
    model = model.to(runtime.device)
    memory_format = channels_last_format(config) if config.training.channels_last else None
    if memory_format is not None:
        model = model.to(memory_format=memory_format)
    network = model
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type != "cpu" else None
        network = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if config.training.compile:
        mode = None if config.training.compile is True else config.training.compile
        network = torch.compile(network, mode=mode)
    dtype = amp_dtype(config.training.amp, runtime.device)
    plateau = selection_for(config.training.select_by, val_loader is not None)
    if plateau.select_by == "last":  # the last epoch has no plateau to find: the scheduler follows the loss
        plateau = selection_for("val_loss", val_loader is not None)
    return Components(
        model=model,
        network=network,
        loss=build_loss(config.loss, deep_supervision_heads(config.model)),
        eval_loss=build_loss(config.loss),
        optimizer=(optimizer := build_optimizer(config.optimizer, model.parameters())),
        scheduler=build_scheduler(config.scheduler, optimizer, plateau.mode),
        scaler=grad_scaler(dtype, runtime.device),
        amp_dtype=dtype,
        activation=activation,
        groups=groups,
        channel_names=channel_names,
        train_dataset=train_dataset,
        train_transform=train_transform,
        device_augmentation=device_augmentation,
        train_loader=train_loader,
        val_loader=val_loader,
        sampler=sampler,
        memory_format=memory_format,
        scheduler_step=scheduler_step_mode(config.scheduler),
        scheduler_monitor=scheduler_monitor(config.scheduler, plateau.column),
        inferer=build_inferer(config),
    )
