"""The library entry point behind unet3d-train (unet3d/experiment/run.py): machine configs, the options that need a
cross-validation, and 2D pictures end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from unet3d.errors import ConfigError
from unet3d.experiment.run import read_machine_config, run_experiment
from unet3d.training.options import RunOptions


def write_pictures(folder: Path, n: int) -> list[dict]:
    """Pictures of 40x24 pixels (columns x rows) with a bright square (class 1) and a dark disc (class 2)."""
    rng = np.random.default_rng(0)
    cases = []
    rows, columns = np.mgrid[:24, :40]
    for i in range(n):
        mask = np.zeros((24, 40), np.uint8)
        r, c = rng.integers(2, 12), rng.integers(2, 18)
        mask[r : r + 8, c : c + 8] = 1
        mask[(rows - rng.integers(6, 18)) ** 2 + (columns - rng.integers(28, 34)) ** 2 < 16] = 2
        image = np.choose(mask, [100, 220, 20]) + rng.normal(0, 10, mask.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"pic_{i}.png")
        Image.fromarray(mask).save(folder / f"pic_{i}_mask.png")
        cases.append({"case_id": f"pic_{i}", "image": [f"pic_{i}.png"], "label": f"pic_{i}_mask.png"})
    return cases


def test_multi_class_pictures_train_and_come_back_as_png_masks(tmp_path: Path):
    cases = write_pictures(tmp_path, 6)
    config = {
        "model": {
            "name": "UNet",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 3,
            "channels": [4, 8],
            "strides": [2],
        },
        "loss": {"name": "DiceCELoss", "softmax": True},
        "optimizer": {"name": "Adam", "lr": 0.01},
        "dataset": {"labels": [1, 2], "desired_shape": [32, 16], "resample": True},
        "training": {"n_epochs": 2, "batch_size": 2, "progress_plot": False, "test_input": 0},
        "training_filenames": cases[:4],
        "validation_filenames": cases[4:],
    }
    (tmp_path / "pictures.json").write_text(json.dumps(config))
    result = run_experiment(tmp_path / "pictures.json", options=RunOptions(seed=1))
    for case in cases[4:]:
        predicted = np.asarray(Image.open(result.work_dir / "validation" / f"{case['case_id']}.png"))
        assert predicted.shape == (24, 40)  # the picture's rows x columns, not the network's 32 x 16
        assert set(np.unique(predicted)) <= {0, 1, 2}
    metrics = pd.read_csv(result.work_dir / "validation" / "metrics.csv").set_index("case_id")
    assert {"dice_1", "dice_2", "hd95_1", "hd95_2"} <= set(metrics.columns)
    assert metrics.loc["mean", ["dice_1", "dice_2"]].between(0, 1).all()


def test_a_machine_config_is_read_with_its_keys_and_types_checked(tmp_path):
    path = tmp_path / "machine.json"
    good = {"n_workers": 4, "n_gpus": 0, "pin_memory": False, "use_multiprocessing": True}
    path.write_text(json.dumps(good))
    assert dataclasses.asdict(read_machine_config(path)) == good
    for data, message in [
        ({"n_gpu": 2}, f"{path}: n_gpu: unknown key; did you mean 'n_gpus'?"),
        ({"n_workers": -1}, f"{path}: n_workers: must be at least 0, got -1"),
        ({"n_gpus": True}, f"{path}: n_gpus: expected an integer or null, got True"),
        ({"pin_memory": 1}, f"{path}: pin_memory: expected true/false or null, got 1"),
    ]:
        path.write_text(json.dumps(data))
        with pytest.raises(ConfigError) as raised:
            read_machine_config(path)
        assert str(raised.value) == message
    path.write_text(json.dumps({"n_gpu": 2, "pin_memory": 1}))
    with pytest.raises(ConfigError) as raised:
        read_machine_config(path)
    assert "n_gpu: unknown key" in str(raised.value) and "pin_memory: expected true/false" in str(raised.value)


@pytest.mark.parametrize("option", [{"folds": [1]}, {"setup_crossval_only": True}, {"summary_only": True}])
def test_cross_validation_options_without_a_cross_validation_section_are_refused(experiment, tmp_path, option):
    with pytest.raises(ConfigError) as raised:
        run_experiment(experiment("single"), tmp_path, RunOptions(seed=1), **option)
    assert str(raised.value) == (
        "cross_validation: --fold, --setup_crossval_only and --summary need a cross_validation section"
    )
    assert not (tmp_path / "single" / "model.pth").exists()
