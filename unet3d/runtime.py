"""Where and how a run executes: device, distributed process group, threads, seeds, and the environment banner.

Under `torchrun` (WORLD_SIZE > 1) each process trains on its own device (`cuda:LOCAL_RANK`, `npu:LOCAL_RANK`, ..., or
the CPU with the gloo backend) as one DistributedDataParallel replica; rank 0 alone writes logs, checkpoints and
predictions. Which device, and everything that depends on its kind, comes from `unet3d.devices`.
"""

from __future__ import annotations

import logging
import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

from unet3d.devices import KINDS, device_count, device_name, device_type, process_group_backend, torch_sees
from unet3d.errors import ConfigError
from unet3d.version import __version__

log = logging.getLogger("unet3d")


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of a run (of this process, under torchrun)."""

    device: torch.device
    n_devices: int  # accelerators this process uses: 1, or 0 on the CPU
    n_workers: int
    pin_memory: bool
    rank: int = 0
    world_size: int = 1
    thread_workers: bool = False  # loader workers as threads of this process instead of processes
    backend: str | None = None  # the process group's torch.distributed backend under torchrun

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


def cpus_for_this_process() -> int:
    """The CPUs this process may use: SLURM's allocation per task (`SLURM_CPUS_PER_TASK`, which a cluster without
    CPU binding does not enforce), else the affinity mask, shared among torchrun's processes on the node."""
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if allocated.isdigit() and int(allocated) > 0:
        cpus = int(allocated)
    elif hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, cpus // max(1, local_processes))


def limit_threads() -> None:
    """Use no more intra-op threads than `cpus_for_this_process` (torch counts every core of the machine); an
    OMP_NUM_THREADS the user set wins."""
    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > cpus_for_this_process():
        torch.set_num_threads(cpus_for_this_process())


def resolve_runtime(
    n_devices: int | None,
    n_workers: int,
    pin_memory: bool,
    thread_workers: bool = False,
    device: str = "auto",
    dist_backend: str | None = None,
) -> Runtime:
    """The device of this process: `device` ('auto', 'cpu', 'cuda', 'npu', 'xpu', 'mps'; see `unet3d.devices`), the
    CPU when `n_devices` is 0. Under torchrun, takes the local rank's device of that kind and joins the process group
    (nccl, hccl, xccl or gloo by device; `dist_backend` overrides). A named device that is absent is an error."""
    rank, local_rank, world_size = torchrun_world()
    limit_threads()
    if n_devices == 0:
        if device not in ("auto", "cpu"):
            raise ConfigError(f"--n_devices (--ngpus) 0 means the CPU, but the device asked for is {device!r}")
        kind = "cpu"
    else:
        kind = device_type(device)
        if device == "auto" and kind == "cpu" and rank == 0:
            log.info("device auto: %s; running on the CPU", torch_sees())
    workers = max(0, n_workers)
    pin = pin_memory and KINDS[kind].pin_memory
    if pin_memory and kind != "cpu" and not pin:
        log.warning("--pin_memory: torch cannot pin memory for %s devices; loader memory is not pinned", kind)
    if world_size > 1:
        where = torch.device("cpu")
        if kind != "cpu":
            if local_rank >= device_count(kind):
                raise ConfigError(
                    f"torchrun started local rank {local_rank}, but {torch_sees()}: start at most "
                    f"{device_count(kind)} processes per node (--nproc_per_node)"
                )
            where = torch.device(kind, local_rank)
            torch.accelerator.set_device_index(where)
        backend = process_group_backend(kind, dist_backend)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend=backend)
        return Runtime(where, int(kind != "cpu"), workers, pin, rank, world_size, thread_workers, backend)
    wanted = device_count(kind) if n_devices is None else n_devices
    if wanted > 1:
        log.warning(
            "--n_devices %d outside torchrun trains on one device; run it under torchrun for %d (the command does "
            "that itself when the devices exist)",
            wanted,
            wanted,
        )
    where = torch.device("cpu") if kind == "cpu" else torch.device(kind, 0)
    return Runtime(where, int(kind != "cpu"), workers, pin, thread_workers=thread_workers)


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
    """Seed Python, NumPy and torch (`torch.manual_seed` seeds every device: CUDA, XPU, MPS and plugin devices such
    as NPUs) and MONAI's transforms' default random states."""
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

    hardware = device_name(runtime.device)
    if runtime.distributed:
        hardware += f" x{runtime.world_size} processes (DistributedDataParallel)"
        hardware += f" over {runtime.backend}" if runtime.backend else ""
    return (
        f"unet3d {__version__} | torch {torch.__version__} | monai {monai.__version__} | "
        f"python {platform.python_version()} | device {hardware} | loader workers {runtime.n_workers}"
        f"{' (threads)' if runtime.thread_workers and runtime.n_workers else ''} | seed {seed}"
    )
