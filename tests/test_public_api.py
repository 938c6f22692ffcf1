"""The public API in `unet3d/__init__.py`: the README's Python example uses it, and importing it stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import unet3d


def test_every_public_name_resolves_to_the_library_function():
    from unet3d.evaluation.evaluate import evaluate
    from unet3d.experiment.run import run_experiment
    from unet3d.prediction import predict
    from unet3d.training.run import RunOptions

    assert unet3d.run_experiment is run_experiment and unet3d.predict is predict and unet3d.evaluate is evaluate
    assert unet3d.RunOptions is RunOptions
    assert all(hasattr(unet3d, name) for name in unet3d.__all__)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = unet3d.no_such_name


def test_importing_the_package_does_not_load_torch():
    code = "import sys, unet3d; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_evaluate_scores_label_maps_against_a_ground_truth_folder(tmp_path, tiny_data):
    import shutil

    folder, entries = tiny_data
    predictions, truth = tmp_path / "predictions", tmp_path / "truth"
    predictions.mkdir()
    truth.mkdir()
    for entry in entries[:2]:
        label = folder / entry["label"]
        shutil.copy(label, predictions / label.name.replace("_seg", ""))
        shutil.copy(label, truth / label.name.replace("_seg", ""))
    config = tmp_path / "labels.json"
    config.write_text(
        json.dumps(
            {
                "model": {"name": "UNet"},
                "optimizer": {"name": "Adam"},
                "loss": {"name": "DiceLoss", "sigmoid": True},
                "dataset": {"labels": [2, 1, 4], "setup_label_hierarchy": True},
            }
        )
    )
    table = unet3d.evaluate(predictions, config, ground_truth=truth)
    assert list(table["case_id"]) == ["case_000", "case_001"]
    assert (table[["dice_2+1+4", "dice_1+4", "dice_4"]] == 1.0).all().all()
    assert (predictions / "metrics.csv").exists()
