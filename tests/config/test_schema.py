"""The config records (unet3d/config/schema.py): their defaults, and the reference table generated from them."""

from __future__ import annotations

from tests.config.conftest import base_config, parse


def test_minimal_config_gets_defaults():
    config = parse(base_config())
    assert config.model.name == "UNet"
    assert config.model.kwargs == {"spatial_dims": 3}
    assert config.optimizer.kwargs == {"lr": 1e-3}
    assert config.training.n_epochs == 1000
    assert config.dataset.name == "SegmentationDataset"
    assert config.cross_validation is None
    assert config.scheduler is None
    assert config.groups == {}
