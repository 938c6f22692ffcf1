"""Build the network named in the `model` section (monai.networks.nets) and check it against the data."""

from __future__ import annotations

import inspect

import torch

from unet3d.config.schema import NamedSpec
from unet3d.errors import ConfigError
from unet3d.registry import check_kwargs, lookup


def check_model_spec(spec: NamedSpec, in_channels: int | None, out_channels: int | None, where: str = "model") -> None:
    """Name, constructor arguments, and channel counts against the data (when the network takes those arguments)."""
    cls = lookup("model", spec.name, f"{where}.name")
    check_kwargs(cls, spec.kwargs, where)
    given_in = spec.kwargs.get("in_channels")
    if in_channels is not None and given_in is not None and given_in != in_channels:
        raise ConfigError(f"{where}.in_channels: is {given_in} but each case has {in_channels} image channel(s)")
    given_out = spec.kwargs.get("out_channels")
    if out_channels is not None and given_out is not None and given_out != out_channels:
        raise ConfigError(f"{where}.out_channels: is {given_out} but the labels and activation need {out_channels}")


FIXED_DOWNSAMPLING = {"VNet": 16}  # four stride-2 levels, whatever the arguments


def total_downsampling(spec: NamedSpec, dims: int) -> list[int] | None:
    """Per-axis product of the network's `strides` (DynUNet, UNet, ...), or None when it has no such argument.
    Networks with a fixed depth have theirs in FIXED_DOWNSAMPLING."""
    if spec.name in FIXED_DOWNSAMPLING:
        return [FIXED_DOWNSAMPLING[spec.name]] * dims
    strides = spec.kwargs.get("strides")
    if not isinstance(strides, list) or not strides:
        return None
    total = [1] * dims
    for stride in strides:
        per_axis = stride if isinstance(stride, list) else [stride] * dims
        if len(per_axis) != dims or not all(isinstance(s, int) and s > 0 for s in per_axis):
            return None
        total = [t * s for t, s in zip(total, per_axis, strict=True)]
    return total


def check_input_shape(spec: NamedSpec, shape: list[int] | None, where: str = "dataset.desired_shape") -> None:
    """The input shape must be divisible by the total downsampling and leave more than one voxel at the bottom."""
    if not shape:
        return
    total = total_downsampling(spec, len(shape))
    if total is None:
        return
    if any(size % factor for size, factor in zip(shape, total, strict=True)):
        raise ConfigError(
            f"{where}: {shape} is not divisible by the model's total downsampling {total} "
            f"({'fixed for ' + spec.name if spec.name in FIXED_DOWNSAMPLING else 'the product of model.strides'})"
        )
    bottom = [size // factor for size, factor in zip(shape, total, strict=True)]
    if all(b == 1 for b in bottom):
        raise ConfigError(
            f"{where}: {shape} leaves a 1-voxel bottleneck after the model's total downsampling "
            f"{total}; use at least {[2 * f for f in total]} or fewer stride-2 levels"
        )


def spatial_dims(spec: NamedSpec) -> int:
    """The network's number of spatial dimensions (its `spatial_dims`/`dimensions` argument or default, else 3)."""
    for key in ("spatial_dims", "dimensions"):
        if key in spec.kwargs:
            return int(spec.kwargs[key])
    parameter = inspect.signature(lookup("model", spec.name, "model.name")).parameters.get("spatial_dims")
    if parameter is not None and isinstance(parameter.default, int):
        return parameter.default
    return 3


def build_model(spec: NamedSpec) -> torch.nn.Module:
    """Instantiate the configured network; constructor errors become ConfigErrors naming the section."""
    cls = lookup("model", spec.name, "model.name")
    try:
        return cls(**spec.kwargs)
    except (TypeError, ValueError, AssertionError, NotImplementedError) as error:
        raise ConfigError(f"model: {spec.name}: {error}") from None


def deep_supervision_heads(spec: NamedSpec) -> int:
    """Outputs the network returns while training: 1, or 1 + deep_supr_num with DynUNet's deep supervision."""
    if not spec.kwargs.get("deep_supervision", False):
        return 1
    return 1 + int(spec.kwargs.get("deep_supr_num", 1))
