"""Helpers of the experiment tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from unet3d.workdir import MANIFEST


def fake_work_dir(folder: Path, full_whole: float, best_epoch: int = 2) -> Path:
    """A finished work dir: a 3-epoch log, the manifest of the best model's predictions, and validation metrics."""
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [0.9, 0.5, 0.6],
            "val_loss": [0.9, 0.4, 0.5],
            "val_dice": [0.1, 0.8, 0.7],
            "val_dice_2+1+4": [0.2, 0.91, 0.95],
            "val_dice_1+4": [0.1, 0.70, 0.60],
            "epoch_time": [1.0, 1.0, 1.0],
        }
    ).to_csv(folder / "training_log.csv", index=False)
    (folder / MANIFEST).write_text(
        json.dumps({"model": "model_best.pth", "epoch": best_epoch, "groups": ["validation"]})
    )
    (folder / "validation").mkdir()
    pd.DataFrame(
        {
            "case_id": ["a", "b", "mean", "median", "sd", "n_nan"],
            "dice_2+1+4": [full_whole] * 5 + [0],
            "dice_1+4": [0.68] * 5 + [0],
        }
    ).to_csv(folder / "validation" / "metrics.csv", index=False)
    return folder
