"""Build the loss named in the `loss` section and derive the output activation from it (as 3DUnetCNN does)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from unet3d.config.schema import NamedSpec
from unet3d.errors import ConfigError
from unet3d.registry import check_kwargs, lookup

SOFTMAX_LOSSES = {"CrossEntropyLoss", "NLLLoss"}
SIGMOID_LOSSES = {"BCEWithLogitsLoss"}


def activation_from_loss(spec: NamedSpec, where: str = "loss") -> str:
    """'sigmoid' or 'softmax': from the loss's `sigmoid`/`softmax` flags, else from losses that imply one."""
    if spec.kwargs.get("sigmoid") and spec.kwargs.get("softmax"):
        raise ConfigError(f"{where}: sigmoid and softmax cannot both be true")
    if spec.kwargs.get("sigmoid") or spec.name in SIGMOID_LOSSES:
        return "sigmoid"
    if spec.kwargs.get("softmax") or spec.name in SOFTMAX_LOSSES:
        return "softmax"
    raise ConfigError(
        f'{where}: cannot tell the output activation; set "sigmoid": true (overlapping or single labels) '
        f'or "softmax": true (mutually exclusive labels)'
    )


def check_loss_spec(spec: NamedSpec, where: str = "loss") -> None:
    """The loss name and its constructor arguments."""
    check_kwargs(lookup("loss", spec.name, f"{where}.name"), spec.kwargs, where)


def deep_supervision_weights(n_heads: int) -> list[float]:
    """Head weights halving with each lower resolution and summing to 1 (nnU-Net), so the loss keeps its range."""
    raw = [0.5**i for i in range(n_heads)]
    return [w / sum(raw) for w in raw]


def build_loss(
    spec: NamedSpec, deep_supervision_heads: int = 0
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss as `loss(prediction, target)`.

    With deep supervision (`deep_supervision_heads` > 1) the network returns (B, heads, C, ...) while training; the
    heads are combined by MONAI's DeepSupervisionLoss with `deep_supervision_weights`. In eval mode the network
    returns plain (B, C, ...), which gets the plain loss.
    """
    cls = lookup("loss", spec.name, "loss.name")
    try:
        loss = cls(**spec.kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"loss: {spec.name}: {error}") from None
    if deep_supervision_heads < 2:
        return loss
    from monai.losses import DeepSupervisionLoss

    supervised = DeepSupervisionLoss(loss, weights=deep_supervision_weights(deep_supervision_heads))

    def deep_supervision_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.dim() == target.dim() + 1:
            return supervised(list(torch.unbind(prediction, dim=1)), target)
        return loss(prediction, target)

    return deep_supervision_loss
