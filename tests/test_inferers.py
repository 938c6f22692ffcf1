"""The inferer from the config (unet3d/inferers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from unet3d.config.load import parse_config
from unet3d.config.schema import Config
from unet3d.errors import ConfigError
from unet3d.inferers import build_inferer


def parsed(**sections: Any) -> Config:
    """A config of the three required sections plus `sections`."""
    required = {"model": {"name": "UNet"}, "optimizer": {"name": "Adam"}, "loss": {"name": "DiceLoss", "sigmoid": True}}
    return parse_config({**required, **sections}, base=Path("/data"))


def test_the_default_is_a_gaussian_sliding_window_of_the_desired_shape():
    config = parsed(dataset={"desired_shape": [16, 16, 8]})
    inferer = build_inferer(config)
    assert isinstance(inferer, SlidingWindowInferer)
    assert list(inferer.roi_size) == [16, 16, 8] and inferer.overlap == 0.5 and inferer.mode == "gaussian"
    assert inferer.sw_batch_size == 1 and inferer.device is None
    assert build_inferer(config, sw_batch_size=4).sw_batch_size == 4
    assert type(build_inferer(parsed())) is SimpleInferer  # no desired shape: whole volumes at their own size


def test_a_configured_sliding_window_takes_the_batch_and_stitching_device_given_to_it():
    window = {"name": "SlidingWindowInferer", "roi_size": [8, 8, 8], "sw_batch_size": 2}
    inferer = build_inferer(parsed(inference=window), sw_batch_size=3, device=torch.device("cpu"))
    assert list(inferer.roi_size) == [8, 8, 8] and inferer.sw_batch_size == 3 and inferer.device == torch.device("cpu")
    assert build_inferer(parsed(inference=window)).sw_batch_size == 2
    assert type(build_inferer(parsed(inference={"name": "SimpleInferer"}), sw_batch_size=3)) is SimpleInferer


def test_arguments_the_inferer_refuses_are_config_errors_naming_the_section():
    with pytest.raises(ConfigError, match=r"^inference: SlidingWindowInferer: .*missing 1 required .*'roi_size'"):
        build_inferer(parsed(inference={"name": "SlidingWindowInferer"}))
    with pytest.raises(ConfigError, match=r"^inference: SlidingWindowInferer: 'median' is not a valid BlendMode"):
        build_inferer(parsed(inference={"name": "SlidingWindowInferer", "roi_size": [8, 8, 8], "mode": "median"}))
