"""The devices a run can use, through torch's own accelerator API (`torch.accelerator`).

torch knows one accelerator per build: CUDA (and ROCm, which calls itself cuda), Intel XPU, Apple MPS, or one that a
plugin registers when torch is imported (Huawei Ascend's `torch_npu` registers `npu`). `--device auto` takes that
accelerator when it has a device, else the CPU (and says so in the log); a named device that torch does not see is a
`DeviceUnavailable` error naming the device, what torch sees, and what provides such devices: never a silent CPU run.
Everything that differs between devices is in the `KINDS` table: the process-group backend, the AMP dtypes, whether
pinned memory is possible, the SLURM resource and the variable that hides devices from a process.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from unet3d.errors import ConfigError, DeviceUnavailable

log = logging.getLogger("unet3d")


@dataclass(frozen=True)
class DeviceKind:
    """What unet3d needs to know about one kind of device."""

    backend: str  # torch.distributed process-group backend of DistributedDataParallel on it
    provider: str  # what gives torch such devices, for the message when one is asked for but absent
    amp_dtypes: tuple[torch.dtype, ...]  # autocast dtypes `training.amp` may use (none: AMP ignored)
    pin_memory: bool  # whether the loader can pin memory for copies to it
    slurm_gres: str | None  # SLURM generic resource of the generated scripts (`--gres=<name>:N`)
    visible_devices: str | None  # the environment variable that restricts a process to some of the devices


HALF = (torch.float16, torch.bfloat16)
KINDS: dict[str, DeviceKind] = {
    "cpu": DeviceKind("gloo", "torch itself", (), False, None, None),
    "cuda": DeviceKind(
        "nccl",
        "a CUDA (or ROCm) build of torch (pytorch.org's install selector gives the pip command) and an NVIDIA (or "
        "AMD) driver",
        HALF,
        True,
        "gpu",
        "CUDA_VISIBLE_DEVICES",
    ),
    "npu": DeviceKind(
        "hccl",
        "the torch_npu package (pip install torch-npu, the version made for this torch; torch loads it by itself "
        "unless TORCH_DEVICE_BACKEND_AUTOLOAD=0) with Huawei's CANN toolkit on an Ascend machine",
        HALF,
        True,
        "npu",
        "ASCEND_RT_VISIBLE_DEVICES",
    ),
    "xpu": DeviceKind(
        "xccl",
        "an XPU build of torch (pip install torch --index-url https://download.pytorch.org/whl/xpu) and Intel's GPU "
        "driver",
        HALF,
        True,
        "gpu",
        "ZE_AFFINITY_MASK",
    ),
    # MPS has no pinned memory in torch (its DataLoader turns it off); one device per Mac, no SLURM.
    "mps": DeviceKind(
        "gloo", "torch on macOS 12.3 or later with Apple silicon (the standard macOS wheel)", HALF, False, None, None
    ),
}
DEVICE_CHOICES = ("auto", *KINDS)


def accelerator_type() -> str | None:
    """The type of torch's current accelerator when it has a device available ('cuda', 'npu', ...), else None."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    return None if accelerator is None else accelerator.type


def torch_sees() -> str:
    """What torch reports about accelerators, for messages: its version, the accelerator it was built or extended
    for, and how many such devices it sees."""
    built = torch.accelerator.current_accelerator()
    if built is None:
        return f"torch {torch.__version__} has no accelerator (a CPU-only build, and no device plugin registered one)"
    if not torch.accelerator.is_available():
        return f"torch {torch.__version__} supports {built.type} but sees no {built.type} device"
    count = torch.accelerator.device_count()
    return f"torch {torch.__version__} sees {count} {built.type} device{'s' if count != 1 else ''}"


def device_type(name: str) -> str:
    """The kind of device `name` (a `--device` / `training.device` value) means here: 'auto' → the current
    accelerator when torch sees one, else 'cpu'; a named device → itself, or DeviceUnavailable when torch does not
    see one."""
    if name not in DEVICE_CHOICES:
        raise ConfigError(f"device {name!r}: unknown (choose one of {', '.join(DEVICE_CHOICES)})")
    if name == "cpu":
        return "cpu"
    present = accelerator_type()
    if name == "auto":
        return present or "cpu"
    if present != name or torch.accelerator.device_count() < 1:
        raise DeviceUnavailable(
            f"device {name!r} was asked for (--device / training.device), but {torch_sees()}; {name} devices need "
            f"{KINDS[name].provider}"
        )
    return name


