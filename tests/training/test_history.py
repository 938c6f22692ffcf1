"""The training log (unet3d/training/history.py): written from the checkpoint's rows, so a crash never leaves it
ahead of or behind the weights."""

from __future__ import annotations

import pandas as pd
import pytest

from unet3d.errors import DataError
from unet3d.experiment.run import run_experiment
from unet3d.training.history import COLUMNS, LOG_FILENAME, read_log, write_log
from unet3d.training.options import RunOptions


def test_log_is_rebuilt_from_the_checkpoint_after_a_crash_between_writes(experiment, tmp_path):
    config = experiment("crash", n_epochs=2)
    run_experiment(config, tmp_path, RunOptions(seed=2))
    log_path = tmp_path / "crash" / LOG_FILENAME
    log_path.write_text("epoch,loss\n1,0.5\n")  # as if the process died before rewriting the log
    run_experiment(config, tmp_path, RunOptions(seed=2), overrides={"training.n_epochs": 3})
    assert list(pd.read_csv(log_path)["epoch"]) == [1, 2, 3]


def test_the_log_lists_the_standard_columns_first_and_keeps_six_significant_digits(tmp_path):
    path = tmp_path / "training_log.csv"
    rows = [
        {"val_dice_4": 0.5, "epoch": 1, "loss": 0.123456789, "lr": 0.01, "epoch_time": 1.5},
        {"val_dice_4": 0.25, "epoch": 2, "loss": 0.1, "lr": 0.005, "epoch_time": 1.25},
    ]
    write_log(path, rows)
    assert path.read_text().splitlines()[:2] == ["epoch,loss,lr,epoch_time,val_dice_4", "1,0.123457,0.01,1.5,0.5"]
    assert read_log(path).to_dict("records")[1] == {
        "epoch": 2,
        "loss": 0.1,
        "lr": 0.005,
        "epoch_time": 1.25,
        "val_dice_4": 0.25,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["training_log.csv"]  # written atomically: no temporary left


def test_the_log_is_rewritten_from_the_rows_never_appended_to(tmp_path):
    path = tmp_path / "training_log.csv"
    write_log(path, [{"epoch": e, "loss": 1 / e} for e in (1, 2, 3)])
    write_log(path, [{"epoch": e, "loss": 1 / e} for e in (1, 2)])  # a resume from the checkpoint of epoch 2
    assert list(read_log(path)["epoch"]) == [1, 2]
    write_log(path, [])
    assert path.read_text() == ",".join(COLUMNS) + "\n"


def test_a_missing_log_reads_as_an_empty_table_with_the_standard_columns(tmp_path):
    log = read_log(tmp_path / "training_log.csv")
    assert log.empty and list(log.columns) == [
        "epoch",
        "loss",
        "lr",
        "val_loss",
        "val_dice",
        "epoch_time",
        "train_time",
        "samples_per_s",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("epoch,loss\n1,0.5\n,0.4\n", "an epoch that is not a whole number"),
        ("epoch,loss\n1,0.5\nx,0.4\n", "an epoch that is not a whole number"),
        ("loss\n0.5\n", "no 'epoch' column"),
    ],
)
def test_a_log_edited_by_hand_is_one_line_naming_the_fix(tmp_path, text, problem):
    # Issue 22: a log with NaN in the epoch column, or without one, was a traceback in the summary and the report.
    path = tmp_path / LOG_FILENAME
    path.write_text(text)
    with pytest.raises(DataError, match=rf"{LOG_FILENAME}: {problem}; rerun unet3d-train on the work dir"):
        read_log(path)
