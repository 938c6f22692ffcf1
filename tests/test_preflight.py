"""Every check before any compute (unet3d/preflight.py): patch sizes and loss warnings of the config, the data
against the config (check_data), and a missing optional package."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHAPE, SPACING, affine_of, save
from unet3d.config.load import parse_config
from unet3d.data.synthetic import write_case
from unet3d.errors import ConfigError, DataError
from unet3d.experiment.run import run_experiment
from unet3d.preflight import check_data, check_experiment
from unet3d.training.options import RunOptions
from unet3d.training.tensorboard import TENSORBOARD_DIRNAME


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


def test_every_problem_of_a_config_is_reported_at_once_each_naming_its_key(tmp_path: Path):
    bad = config(tmp_path, inference={"name": "SlidingWindowInferer", "roi_size": [30, 32, 32]})
    bad.optimizer.name = "Adamm"
    bad.dataset.spacing = [1.0, 1.0]
    bad.dataset.random_crop = True
    bad.training.iterations_per_epoch, bad.training.samples_per_epoch = 10, 20
    bad.model.kwargs["out_channels"] = 5
    with pytest.raises(ConfigError) as raised:
        check_experiment(bad)
    lines = str(raised.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "optimizer.name",
        "dataset.spacing",
        "dataset.random_crop",
        "inference.roi_size",
        "training.iterations_per_epoch",
        "model.out_channels",
    ], lines
    assert len(set(lines)) == len(lines)


def test_dice_ce_with_sigmoid_on_several_channels_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="unet3d"):
        check_experiment(config(tmp_path, loss={"name": "DiceCELoss", "sigmoid": True}))
    assert "DiceCELoss with sigmoid on 2 channels computes its cross-entropy as a softmax" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unet3d"):
        check_experiment(config(tmp_path, loss={"name": "DiceFocalLoss", "sigmoid": True, "gamma": 0.0}))
    assert "DiceCELoss" not in caplog.text


def test_a_softmax_output_bias_prior_must_leave_probability_to_the_background(tmp_path: Path):
    softmax = config(tmp_path, loss={"name": "DiceCELoss", "softmax": True})  # 2 classes + background: 3 outputs
    softmax.model.kwargs["out_channels"] = 3
    softmax.training.output_bias_prior = 0.5
    with pytest.raises(ConfigError, match=r"^training\.output_bias_prior: 2 classes at 0\.5 each leave no probability"):
        check_experiment(softmax)
    softmax.training.output_bias_prior = 0.3
    check_experiment(softmax)
    sigmoid = config(tmp_path)  # independent regions: any prior up to 0.5 is fine
    sigmoid.training.output_bias_prior = 0.5
    check_experiment(sigmoid)


def config_for(directory: Path, entries: list, in_channels: int = 4, labels=(2, 1, 4), **extra):
    data = {
        "model": {
            "name": "UNet",
            "spatial_dims": 3,
            "in_channels": in_channels,
            "out_channels": len(labels),
            "channels": [4, 8],
            "strides": [2],
        },
        "optimizer": {"name": "Adam", "lr": 1e-3},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        "dataset": {"labels": list(labels)},
        "training_filenames": entries,
        **extra,
    }
    return parse_config(data, base=directory)


def write_entries(directory: Path, n: int, prefix: str = "case", **kwargs) -> list[dict]:
    return [
        write_case(directory, f"{prefix}_{i}", SHAPE, SPACING, np.random.default_rng(i), orientation="LPS", **kwargs)
        for i in range(n)
    ]


def test_check_data_passes_on_good_data(tmp_path):
    config = config_for(tmp_path, write_entries(tmp_path, 2))
    infos = check_data(config, n_threads=2)
    assert list(infos) == ["training"]
    assert [info.case_id for info in infos["training"]] == ["case_0_flair", "case_1_flair"]  # from file names
    assert all(info.n_channels == 4 and info.shape == SHAPE for info in infos["training"])


def test_check_data_in_channels_mismatch(tmp_path):
    config = config_for(tmp_path, write_entries(tmp_path, 2), in_channels=3)
    with pytest.raises(ConfigError) as info:
        check_data(config)
    message = str(info.value)
    assert "model.in_channels" in message
    assert "3" in message and "4" in message


def test_check_data_in_channels_counts_4d_images(tmp_path):
    entries = write_entries(tmp_path, 1)
    first = tmp_path / entries[0]["image"][0]
    save(first, np.random.default_rng(0).random((*SHAPE, 2)).astype(np.float32), affine_of(first))
    entries[0]["image"] = entries[0]["image"][:1]  # one file holding two channels
    assert check_data(config_for(tmp_path, entries, in_channels=2))["training"][0].n_channels == 2
    with pytest.raises(ConfigError, match=r"model\.in_channels"):
        check_data(config_for(tmp_path, entries, in_channels=4))


def test_check_data_undeclared_labels(tmp_path):
    entries = write_entries(tmp_path, 1)
    config = config_for(tmp_path, entries, labels=[1])
    with pytest.raises(DataError) as info:
        check_data(config)
    message = str(info.value)
    assert message.startswith("training_filenames: ")
    assert str(tmp_path / entries[0]["label"]) in message
    assert "[2, 4]" in message
    assert "[0, 1]" in message


def test_check_data_requires_labels_in_validation_but_not_test(tmp_path):
    labelled = write_entries(tmp_path, 1)
    unlabelled = write_entries(tmp_path, 1, prefix="other", with_label=False)
    infos = check_data(config_for(tmp_path, labelled, test_filenames=unlabelled))
    assert [info.n_channels for info in infos["test"]] == [4]
    with pytest.raises(DataError) as info:
        check_data(config_for(tmp_path, labelled, validation_filenames=unlabelled))
    message = str(info.value)
    assert message.startswith("validation_filenames: ")
    assert "other_0_flair" in message


def test_a_missing_tensorboard_package_stops_the_run_before_any_work(experiment, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(ConfigError) as error:
        run_experiment(experiment("tb_missing", tensorboard=True), tmp_path, RunOptions(seed=3))
    message = str(error.value)
    assert message == "training.tensorboard: true needs the tensorboard package; pip install 'unet3d[tensorboard]'"
    assert "\n" not in message
    assert not (tmp_path / "tb_missing").exists()
    # Without the key the same environment trains.
    run_experiment(experiment("tb_off", n_epochs=1), tmp_path, RunOptions(seed=3))
    assert not (tmp_path / "tb_off" / TENSORBOARD_DIRNAME).exists()
