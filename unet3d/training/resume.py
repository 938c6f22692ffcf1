"""What a resumed run accepts from a changed config.

A run resumes from `model.pth` with the config saved inside it. Keys that only say how long to train, what to keep
and how to report (`n_epochs`, patience, checkpoint policy, logging, caching, the cluster, the inferer, extra file
groups to predict) take their new values. Keys that change what the model learns or sees (model, loss, optimizer,
scheduler, preprocessing, augmentation, batch size, seed, the training and validation cases) are refused with the old
and new values, unless the user accepts them explicitly (`--accept_config_changes`), which the log records.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unet3d import checkpoint as ckpt
from unet3d.config.schema import RESUME_APPLIED_SECTIONS, Config, applied_on_resume
from unet3d.errors import ConfigError

log = logging.getLogger("unet3d")

APPLIED_KEYS = applied_on_resume()  # marked in the schema, so the README reference shows them
LEARNING_GROUPS = ("training_filenames", "validation_filenames")  # other *_filenames groups are only predicted
MISSING = object()


@dataclass(frozen=True)
class Change:
    """One config key whose value differs between the run being resumed and the config given now."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_shown(self.key, self.old)} → {_shown(self.key, self.new)}"


def _shown(key: str, value: Any) -> str:
    if value is MISSING:
        return "(not set)"
    if key.endswith("_filenames") and isinstance(value, list):
        return f"{len(value)} cases"
    return repr(value)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested objects (lists are compared whole)."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat if flat else {prefix: data}
    return {prefix: data}


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every key whose value differs (present in one only counts), in a stable order."""
    before, after = _flatten(old), _flatten(new)
    keys = sorted(set(before) | set(after))
    return [
        Change(key, before.get(key, MISSING), after.get(key, MISSING))
        for key in keys
        if before.get(key, MISSING) != after.get(key, MISSING)
    ]


def applies_on_resume(key: str) -> bool:
    """Whether a changed key is taken without asking (it does not change what the model learns or sees)."""
    top = key.split(".")[0]
    if key in APPLIED_KEYS or top in RESUME_APPLIED_SECTIONS or any(key.startswith(f"{k}.") for k in APPLIED_KEYS):
        return True  # a nested key (training.tracker_kwargs.tracking_uri) goes with its applied parent
    return top.endswith("_filenames") and top not in LEARNING_GROUPS


def changes_to_accept(config: Config, work_dir: Path, accept: bool) -> list[Change]:
    """Compare `config` with the config of the run in `work_dir` (if any). Refused changes raise a ConfigError listing
    them and the ways on, unless `accept`: then they are logged and returned (to be applied after the restore)."""
    path = work_dir / ckpt.LAST
    if not path.exists():
        return []
    saved = ckpt.read_checkpoint(path).config
    if saved is None:
        return []
    changes = config_changes(saved, config.raw)
    refused = [change for change in changes if not applies_on_resume(change.key)]
    for change in changes:
        if applies_on_resume(change.key):
            log.info("config change applied on resume: %s", change)
    if refused and not accept:
        raise ConfigError(
            "\n".join(
                [
                    f"{work_dir}: the config differs from the run being resumed in keys that change what the model "
                    "learns or sees:",
                    *(f"  {change}" for change in refused),
                    "to go on, train in a new work dir (save the config under a new name, or give --output_dir), or "
                    "continue this run with the new values: --accept_config_changes (recorded in train.log)",
                ]
            )
        )
    for change in refused:
        log.warning("--accept_config_changes: resuming with %s", change)
    return refused


def optimizer_replaced(changes: Sequence[Change]) -> bool:
    """Whether an accepted change swaps the optimizer class (its saved state does not fit the new one)."""
    return any(change.key == "optimizer.name" for change in changes)


def scheduler_replaced(changes: Sequence[Change]) -> bool:
    """Whether an accepted change touches the scheduler (it starts again from its first epoch)."""
    return any(change.key == "scheduler" or change.key.startswith("scheduler.") for change in changes)


def apply_accepted(
    changes: Sequence[Change], optimizer: torch.optim.Optimizer, fresh_groups: Sequence[dict[str, Any]]
) -> None:
    """After a restore: give the optimizer's parameter groups the accepted hyperparameters (the restored state holds
    the old ones). Each changed key takes its value in `fresh_groups`, the groups as the new config and its scheduler
    build them, so a removed key returns to the class default. The learning rate: with a new scheduler, the one it
    starts with; with the kept one, the new base rate, which the schedule goes on from."""
    names = {change.key.split(".", 1)[1] for change in changes if change.key.startswith("optimizer.")}
    restart = scheduler_replaced(changes)
    for group, fresh in zip(optimizer.param_groups, fresh_groups, strict=True):
        for name in sorted((names - {"lr"}) & (fresh.keys() - {"params"})):
            group[name] = fresh[name]
        if restart:
            group.update({name: fresh[name] for name in ("lr", "initial_lr") if name in fresh})
        elif "lr" in names:  # a scheduler may scale its first epoch's rate (LinearLR): the base is initial_lr
            group["lr"] = group["initial_lr"] = fresh.get("initial_lr", fresh["lr"])
