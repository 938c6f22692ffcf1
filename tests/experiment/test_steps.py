"""One work dir's steps (unet3d/experiment/steps.py): each model predicts its groups in their original space, once,
and the self-check compares the written label maps with the training log."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.experiment.conftest import fake_work_dir
from unet3d.experiment.run import run_experiment
from unet3d.experiment.steps import DiceGap, dice_gaps
from unet3d.training.options import RunOptions
from unet3d.workdir import MANIFEST


def test_every_fold_predicts_its_held_out_and_extra_cases_in_their_original_space(trained_cv):
    _, work, _ = trained_cv
    for k in (1, 2):
        fold = json.loads((work / f"fold{k}.json").read_text())
        for group in ("validation", "test"):
            for case in fold[f"{group}_filenames"]:
                prediction = nib.load(work / f"fold{k}" / group / f"{case['case_id']}.nii.gz")
                image = nib.load(case["image"][0])
                assert prediction.shape == image.shape
                np.testing.assert_allclose(prediction.affine, image.affine, atol=1e-4)
                assert set(np.unique(np.asanyarray(prediction.dataobj))) <= {0, 1, 2, 4}
        metrics = pd.read_csv(work / f"fold{k}" / "validation" / "metrics.csv")
        assert list(metrics["case_id"])[-4:] == ["mean", "median", "sd", "n_nan"]
        assert {"dice_2+1+4", "dice_1+4", "dice_4", "hd95_2+1+4"} <= set(metrics.columns)
        assert not (work / f"fold{k}" / "test" / "metrics.csv").exists(), "unlabelled cases get no metrics"
    summary = pd.read_csv(work / "cv_summary.csv")
    assert {"mean_dice", "dice_2+1+4", "hd95_4"} <= set(summary.columns)
    fold1 = pd.read_csv(work / "fold1/validation/metrics.csv").set_index("case_id")
    assert float(summary.loc[0, "dice_2+1+4"]) == pytest.approx(float(fold1.loc["mean", "dice_2+1+4"]), abs=1e-4)


def test_predictions_are_not_redone_when_up_to_date(trained_cv):
    config_path, work, _ = trained_cv
    stamp = (work / "fold1/predictions.json").stat().st_mtime_ns
    result = run_experiment(config_path, work.parent, RunOptions(seed=1)).cross_validation
    assert result.skipped == [1, 2]
    assert (work / "fold1/predictions.json").stat().st_mtime_ns == stamp


def test_a_full_volume_dice_far_below_the_log_is_named_with_both_numbers(tmp_path):
    work = fake_work_dir(tmp_path / "fold1", full_whole=0.34)
    assert dice_gaps(work) == [DiceGap("2+1+4", 0.91, 0.34)]  # compared at the best model's epoch (2), not the last
    assert str(dice_gaps(work)[0]) == "2+1+4: full-volume Dice 0.340 vs 0.910 in the training log"


@pytest.mark.parametrize("full_whole", [0.87, 0.95])
def test_gaps_within_the_tolerance_or_in_favour_of_the_label_maps_pass(tmp_path, full_whole):
    assert dice_gaps(fake_work_dir(tmp_path / "fold1", full_whole=full_whole)) == []


def test_nothing_to_check_before_predictions(tmp_path):
    work = fake_work_dir(tmp_path / "fold1", full_whole=0.1)
    (work / MANIFEST).unlink()
    assert dice_gaps(work) == []


def test_a_work_dir_whose_label_maps_would_replace_the_data_is_refused_before_training(experiment, tiny_data):
    import shutil

    from unet3d.errors import ConfigError

    folder, _ = tiny_data
    target = folder / "inside" / "validation" / "mine.nii.gz"

    def label_inside_the_work_dir(config):
        case = config["validation_filenames"][0]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / case["label"], target)
        case.update(label=str(target), case_id="mine")

    config = experiment("inside", mutate=label_inside_the_work_dir)
    before = target.read_bytes()
    message = rf"refusing to write {target} \(the label map of case 'mine'\): it is the label of case 'mine'"
    with pytest.raises(ConfigError, match=message):
        run_experiment(config)
    assert target.read_bytes() == before and not (folder / "inside" / "model.pth").exists()
