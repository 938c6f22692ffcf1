"""NaN and infinity never reach a checkpoint (issue 11, item 3): NaN voxels are found before training, a diverging
fold stops with its last finite checkpoint as the resume point, and a bad fold never breaks the summary."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from unet3d.errors import DataError, TrainingDiverged
from unet3d.experiment.run import run_experiment
from unet3d.experiment.summary import fold_row, summarize
from unet3d.training.options import RunOptions


def test_a_nan_voxel_is_named_before_any_training(experiment, tiny_data, tmp_path):
    folder, entries = tiny_data
    path = experiment("nan_voxel")
    config = json.loads(path.read_text())
    image = folder / entries[1]["image"][2]
    copy = tmp_path / "t1ce_with_nan.nii.gz"
    source = nib.load(image)
    data = np.asarray(source.dataobj, dtype=np.float32).copy()
    data[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(data, source.affine), copy)
    config["training_filenames"][1]["image"][2] = str(copy)
    path.write_text(json.dumps(config))
    with pytest.raises(
        DataError, match=r"t1ce_with_nan.nii.gz: 1 voxel\(s\) are NaN or infinite \(the first at index \(3, 4, 5\)\)"
    ):
        run_experiment(path, tmp_path)
    assert not (tmp_path / "nan_voxel").exists()


def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(experiment, tmp_path, monkeypatch):
    import unet3d.training.loop as loop

    config = experiment("diverge", n_epochs=3)
    real = loop.train_one_epoch

    def diverge_in_epoch_2(components, device, epoch, training):
        if epoch == 2:
            with torch.no_grad():
                next(components.model.parameters()).fill_(float("nan"))
        return real(components, device, epoch, training)

    monkeypatch.setattr(loop, "train_one_epoch", diverge_in_epoch_2)
    with pytest.raises(
        TrainingDiverged, match=r"epoch 2, iteration 1: the training loss is nan; stopped without saving"
    ):
        run_experiment(config, tmp_path, RunOptions(seed=1))
    work = tmp_path / "diverge"
    saved = torch.load(work / "model.pth", weights_only=True)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())
    assert list(pd.read_csv(work / "training_log.csv")["epoch"]) == [1]
    monkeypatch.setattr(loop, "train_one_epoch", real)
    state = run_experiment(config, tmp_path, RunOptions(seed=1)).state  # resumes from epoch 1 and finishes
    assert state.epoch == 3


def test_nan_weights_after_the_last_step_are_caught_before_saving(experiment, tmp_path, monkeypatch):
    import unet3d.training.loop as loop

    config = experiment("nan_weights", n_epochs=1)
    real = loop.train_one_epoch

    def poison_after(components, device, epoch, training):
        loss = real(components, device, epoch, training)
        with torch.no_grad():
            next(components.model.parameters()).fill_(float("inf"))
        return loss

    monkeypatch.setattr(loop, "train_one_epoch", poison_after)
    with pytest.raises(TrainingDiverged, match=r"epoch 1: val_loss is nan|epoch 1: the weights .* hold NaN"):
        run_experiment(config, tmp_path, RunOptions(seed=1))
    assert not (tmp_path / "nan_weights" / "model.pth").exists()


def test_a_log_of_nan_losses_does_not_break_the_summary_of_the_other_folds(tmp_path):
    for fold, losses in ((1, [float("nan")] * 2), (2, [0.5, 0.4])):
        (tmp_path / f"fold{fold}").mkdir()
        pd.DataFrame(
            {"epoch": [1, 2], "loss": losses, "val_loss": losses, "val_dice": [0.1, 0.2], "epoch_time": [1.0, 1.0]}
        ).to_csv(tmp_path / f"fold{fold}" / "training_log.csv", index=False)
    assert np.isnan(fold_row(1, tmp_path / "fold1")["best_epoch"])
    table, missing = summarize(tmp_path, [1, 2])
    assert missing == [] and list(table["fold"]) == [1, 2, "mean", "sd"]
    assert table.loc[1, "best_epoch"] == 2 and table.loc[2, "val_loss"] == pytest.approx(0.4)
