"""Build the inferer that turns a volume into network outputs: the config's `inference` section, or by default a
Gaussian-weighted sliding window of `desired_shape` (one window when volumes are resized to that shape)."""

from __future__ import annotations

import torch
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer

from unet3d.config.schema import Config
from unet3d.errors import ConfigError
from unet3d.registry import lookup

DEFAULT_OVERLAP = 0.5


def build_inferer(config: Config, sw_batch_size: int | None = None, device: torch.device | None = None) -> Inferer:
    """The configured inferer; `sw_batch_size`/`device` (stitching device) override a sliding window's settings."""
    if config.inference is not None:
        cls = lookup("inferer", config.inference.name, "inference.name")
        kwargs = dict(config.inference.kwargs)
        if issubclass(cls, SlidingWindowInferer):
            if sw_batch_size is not None:
                kwargs["sw_batch_size"] = sw_batch_size
            if device is not None:
                kwargs["device"] = device
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"inference: {config.inference.name}: {error}") from None
    if not config.dataset.desired_shape:
        return SimpleInferer()
    return SlidingWindowInferer(
        roi_size=config.dataset.desired_shape,
        overlap=DEFAULT_OVERLAP,
        mode="gaussian",
        sw_batch_size=sw_batch_size or 1,
        device=device,
    )
