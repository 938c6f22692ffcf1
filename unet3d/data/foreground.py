"""Which voxels count as foreground when a case is cropped to its content (the crop before the network).

A voxel is foreground when it lies above its channel's quantile `percentile` by more than a tiny share of the channel's
range, in any channel. The module needs torch and numpy only: `unet3d-export --format bundle` ships it in the bundle's
`scripts/`, so that a MONAI bundle crops exactly as unet3d does without unet3d installed.
"""

from __future__ import annotations

import numpy as np
import torch

# Interpolation leaves dust around a zeroed background (MONAI's resampling wrote 3e-13 where the true value is 0, in
# 484 voxels of a 10 x 25 x 14 case): it must not move the crop, so a voxel counts as foreground only above its
# channel's quantile by this fraction of the channel's range.
FOREGROUND_TOLERANCE = 1e-6


def foreground_above_percentile(image: torch.Tensor, percentile: float) -> torch.Tensor:
    """Foreground mask for cropping: voxels above the given quantile (0-1) of their channel, by more than
    FOREGROUND_TOLERANCE of the channel's range, in any channel."""
    flat = torch.as_tensor(image, dtype=torch.float32).reshape(image.shape[0], -1)
    thresholds = _numpy_quantile(flat, percentile) if flat.device.type == "cpu" else torch.quantile(flat, percentile, 1)
    thresholds = thresholds + FOREGROUND_TOLERANCE * (flat.amax(1) - flat.amin(1))
    above = torch.as_tensor(image) > thresholds.reshape(-1, *([1] * (image.ndim - 1)))
    mask = above.any(0, keepdim=True)
    return mask if mask.any() else torch.ones_like(mask)  # a constant image: keep it whole, never a 0-voxel crop


def _numpy_quantile(flat: torch.Tensor, percentile: float) -> torch.Tensor:
    # numpy selects (linear time) where torch.quantile sorts: on a BraTS-size case (4 x 8.9 M voxels) 0.07 s instead of
    # 1.16 s, half of the case's preprocessing. torch.quantile also refuses rows of more than 2**24 elements.
    return torch.from_numpy(np.quantile(flat.numpy(), percentile, axis=1)).to(torch.float32)
