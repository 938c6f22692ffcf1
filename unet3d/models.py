"""Build the network named in the `model` section (monai.networks.nets) and check it against the data."""

from __future__ import annotations

import inspect
import math

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


CONVOLUTIONS = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)


def output_layers(model: torch.nn.Module, n_outputs: int) -> list[torch.nn.Module]:
    """The layers that produce the network's outputs: its 1x1 convolutions with `n_outputs` channels (DynUNet's
    output block and deep-supervision heads, SegResNet's, SwinUNETR's), else the last convolution with that many."""
    convolutions = [
        m for m in model.modules() if isinstance(m, CONVOLUTIONS) and m.out_channels == n_outputs and m.bias is not None
    ]
    heads = [m for m in convolutions if all(k == 1 for k in m.kernel_size)]
    return heads or convolutions[-1:]


def check_output_bias_prior(n_classes: int, prior: float, activation: str) -> None:
    """Under softmax the classes' priors must leave some probability to the background."""
    if activation == "softmax" and n_classes * prior >= 1:
        raise ConfigError(
            f"training.output_bias_prior: {n_classes} classes at {prior} each leave no probability for the "
            "background; use a smaller prior"
        )


def initialize_output_bias(model: torch.nn.Module, n_outputs: int, prior: float, activation: str = "sigmoid") -> int:
    """Set the output layers' biases so that every region or class starts at probability `prior` (the prior
    initialization of RetinaNet's focal loss paper): sigmoid channels at `prior` each, softmax classes at `prior`
    each with the background (channel 0) taking the rest. Returns how many layers were set.

    Why: at the usual zero bias every voxel starts at probability 0.5 (sigmoid), and the cross-entropy's first steps
    drive the bias of a small region's channel far negative; with SGD and momentum 0.99 such a channel can stay off for
    the whole of a short schedule (measured in benchmarks/nnunet_parity.py)."""
    if activation == "softmax":
        check_output_bias_prior(n_outputs - 1, prior, activation)
        bias = torch.full((n_outputs,), math.log(prior))
        bias[0] = math.log(1 - (n_outputs - 1) * prior)
    else:
        bias = torch.full((n_outputs,), math.log(prior / (1 - prior)))
    layers = output_layers(model, n_outputs)
    if not layers:
        raise ConfigError(
            f"training.output_bias_prior: {type(model).__name__} has no convolution with {n_outputs} output channels "
            "and a bias to set"
        )
    with torch.no_grad():
        for layer in layers:
            layer.bias.copy_(bias.to(layer.bias))
    return len(layers)
