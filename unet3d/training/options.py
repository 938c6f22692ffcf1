"""How a run executes, apart from what it learns: devices, loader workers, the seed, a warm start, and the user's
consent to config changes. The experiment config never holds these, so one config runs anywhere."""

from __future__ import annotations

from dataclasses import InitVar, dataclass
from pathlib import Path

from unet3d.devices import n_devices_from


@dataclass
class RunOptions:
    """Settings of a run that are not part of the experiment (where and how it executes)."""

    n_devices: int | None = None  # devices of the config's training.device kind (None: all; 0: the CPU)
    dist_backend: str | None = None  # torch.distributed backend under torchrun (None: by device)
    n_workers: int = 0
    thread_workers: bool = False
    pin_memory: bool = False
    seed: int | None = None
    pretrained_model_filename: Path | None = None
    n_examples: int | None = None
    accept_config_changes: bool = False  # resume with changed model, data or optimizer keys (see training.resume)
    update_fold_configs: bool = False  # rewrite a cross-validation's fold configs from a changed experiment config
    n_gpus: InitVar[int | None] = None  # the name of n_devices before accelerators other than CUDA were supported

    def __post_init__(self, n_gpus: int | None) -> None:
        self.n_devices = n_devices_from(self.n_devices, n_gpus, "RunOptions")

    @property
    def existing_fold_configs(self) -> str:
        """What writing the fold configs does with ones that differ (see experiment.folds.write_fold_configs)."""
        return "update" if self.update_fold_configs else "refuse"
