"""Build the optimizer (torch.optim) and the learning-rate scheduler (torch.optim.lr_scheduler) from the config."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from unet3d.config.schema import NamedSpec
from unet3d.errors import ConfigError
from unet3d.registry import check_kwargs, lookup

Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
# Keys of the `scheduler` section that are unet3d's, not the scheduler class's arguments.
SCHEDULER_OPTIONS = ("step", "monitor")
STEP_MODES = ("epoch", "iteration")


def scheduler_arguments(spec: NamedSpec) -> dict:
    """The scheduler class's keyword arguments (the section without unet3d's own keys)."""
    return {k: v for k, v in spec.kwargs.items() if k not in SCHEDULER_OPTIONS}


def scheduler_step_mode(spec: NamedSpec | None) -> str:
    """'epoch' (default) or 'iteration': when the scheduler steps (`scheduler.step`)."""
    return "epoch" if spec is None else spec.kwargs.get("step", "epoch")


def scheduler_monitor(spec: NamedSpec | None, default: str) -> str:
    """The log column a ReduceLROnPlateau watches: `scheduler.monitor`, else `default` (the column the best model
    follows: see training.selection)."""
    return default if spec is None else spec.kwargs.get("monitor", default)


def check_optim_specs(optimizer: NamedSpec, scheduler: NamedSpec | None) -> None:
    """Names and constructor arguments of the optimizer and scheduler, and the scheduler's step mode."""
    check_kwargs(
        lookup("optimizer", optimizer.name, "optimizer.name"), optimizer.kwargs, "optimizer", supplied=("params",)
    )
    if scheduler is None:
        return
    cls = lookup("scheduler", scheduler.name, "scheduler.name")
    check_kwargs(cls, scheduler_arguments(scheduler), "scheduler", supplied=("optimizer",))
    mode = scheduler_step_mode(scheduler)
    if mode not in STEP_MODES:
        raise ConfigError(f"scheduler.step: must be 'epoch' or 'iteration', got {mode!r}")
    if mode == "iteration" and issubclass(cls, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ConfigError("scheduler.step: ReduceLROnPlateau follows a logged metric and steps once per epoch")
    monitor = scheduler.kwargs.get("monitor")
    if monitor is not None and not isinstance(monitor, str):
        raise ConfigError(f"scheduler.monitor: expected a log column name such as 'val_dice', got {monitor!r}")


def build_optimizer(spec: NamedSpec, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The configured optimizer over `parameters`."""
    cls = lookup("optimizer", spec.name, "optimizer.name")
    try:
        return cls(parameters, **spec.kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer: {spec.name}: {error}") from None


def missing_state(optimizer: torch.optim.Optimizer) -> list[str]:
    """The per-parameter state entries the optimizer's next step reads and its restored state lacks (Adam's
    `max_exp_avg_sq` once `amsgrad` is on: a KeyError at the first step). Found by one step of the same class and
    settings on a one-element parameter of each shape rank; [] where such a step cannot be taken (LBFGS)."""
    missing: set[str] = set()
    for group in optimizer.param_groups:
        probed: dict[tuple, set[str]] = {}
        for param in group["params"]:
            held = optimizer.state.get(param)
            kind = (param.dim(), param.dtype, param.device)
            if held and kind not in probed:
                probed[kind] = _state_keys(type(optimizer), group, kind)
            missing |= probed.get(kind, set()) - set(held or ())
    return sorted(missing)


def _state_keys(cls: type[torch.optim.Optimizer], group: dict, kind: tuple) -> set[str]:
    rank, dtype, device = kind
    proxy = torch.zeros((1,) * rank, dtype=dtype, device=device, requires_grad=True)
    proxy.grad = torch.ones_like(proxy)
    try:
        probe = cls([proxy])
        probe.param_groups[0].update({k: v for k, v in group.items() if k != "params"})
        probe.step()
    except Exception:  # an optimizer whose step needs more (LBFGS: a closure) cannot be probed
        return set()
    return set(probe.state[proxy])


def build_scheduler(
    spec: NamedSpec | None, optimizer: torch.optim.Optimizer, plateau_mode: str = "min"
) -> Scheduler | None:
    """The configured scheduler, or None. A ReduceLROnPlateau that follows the best-model rule rather than its own
    `monitor` gets that rule's direction (`plateau_mode`: 'max' for a Dice) unless its `mode` is set."""
    if spec is None:
        return None
    cls = lookup("scheduler", spec.name, "scheduler.name")
    arguments = scheduler_arguments(spec)
    if issubclass(cls, torch.optim.lr_scheduler.ReduceLROnPlateau) and "monitor" not in spec.kwargs:
        arguments.setdefault("mode", plateau_mode)
    try:
        return cls(optimizer, **arguments)
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
