"""The self-check after each model: written label maps must score about what the network scored in the log."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from unet3d.experiment.steps import MANIFEST, DiceGap, dice_gaps
from unet3d.experiment.summary import fold_row, summarize, write_summary


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


def test_cv_summary_marks_the_fold_with_a_gap(tmp_path):
    fake_work_dir(tmp_path / "fold1", full_whole=0.34)
    fake_work_dir(tmp_path / "fold2", full_whole=0.90)
    assert "2+1+4: full-volume Dice 0.340" in fold_row(1, tmp_path / "fold1")["self_check"]
    table, missing = summarize(tmp_path, [1, 2])
    assert missing == []
    written = pd.read_csv(write_summary(tmp_path, table), keep_default_na=False).set_index("fold")
    assert written.loc["1", "self_check"] == "2+1+4: full-volume Dice 0.340 vs 0.910 in the training log"
    assert written.loc["2", "self_check"] == "" and written.loc["mean", "self_check"] == ""
    assert float(written.loc["mean", "dice_2+1+4"]) == pytest.approx((0.34 + 0.90) / 2)


def test_terminal_table_lists_the_notes_below_the_numbers(tmp_path):
    from unet3d.experiment.summary import format_table

    fake_work_dir(tmp_path / "fold1", full_whole=0.34)
    fake_work_dir(tmp_path / "fold2", full_whole=0.90)
    lines = format_table(summarize(tmp_path, [1, 2])[0]).splitlines()
    assert "self_check" not in lines[0]
    assert lines[-1] == "fold 1: self-check: 2+1+4: full-volume Dice 0.340 vs 0.910 in the training log"
