"""The README's config reference (unet3d/config/reference.py): a row per key, generated from the schema."""

from dataclasses import fields

import pytest

from unet3d.config.reference import reference_markdown
from unet3d.config.schema import CrossValidationConfig, DatasetConfig, TrainingConfig


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
