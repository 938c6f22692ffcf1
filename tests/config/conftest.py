"""Helpers of the config tests: a minimal valid config, and shortcuts to parse one or get its error message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from unet3d.config.load import parse_config
from unet3d.config.schema import Config
from unet3d.errors import ConfigError


def base_config(**extra: Any) -> dict[str, Any]:
    """The three required sections, plus `extra` sections."""
    return {
        "model": {"name": "UNet", "spatial_dims": 3},
        "optimizer": {"name": "Adam", "lr": 1e-3},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        **extra,
    }


def parse(data: dict[str, Any], base: Path = Path("/data")) -> Config:
    """The parsed config (relative paths against `base`)."""
    return parse_config(data, base=base)


def error_of(data: dict[str, Any], base: Path = Path("/data")) -> str:
    """The message of the ConfigError that parsing `data` raises."""
    with pytest.raises(ConfigError) as info:
        parse(data, base)
    return str(info.value)
