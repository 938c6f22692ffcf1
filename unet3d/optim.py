"""Build the optimizer (torch.optim) and the learning-rate scheduler (torch.optim.lr_scheduler) from the config."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from unet3d.config.schema import NamedSpec
from unet3d.errors import ConfigError
from unet3d.registry import check_kwargs, lookup

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def check_optim_specs(optimizer: NamedSpec, scheduler: NamedSpec | None) -> None:
    """Names and constructor arguments of the optimizer and scheduler."""
    check_kwargs(
        lookup("optimizer", optimizer.name, "optimizer.name"), optimizer.kwargs, "optimizer", supplied=("params",)
    )
    if scheduler is not None:
        check_kwargs(
            lookup("scheduler", scheduler.name, "scheduler.name"),
            scheduler.kwargs,
            "scheduler",
            supplied=("optimizer",),
        )


def build_optimizer(spec: NamedSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer over `parameters`."""
    cls = lookup("optimizer", spec.name, "optimizer.name")
    try:
        return cls(parameters, **spec.kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer: {spec.name}: {error}") from None


def build_scheduler(spec: NamedSpec | None, optimizer: torch.optim.Optimizer) -> Scheduler | None:
    """The configured scheduler, or None."""
    if spec is None:
        return None
    cls = lookup("scheduler", spec.name, "scheduler.name")
    try:
        return cls(optimizer, **spec.kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"scheduler: {spec.name}: {error}") from None


def step_scheduler(scheduler: Scheduler | None, monitored: float) -> None:
    """Advance the scheduler once per epoch; ReduceLROnPlateau gets the monitored value (val_loss, else loss)."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    else:
        scheduler.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group (what the log reports)."""
    return float(optimizer.param_groups[0]["lr"])
