"""Reading a config section (unet3d/config/fields.py): keys, types, bounds and choices, named sections, and every
problem of a config reported at once, each with its JSON path."""

from __future__ import annotations

import json

import pytest

from tests.config.conftest import base_config, error_of, parse


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("training", "n_epoch", "n_epochs"),
        ("dataset", "desired_shap", "desired_shape"),
        ("training", "batchsize", "batch_size"),
        ("cross_validation", "n_fold", "n_folds"),
    ],
)
def test_unknown_key_in_section_suggests_closest(section, key, expected):
    message = error_of(base_config(**{section: {key: 3}}))
    assert message.startswith(f"{section}.{key}: unknown key")
    assert f"did you mean '{expected}'" in message


@pytest.mark.parametrize(
    ("section", "key", "value", "prefix"),
    [
        ("training", "n_epochs", "10", "training.n_epochs: expected an integer"),
        ("training", "n_epochs", 10.0, "training.n_epochs: expected an integer"),
        ("training", "batch_size", True, "training.batch_size: expected an integer"),
        ("dataset", "desired_shape", [32, "a"], "dataset.desired_shape: expected a list"),
        ("dataset", "setup_label_hierarchy", "yes", "dataset.setup_label_hierarchy: expected true/false"),
        ("dataset", "cache", "ram", "dataset.cache: expected 'auto'"),
        ("training", "amp", "fp8", "training.amp: expected true/false or 'fp16' or 'bf16'"),
        ("dataset", "normalization_kwargs", [1], "dataset.normalization_kwargs: expected an object"),
    ],
)
def test_wrong_type_message_starts_with_json_path(section, key, value, prefix):
    message = error_of(base_config(**{section: {key: value}}))
    assert message.startswith(prefix), message
    assert repr(value) in message


def test_section_that_is_not_an_object():
    assert error_of(base_config(training=[1])).startswith("training: expected an object")


@pytest.mark.parametrize(
    ("section", "key", "value", "prefix"),
    [
        ("training", "n_epochs", 0, "training.n_epochs: must be at least 1"),
        ("training", "batch_size", -2, "training.batch_size: must be at least 1"),
        ("dataset", "foreground_percentile", 1.5, "dataset.foreground_percentile: must be at most 1"),
        ("dataset", "foreground_percentile", -0.1, "dataset.foreground_percentile: must be at least 0"),
        ("dataset", "desired_shape", [32, 0, 32], "dataset.desired_shape: must be at least 1"),
        ("cross_validation", "n_folds", 1, "cross_validation.n_folds: must be at least 2"),
    ],
)
def test_impossible_values(section, key, value, prefix):
    assert error_of(base_config(**{section: {key: value}})).startswith(prefix)


def test_boundary_values_accepted():
    config = parse(
        base_config(
            training={"n_epochs": 1, "test_input": 0},
            dataset={"foreground_percentile": 1, "desired_shape": [1, 1, 1]},
        )
    )
    assert config.training.n_epochs == 1
    assert config.training.test_input == 0
    assert config.dataset.foreground_percentile == 1
    assert config.dataset.desired_shape == [1, 1, 1]


def test_dataset_name_must_be_a_choice():
    message = error_of(base_config(dataset={"name": "SegmentationDatasetPersistant"}))
    assert message.startswith("dataset.name: must be one of")
    assert "'SegmentationDataset'" in message
    assert "did you mean 'SegmentationDatasetPersistent'" in message
    config = parse(base_config(dataset={"name": "SegmentationDatasetPersistent"}))
    assert config.dataset.name == "SegmentationDatasetPersistent"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"lr": 1}, "model: missing 'name'"),
        ("UNet", "model: expected an object with a 'name'"),
        ({"name": 3}, "model.name: expected a string"),
    ],
)
def test_named_section_shape(value, expected):
    data = base_config()
    data["model"] = value
    assert error_of(data).startswith(expected)


def test_augmentations_become_named_specs():
    config = parse(base_config(dataset={"spatial_augmentations": [{"name": "RandFlipd", "prob": 0.5}]}))
    (spec,) = config.dataset.spatial_augmentations
    assert spec.name == "RandFlipd"
    assert spec.kwargs == {"prob": 0.5}
    message = error_of(base_config(dataset={"spatial_augmentations": [{"prob": 0.5}]}))
    assert message.startswith("dataset.spatial_augmentations[0]: missing 'name'")


def test_every_problem_of_a_config_is_reported_at_once_with_its_json_path(tmp_path):
    from unet3d.config.load import load_config as load
    from unet3d.errors import ConfigError as Error

    config = {
        "model": {"name": "UNet"},
        "loss": {"name": "DiceLoss"},
        "optimizer": {"name": "Adam", "lr": float("inf")},
        "dataset": {"desired_shape": "32", "foreground_percentile": 2.0},
        "training": {"n_epoch": 5, "batch_size": 0},
        "cluster": {"partition": "gpu\nid"},
        "augmentation": {},
    }
    path = tmp_path / "many.json"
    path.write_text(json.dumps(config))
    with pytest.raises(Error) as raised:
        load(path)
    lines = str(raised.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "optimizer.lr",
        "augmentation",
        "dataset.desired_shape",
        "dataset.foreground_percentile",
        "training.n_epoch",
        "training.batch_size",
        "cluster.partition",
    ]
    assert "did you mean 'n_epochs'" in lines[4]
