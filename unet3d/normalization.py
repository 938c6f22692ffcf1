"""Intensity normalization per channel, with the statistics written in the config (unet3d's own transforms).

CT intensities are Hounsfield units, comparable across scans, so a case's own mean and sd would throw information
away: the CT scheme clips to a range of the data set's foreground intensities (0.5-99.5 percentiles) and z-scores with
the foreground's mean and sd, all numbers stored in the config by `unet3d-plan` (or written by hand). Other modalities
(MR) have arbitrary scales: they are z-scored per case. Use as `dataset.normalization`:

    "normalization": "CTNormalized",
    "normalization_kwargs": {"lower": -990, "upper": 420, "mean": 85.3, "std": 120.1}

or, for data sets that mix CT with other channels, one scheme per channel:

    "normalization": "ChannelNormalized",
    "normalization_kwargs": {"schemes": [{"scheme": "ct", "lower": ..., ...}, {"scheme": "zscore", "nonzero": true}]}
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

# nnU-Net's channel schemes: rescale_to_0_1 maps a case's own range to [0, 1], rgb_to_0_1 divides by 255.
SCHEMES = ("ct", "zscore", "none", "rescale_to_0_1", "rgb_to_0_1")
_EPSILON = 1e-8


def _check_scheme(index: int, scheme: Any) -> dict[str, Any]:
    where = f"schemes[{index}]"
    if not isinstance(scheme, Mapping) or scheme.get("scheme") not in SCHEMES:
        raise ValueError(f"{where}: expected an object with 'scheme' one of {list(SCHEMES)}, got {scheme!r}")
    allowed = {"ct": {"lower", "upper", "mean", "std"}, "zscore": {"nonzero"}}.get(scheme["scheme"], set())
    unknown = sorted(set(scheme) - allowed - {"scheme"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} for scheme {scheme['scheme']!r}")
    if scheme["scheme"] == "ct":
        missing = sorted(allowed - set(scheme))
        if missing:
            raise ValueError(f"{where}: the ct scheme needs {missing}")
        numbers = [scheme[key] for key in ("lower", "upper", "mean", "std")]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers):
            raise ValueError(f"{where}: lower, upper, mean and std must be finite numbers, got {numbers}")
        if not scheme["lower"] < scheme["upper"] or not scheme["std"] > 0:
            raise ValueError(f"{where}: needs lower < upper and std > 0, got {numbers}")
    return dict(scheme)


def normalize_channel(channel: torch.Tensor, scheme: Mapping[str, Any]) -> torch.Tensor:
    """One channel normalized by one scheme (float32)."""
    channel = channel.float()
    if scheme["scheme"] == "ct":
        clipped = channel.clamp(scheme["lower"], scheme["upper"])
        return (clipped - scheme["mean"]) / max(scheme["std"], _EPSILON)
    if scheme["scheme"] == "none":
        return channel
    if scheme["scheme"] == "rgb_to_0_1":
        return channel / 255.0
    if scheme["scheme"] == "rescale_to_0_1":
        low, high = channel.min(), channel.max()
        return (channel - low) / (high - low).clamp_min(_EPSILON)
    if scheme.get("nonzero"):
        mask = channel != 0
        if not mask.any():
            return channel
        values = channel[mask]
        out = torch.zeros_like(channel)
        out[mask] = (values - values.mean()) / values.std(unbiased=False).clamp_min(_EPSILON)
        return out
    return (channel - channel.mean()) / channel.std(unbiased=False).clamp_min(_EPSILON)


class ChannelNormalized(MapTransform):
    """Normalize each image channel by its scheme: 'ct' (clip to [lower, upper], then subtract the data set's
    foreground `mean` and divide by its `std`), 'zscore' (the case's own mean and sd; with `nonzero` only over the
    non-zero voxels, which stay 0), 'rescale_to_0_1' (the case's range to [0, 1]), 'rgb_to_0_1' (/ 255) or 'none'.
    One scheme applies to every channel; several must match the channels."""

    def __init__(self, keys: KeysCollection, schemes: Sequence[Mapping[str, Any]], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if isinstance(schemes, (str, Mapping)) or not schemes:
            raise ValueError("schemes: expected a non-empty list of {'scheme': ...} objects, one per channel (or one)")
        self.schemes = [_check_scheme(i, s) for i, s in enumerate(schemes)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            image = torch.as_tensor(out[key])
            if len(self.schemes) not in (1, image.shape[0]):
                raise ValueError(f"{len(self.schemes)} normalization schemes for an image of {image.shape[0]} channels")
            schemes = self.schemes * image.shape[0] if len(self.schemes) == 1 else self.schemes
            normalized = torch.stack([normalize_channel(c, s) for c, s in zip(image, schemes, strict=True)])
            out[key] = _like(image, normalized)
        return out


def _like(image: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`values` carrying `image`'s metadata (a MONAI MetaTensor keeps its affine)."""
    result = image.clone().float() if image.dtype != torch.float32 else image.clone()
    result.copy_(values)
    return result


class CTNormalized(ChannelNormalized):
    """The CT scheme on every channel: clip to [lower, upper] HU, subtract `mean`, divide by `std`."""

    def __init__(
        self,
        keys: KeysCollection,
        lower: float,
        upper: float,
        mean: float,
        std: float,
        allow_missing_keys: bool = False,
    ):
        super().__init__(
            keys, [{"scheme": "ct", "lower": lower, "upper": upper, "mean": mean, "std": std}], allow_missing_keys
        )
