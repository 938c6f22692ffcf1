"""Where and how a run executes: device, threads, seeds, and the environment banner printed at start."""

from __future__ import annotations

import logging
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger("unet3d")


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of a run."""

    device: torch.device
    n_gpus: int
    n_workers: int
    pin_memory: bool


def resolve_runtime(n_gpus: int | None, n_workers: int, pin_memory: bool) -> Runtime:
    """CUDA when available and not disabled with n_gpus=0; CPU otherwise (never a crash for lack of a GPU)."""
    available = torch.cuda.device_count()
    wanted = available if n_gpus is None else n_gpus
    if wanted > 0 and available == 0:
        log.info("no CUDA device is available; running on the CPU")
    used = min(wanted, available)
    if wanted > available > 0:
        log.warning("%d GPUs requested but %d available; using %d", wanted, available, used)
    device = torch.device("cuda", 0) if used > 0 else torch.device("cpu")
    return Runtime(device=device, n_gpus=used, n_workers=max(0, n_workers), pin_memory=pin_memory and used > 0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) and MONAI's transforms' default random states."""
    from monai.utils import set_determinism

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    set_determinism(seed=seed % 2**32, use_deterministic_algorithms=None)


def use_deterministic_algorithms(enabled: bool) -> None:
    """Ask torch for deterministic kernels (and cuDNN for no benchmarking) when a run must be bit-reproducible."""
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def banner(runtime: Runtime, seed: int) -> str:
    """One line of versions and hardware for the log, so every result says what produced it."""
    import monai

    import unet3d

    if runtime.device.type == "cuda":
        hardware = f"{torch.cuda.get_device_name(runtime.device)} x{runtime.n_gpus}"
    else:
        hardware = f"CPU ({torch.get_num_threads()} threads)"
    return (
        f"unet3d {unet3d.__version__} | torch {torch.__version__} | monai {monai.__version__} | "
        f"python {platform.python_version()} | device {hardware} | loader workers {runtime.n_workers} | seed {seed}"
    )