def planned_kind(name: str) -> str:
    """The kind of device `unet3d-plan --device` plans for, in train's and predict's vocabulary: a kind of `KINDS`,
    'auto' (this machine's accelerator, else the CPU), or 'gpu' (the earlier name of cuda). Unlike `device_type` it
    does not need the device here: a plan is often written on a login node for the cluster's GPUs."""
    if name == "gpu":
        return "cuda"
    if name == "auto":
        return accelerator_type() or "cpu"
    if name not in KINDS:
        raise ConfigError(f"--device: expected one of {', '.join([*DEVICE_CHOICES, 'gpu'])}, got {name!r}")
    return name


def device_count(kind: str) -> int:
    """How many devices of this kind torch sees (0 for the CPU, and for any kind but the current accelerator)."""
    return torch.accelerator.device_count() if kind != "cpu" and accelerator_type() == kind else 0


def n_devices_from(n_devices: int | None, n_gpus: int | None, where: str) -> int | None:
    """`n_devices`, or `n_gpus`, its name before accelerators other than CUDA were supported; a ConfigError when
    both are given and disagree (`where` names the caller)."""
    if n_gpus is None:
        return n_devices
    if n_devices is not None and n_devices != n_gpus:
        raise ConfigError(f"{where}: n_gpus={n_gpus} and n_devices={n_devices} disagree")
    return n_gpus


def process_group_backend(kind: str, override: str | None = None) -> str:
    """The torch.distributed backend for DistributedDataParallel on this kind of device: nccl (CUDA), hccl (NPU),
    xccl (XPU), gloo (CPU, MPS); `override` (--dist_backend, see `check_backend`) when given."""
    check_backend(override)
    return override or KINDS[kind].backend


def check_backend(name: str | None) -> None:
    """--dist_backend: a torch.distributed backend torch knows here (gloo, nccl, xccl, ucc, mpi, or one a device
    plugin registers, such as torch_npu's hccl), or per-device pairs such as 'cpu:gloo,cuda:nccl'."""
    if name is None:
        return
    known = [b for b in torch.distributed.Backend.backend_list if b not in ("undefined", "fake")]
    wrong = [part for part in name.lower().split(",") if part.split(":")[-1] not in known]
    if wrong or not name:
        raise ConfigError(
            f"--dist_backend: {name!r} is not a torch.distributed backend here (known: {', '.join(known)})"
        )


def device_name(device: torch.device) -> str:
    """A readable name of the device for the log: the accelerator's product name where torch tells it."""
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    module = getattr(torch, device.type, None)
    describe = getattr(module, "get_device_name", None)
    return f"{describe(device)} ({device})" if describe is not None else str(device)


def amp_dtype(amp: bool | str, device: torch.device, warn: bool = True) -> torch.dtype | None:
    """The autocast dtype for `training.amp` (true/'fp16': float16, 'bf16': bfloat16) on this device, or None; AMP is
    ignored on the CPU (full precision, as before accelerators other than CUDA were supported). A ConfigError when the
    device does not support bfloat16."""
    if not amp:
        return None
    wanted = torch.bfloat16 if amp == "bf16" else torch.float16
    kind = KINDS.get(device.type)
    if kind is None or wanted not in kind.amp_dtypes:
        if warn:
            where = "the CPU" if device.type == "cpu" else f"{device.type} devices"
            log.warning("training.amp is ignored on %s (full precision)", where)
        return None
    if wanted == torch.bfloat16 and accelerator_type() == device.type:
        supported = getattr(getattr(torch, device.type, None), "is_bf16_supported", None)
        if supported is not None and not supported():
            raise ConfigError(
                f"training.amp: 'bf16', but this {device.type} device ({device_name(device)}) does not support "
                "bfloat16; use 'fp16' (true)"
            )
    return wanted


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler of a training run on `device`: enabled for float16 autocast only (bfloat16 has float32's
    range and needs none; full precision neither)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def autocast(dtype: torch.dtype | None, device: torch.device) -> Any:
    """Mixed precision in `dtype` on `device` for the block, or nothing when dtype is None: the one place training,
    validation and prediction choose their precision."""
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timings); nothing on the CPU."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def empty_cache(device: torch.device) -> None:
    """Hand the device's cached, unused memory back (after running out of it); nothing on the CPU."""
    if device.type != "cpu":
        torch.accelerator.empty_cache()


def total_memory(kind: str) -> int | None:
    """Bytes of memory of the first device of this kind, where torch tells it; None for the CPU and MPS (which
    shares the machine's RAM)."""
    if kind in ("cpu", "mps"):
        return None
    properties = getattr(getattr(torch, kind, None), "get_device_properties", None)
    return int(properties(0).total_memory) if properties is not None else None
