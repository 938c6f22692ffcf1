"""Do the written label maps score what the network scores? A BraTS-style cross-validation on harder synthetic data.

The experiment of issue 10, in 3DUnetCNN's brats2020 config schema: 12 cases with nested labels 2 ⊃ 1 ⊃ 4, four
modalities with non-zero backgrounds at arbitrary levels, arbitrary intensity scales and offsets, flipped and
oblique axes and 0.8 x 0.8 x 5 mm voxels; DynUNet 8-16-32-64, Adam 3e-3, sigmoid DiceLoss, `setup_label_hierarchy`,
32³, 15 epochs, 3 folds. For every fold and region it prints three Dice values of the held-out cases:

- `log`: the training log's `val_dice_<region>` at the best epoch (preprocessed space);
- `channel`: that region's output channel thresholded alone, in each case's original space (what the network says);
- `label map`: the region as read back from the written label maps (what a user gets).

    python benchmarks/label_maps.py [--seed 1] [--epochs 15] [--work_dir DIR]

Writes `benchmarks/results/label_maps_seed<seed>.json` with the machine, the settings and every number.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from unet3d.config.load import load_config
from unet3d.data.synthetic import write_dataset
from unet3d.evaluation.metrics import read_labels
from unet3d.experiment.run import run_experiment
from unet3d.inference.loop import iter_predictions
from unet3d.inference.predictor import make_predictor
from unet3d.training.history import LOG_FILENAME, read_log
from unet3d.training.options import RunOptions
from unet3d.workdir import RunDir

HERE = Path(__file__).resolve().parent
N_CASES = 12


def experiment_config(cases: list[dict], epochs: int, seed: int | None) -> dict:
    """The issue's experiment, in the brats2020 schema."""
    config = {
        "model": {
            "name": "DynUNet",
            "in_channels": 4,
            "out_channels": 3,
            "spatial_dims": 3,
            "deep_supervision": False,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
            "filters": [8, 16, 32, 64],
            "kernel_size": [[3, 3, 3]] * 4,
            "upsample_kernel_size": [[2, 2, 2]] * 3,
        },
        "optimizer": {"name": "Adam", "lr": 0.003},
        "loss": {"name": "DiceLoss", "include_background": True, "sigmoid": True},
        "cross_validation": {"n_folds": 3, "random_seed": 25},
        "scheduler": {"name": "ReduceLROnPlateau", "patience": 10, "factor": 0.5, "min_lr": 1e-08},
        "dataset": {
            "name": "SegmentationDataset",
            "desired_shape": [32, 32, 32],
            "labels": [2, 1, 4],
            "setup_label_hierarchy": True,
            "normalization": "NormalizeIntensityD",
            "normalization_kwargs": {"channel_wise": True, "nonzero": False},
            "resample": True,
            "crop_foreground": True,
        },
        "training": {
            "batch_size": 2,
            "validation_batch_size": 2,
            "amp": False,
            "early_stopping_patience": None,
            "n_epochs": epochs,
            "save_best": True,
        },
        "training_filenames": cases,
    }
    if seed is not None:
        config["training"]["seed"] = seed
    return config


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(predicted.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & truth).sum()) / total


def fold_rows(fold: int, fold_dir: Path) -> list[dict]:
    """Per region of one fold: the log's Dice at the best epoch, the channel alone and the label map, held-out."""
    config = load_config(fold_dir.parent / f"fold{fold}.json")
    groups, names = config.regions, config.region_names
    model = RunDir(fold_dir).model()
    epoch = int(torch.load(model, map_location="cpu", weights_only=True)["epoch"])
    log = read_log(fold_dir / LOG_FILENAME).set_index("epoch")
    metrics = pd.read_csv(fold_dir / "validation" / "metrics.csv").set_index("case_id")
    predictor = make_predictor(config, [model], torch.device("cpu"))
    channel = {name: [] for name in names}
    for prediction in iter_predictions(predictor, config, config.groups["validation"]):
        truth, _ = read_labels(prediction.case.label)
        for index, (name, group) in enumerate(zip(names, groups, strict=True)):
            alone = prediction.probabilities[index].numpy() > 0.5
            channel[name].append(dice(alone, np.isin(truth, group)))
    return [
        {
            "fold": fold,
            "region": name,
            "best_epoch": epoch,
            "log": float(log.loc[epoch, f"val_dice_{name}"]),
            "channel": float(np.mean(channel[name])),
            "label_map": float(metrics.loc["mean", f"dice_{name}"]),
        }
        for name in names
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="training.seed (default: none, as in the issue)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/unet3d_label_maps"))
    parser.add_argument("--data_seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(2)
    data = args.work_dir / "data"
    cases = write_dataset(
        data,
        N_CASES,
        seed=args.data_seed,
        shape_range=(24, 32),
        spacing=(0.8, 0.8, 5.0),
        background_range=(-1000.0, 500.0),
        oblique_degrees=12.0,
    )
    for case in cases:
        case["image"] = [str(data / path) for path in case["image"]]
        case["label"] = str(data / case["label"])
    name = f"label_maps_seed{args.seed}"
    config_path = args.work_dir / f"{name}.json"
    config_path.write_text(json.dumps(experiment_config(cases, args.epochs, args.seed), indent=2))
    started = time.perf_counter()
    result = run_experiment(config_path, options=RunOptions(n_workers=0))
    wall = time.perf_counter() - started
    assert result.cross_validation is not None and not result.cross_validation.failed, result.cross_validation
    rows = [row for fold in (1, 2, 3) for row in fold_rows(fold, result.work_dir / f"fold{fold}")]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nwall {wall:.0f} s; fold means per region:")
    print(table.groupby("region", sort=False)[["log", "channel", "label_map"]].mean().round(3).to_string())
    output = HERE / "results" / f"{name}.json"
    output.write_text(
        json.dumps(
            {
                "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
                "settings": vars(args) | {"work_dir": str(args.work_dir)},
                "wall_s": wall,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
