"""Helpers of the training tests."""

from __future__ import annotations

from pathlib import Path

import torch

from unet3d import checkpoint as ckpt


def weights(path: Path) -> dict[str, torch.Tensor]:
    """The network weights of a checkpoint file."""
    return ckpt.model_state(ckpt.load_checkpoint(path))
