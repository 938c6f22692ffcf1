"""Which epoch's model is the best (unet3d/training/selection.py): one rule, `training.select_by`, that
model_best.pth, early stopping, a plateau scheduler and the summary's best epoch follow."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from unet3d import checkpoint as ckpt
from unet3d.errors import ConfigError
from unet3d.experiment.run import run_experiment
from unet3d.experiment.summary import fold_row
from unet3d.training.history import LOG_FILENAME
from unet3d.training.options import RunOptions
from unet3d.training.selection import EMA_COLUMN, add_ema, best_row, selection_for

ROWS = [
    {"epoch": 1, "loss": 0.9, "val_loss": 0.50, "val_dice": 0.20},
    {"epoch": 2, "loss": 0.8, "val_loss": 0.40, "val_dice": 0.90},  # a lucky Dice
    {"epoch": 3, "loss": 0.7, "val_loss": 0.45, "val_dice": 0.60},
    {"epoch": 4, "loss": 0.6, "val_loss": 0.55, "val_dice": 0.70},
    {"epoch": 5, "loss": 0.5, "val_loss": 0.60, "val_dice": 0.70},
]


@pytest.mark.parametrize(
    ("select_by", "has_validation", "epoch"),
    [
        ("val_loss", True, 2),
        ("val_dice", True, 2),
        ("ema_val_dice", True, 5),
        ("last", True, 5),
        ("val_dice", False, 5),
    ],
)
def test_each_rule_picks_its_epoch(select_by, has_validation, epoch):
    assert best_row(ROWS, selection_for(select_by, has_validation))["epoch"] == epoch


def test_the_moving_average_is_nnunets_and_continues_from_the_rows_before():
    row = {"epoch": 2, "val_dice": 0.9}
    add_ema(row, ROWS[:1])
    assert row[EMA_COLUMN] == pytest.approx(0.9 * 0.2 + 0.1 * 0.9)
    first = {"epoch": 1, "val_dice": 0.2}
    add_ema(first, [])
    assert first[EMA_COLUMN] == 0.2
    assert best_row([{"epoch": 1, "val_loss": math.nan}], selection_for("val_loss", True)) is None


def test_model_best_early_stopping_and_the_summary_follow_select_by(experiment, tmp_path):
    config = experiment("by_dice", n_epochs=4, select_by="ema_val_dice")
    state = run_experiment(config, tmp_path, RunOptions(seed=4)).state
    work = tmp_path / "by_dice"
    log = pd.read_csv(work / LOG_FILENAME)
    ema = [float(log["val_dice"].iloc[0])]
    for value in log["val_dice"].iloc[1:]:
        ema.append(0.9 * ema[-1] + 0.1 * float(value))
    assert list(log[EMA_COLUMN]) == pytest.approx(ema, rel=1e-5)  # the log keeps 6 digits
    best_epoch = int(log.loc[log[EMA_COLUMN].idxmax(), "epoch"])
    assert state.best_epoch == best_epoch and state.best_metric == pytest.approx(-log[EMA_COLUMN].max(), rel=1e-5)
    assert ckpt.read_checkpoint(work / ckpt.BEST).epoch == best_epoch
    assert fold_row(1, work)["best_epoch"] == best_epoch
    assert f"best epoch {best_epoch} ({EMA_COLUMN} " in (work / "train.log").read_text()


def test_last_keeps_the_final_epoch(experiment, tmp_path):
    state = run_experiment(experiment("by_last", n_epochs=3, select_by="last"), tmp_path, RunOptions(seed=2)).state
    assert state.best_epoch == 3 and ckpt.read_checkpoint(tmp_path / "by_last" / ckpt.BEST).epoch == 3
    assert "best epoch 3 (select_by last)" in (tmp_path / "by_last" / "train.log").read_text()


def test_a_resume_with_another_rule_keeps_model_best_and_measures_later_epochs_by_it(experiment, tmp_path):
    frozen = {"lr": 0.0}  # every epoch scores the same: no later epoch beats the kept one by either rule
    run_experiment(experiment("switch", n_epochs=2, mutate=lambda c: c["optimizer"].update(frozen)), tmp_path)
    work = tmp_path / "switch"
    kept = ckpt.read_checkpoint(work / ckpt.BEST)
    config = experiment("switch", n_epochs=3, select_by="val_dice", mutate=lambda c: c["optimizer"].update(frozen))
    state = run_experiment(config, tmp_path, RunOptions()).state
    log = pd.read_csv(work / LOG_FILENAME)
    assert state.best_epoch == kept.epoch == 1
    assert state.best_metric == pytest.approx(-log["val_dice"].iloc[0], rel=1e-5)  # re-measured: a Dice, not a loss
    assert torch.equal(
        ckpt.read_checkpoint(work / ckpt.BEST).model[next(iter(kept.model))], next(iter(kept.model.values()))
    )


def test_a_plateau_scheduler_follows_the_rule_unless_its_monitor_is_set(experiment, tmp_path):
    from unet3d.config.load import load_config
    from unet3d.runtime import resolve_runtime
    from unet3d.training.components import build_components

    runtime = resolve_runtime(0, 0, False, False, "cpu")
    by_dice = load_config(experiment("plateau_dice", select_by="val_dice"))
    components = build_components(by_dice, tmp_path / "a", runtime)
    assert (components.scheduler_monitor, components.scheduler.mode) == ("val_dice", "max")
    own = load_config(experiment("plateau_own", select_by="val_dice", mutate=_monitor_loss))
    components = build_components(own, tmp_path / "b", runtime)
    assert (components.scheduler_monitor, components.scheduler.mode) == ("loss", "min")


def _monitor_loss(config):
    config["scheduler"]["monitor"] = "loss"


def test_a_dice_rule_needs_validation_cases(experiment, tmp_path):
    with pytest.raises(ConfigError, match=r"^training.select_by: 'val_dice' needs validation_filenames"):
        run_experiment(experiment("nodice", n_validation=0, select_by="val_dice"), tmp_path, RunOptions())
