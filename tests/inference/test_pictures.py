"""2D pictures end to end with several classes: grayscale PNG images and masks of 0/1/2, a softmax UNet, and
predictions written back as PNG masks of each picture's size with the same label values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from unet3d.experiment.run import run_experiment
from unet3d.training.run import RunOptions


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
