"""Where and how a run executes: device, distributed process group, threads, seeds, and the environment banner.

Under `torchrun` (WORLD_SIZE > 1) each process trains on its own device (`cuda:LOCAL_RANK`, or the CPU with the
gloo backend) as one DistributedDataParallel replica; rank 0 alone writes logs, checkpoints and predictions.
"""

from __future__ import annotations

import logging
import os
import platform
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger("unet3d")


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of a run (of this process, under torchrun)."""

    device: torch.device
    n_gpus: int
    n_workers: int
    pin_memory: bool
    rank: int = 0
    world_size: int = 1
    thread_workers: bool = False  # loader workers as threads of this process instead of processes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0


def torchrun_world() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) outside torchrun."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def is_main_process() -> bool:
    """Whether this process writes the shared outputs: always outside torchrun, rank 0 under it."""
    return torchrun_world()[0] == 0


def resolve_runtime(n_gpus: int | None, n_workers: int, pin_memory: bool, thread_workers: bool = False) -> Runtime:
    """CUDA when available and not disabled with n_gpus=0; CPU otherwise (never a crash for lack of a GPU).
    Under torchrun, joins the process group (nccl on GPUs, gloo on the CPU) and takes the local rank's GPU."""
    rank, local_rank, world_size = torchrun_world()
    available = torch.cuda.device_count()
    wanted = available if n_gpus is None else n_gpus
    if wanted > 0 and available == 0 and rank == 0:
        log.info("no CUDA device is available; running on the CPU")
    if world_size > 1:
        use_cuda = wanted > 0 and available > local_rank
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        workers = max(0, n_workers)
        return Runtime(device, int(use_cuda), workers, pin_memory and use_cuda, rank, world_size, thread_workers)
    used = min(wanted, available, 1)
    if wanted > 1:
        log.warning(
            "--ngpus %d outside torchrun trains on one GPU; run it under torchrun for %d (the command does "
            "that itself when the GPUs exist)",
            wanted,
            wanted,
        )
    device = torch.device("cuda", 0) if used > 0 else torch.device("cpu")
    return Runtime(
        device=device,
        n_gpus=used,
        n_workers=max(0, n_workers),
        pin_memory=pin_memory and used > 0,
        thread_workers=thread_workers,
    )


def all_reduce_mean(value: float, runtime: Runtime) -> float:
    """The mean of a number over all processes (itself outside torchrun)."""
    if not runtime.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item()) / runtime.world_size


def broadcast_from_main(value: int, runtime: Runtime) -> int:
    """Rank 0's value on every process (e.g. a freshly drawn seed), itself outside torchrun."""
    if not runtime.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return int(box[0])


def shutdown_distributed() -> None:
    """Leave the process group at the end of a torchrun process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    """Wait for every process (no-op outside torchrun)."""
    if runtime.distributed:
        torch.distributed.barrier()


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
        hardware = f"{torch.cuda.get_device_name(runtime.device)}"
    else:
        hardware = f"CPU ({torch.get_num_threads()} threads)"
    if runtime.distributed:
        hardware += f" x{runtime.world_size} processes (DistributedDataParallel)"
    return (
        f"unet3d {unet3d.__version__} | torch {torch.__version__} | monai {monai.__version__} | "
        f"python {platform.python_version()} | device {hardware} | loader workers {runtime.n_workers}"
        f"{' (threads)' if runtime.thread_workers and runtime.n_workers else ''} | seed {seed}"
    )


def amp_dtype(amp: bool | str, device: torch.device, warn: bool = True) -> torch.dtype | None:
    """The autocast dtype for `training.amp` (true/'fp16': float16, 'bf16': bfloat16), or None; AMP is CUDA-only
    here and is ignored on the CPU."""
    if not amp:
        return None
    if device.type != "cuda":
        if warn:
            log.warning("training.amp is ignored on the CPU (full precision)")
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(dtype: torch.dtype | None, device: torch.device) -> Any:
    """Mixed precision in `dtype` on `device` for the block, or nothing when dtype is None: the one place training,
    validation and prediction choose their precision."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
