"""The config records (unet3d/config/schema.py): their defaults, and the reference table generated from them."""

from __future__ import annotations

from dataclasses import fields

import pytest

from tests.config.conftest import base_config, parse
from unet3d.config.schema import CrossValidationConfig, DatasetConfig, TrainingConfig, reference_markdown


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


@pytest.mark.parametrize(
    ("section", "record"),
    [("dataset", DatasetConfig), ("training", TrainingConfig), ("cross_validation", CrossValidationConfig)],
)
def test_reference_markdown_has_a_row_per_field(section, record):
    rows = reference_markdown().splitlines()
    for f in fields(record):
        matching = [r for r in rows if r.startswith(f"| `{section}.{f.name}` |")]
        assert len(matching) == 1, f"{section}.{f.name}"
        assert f.metadata["doc"] in matching[0]


def test_reference_markdown_lists_named_sections_and_required_ones():
    rows = reference_markdown().splitlines()
    assert "| `model` | object | required |" in "\n".join(rows)
    assert any(r.startswith("| `scheduler` | object | none |") for r in rows)
    assert any(r.startswith("| `training.n_epochs` | an integer | `1000` |") for r in rows)
