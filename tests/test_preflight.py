"""Config checks of `unet3d.preflight.check_experiment` that need no data: patch sizes and loss warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from unet3d.config.load import parse_config
from unet3d.errors import ConfigError
from unet3d.preflight import check_experiment


def config(tmp_path: Path, loss: dict | None = None, inference: dict | None = None, augmentations=()):
    data = {
        "model": {
            "name": "UNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 2,
            "channels": [4, 8, 16],
            "strides": [2, 2],
        },
        "optimizer": {"name": "Adam"},
        "loss": loss or {"name": "DiceLoss", "sigmoid": True},
        "dataset": {"labels": [1, 2], "training": {"spatial_augmentations": list(augmentations)}},
        "training_filenames": [{"image": ["a.nii.gz"], "label": "a_seg.nii.gz"}],
    }
    if inference:
        data["inference"] = inference
    return parse_config(data, base=tmp_path)


def test_sliding_window_size_must_fit_the_downsampling(tmp_path: Path):
    check_experiment(config(tmp_path, inference={"name": "SlidingWindowInferer", "roi_size": [32, 32, 32]}))
    bad = config(tmp_path, inference={"name": "SlidingWindowInferer", "roi_size": [30, 32, 32]})
    with pytest.raises(ConfigError, match=r"^inference.roi_size: \[30, 32, 32\] is not divisible by .* \[4, 4, 4\]"):
        check_experiment(bad)


def test_training_crop_size_must_fit_the_downsampling(tmp_path: Path):
    crop = {"name": "RandCropByPosNegLabeld", "label_key": "label", "spatial_size": [24, 24, 18], "pos": 1, "neg": 1}
    with pytest.raises(ConfigError, match=r"^dataset.training.spatial_augmentations\[0\].spatial_size: \[24, 24, 18\]"):
        check_experiment(config(tmp_path, augmentations=[crop]))
    crop["spatial_size"] = [24, 24, 16]
    check_experiment(config(tmp_path, augmentations=[crop]))


def test_dice_ce_with_sigmoid_on_several_channels_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="unet3d"):
        check_experiment(config(tmp_path, loss={"name": "DiceCELoss", "sigmoid": True}))
    assert "DiceCELoss with sigmoid on 2 channels computes its cross-entropy as a softmax" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unet3d"):
        check_experiment(config(tmp_path, loss={"name": "DiceFocalLoss", "sigmoid": True, "gamma": 0.0}))
    assert "DiceCELoss" not in caplog.text


def test_a_vnet_needs_inputs_in_multiples_of_16(tmp_path: Path):
    from unet3d.config.schema import NamedSpec
    from unet3d.models import check_input_shape

    check_input_shape(NamedSpec("VNet", {"spatial_dims": 3}), [32, 32, 48])
    with pytest.raises(ConfigError, match=r"\[32, 32, 24\] is not divisible by .* \[16, 16, 16\] \(fixed for VNet\)"):
        check_input_shape(NamedSpec("VNet", {"spatial_dims": 3}), [32, 32, 24])
