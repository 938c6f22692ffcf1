"""Per-iteration schedulers, monitored columns, fixed iterations per epoch, gradient clipping, iteration logs."""

from __future__ import annotations

import pandas as pd
import pytest

from unet3d import checkpoint as ckpt
from unet3d.errors import ConfigError
from unet3d.experiment.run import run_experiment
from unet3d.training.history import LOG_FILENAME
from unet3d.training.run import RunOptions


def test_polynomial_decay_steps_every_iteration(experiment, tmp_path):
    def poly(config):
        config["scheduler"] = {"name": "PolynomialLR", "total_iters": 10, "power": 0.9, "step": "iteration"}

    # 4 training cases in batches of 2: 2 iterations per epoch.
    run_experiment(experiment("poly", n_epochs=2, mutate=poly), tmp_path, RunOptions(seed=1))
    log = pd.read_csv(tmp_path / "poly" / LOG_FILENAME)
    assert log["lr"].tolist() == pytest.approx([0.01, 0.01 * (1 - 2 / 10) ** 0.9])  # lr at each epoch's start
    state = ckpt.load_checkpoint(tmp_path / "poly/model.pth")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * (1 - 4 / 10) ** 0.9)
    assert state["scheduler"]["last_epoch"] == 4


def test_reduce_on_plateau_can_follow_validation_dice_in_max_mode(experiment, tmp_path):
    def plateau(config):
        config["optimizer"]["lr"] = 1e-12  # the model does not change: val_dice stays flat
        config["scheduler"] = {
            "name": "ReduceLROnPlateau",
            "mode": "max",
            "patience": 0,
            "factor": 0.5,
            "monitor": "val_dice",
        }

    run_experiment(experiment("maxdice", n_epochs=3, mutate=plateau), tmp_path, RunOptions(seed=1))
    log = pd.read_csv(tmp_path / "maxdice" / LOG_FILENAME)
    scheduler = ckpt.load_checkpoint(tmp_path / "maxdice/model.pth")["scheduler"]
    assert scheduler["mode"] == "max" and scheduler["best"] == pytest.approx(log["val_dice"].max(), rel=1e-4)
    assert log["lr"].tolist() == pytest.approx([1e-12, 1e-12, 5e-13])


def test_unknown_monitor_and_iteration_plateau_are_config_errors(experiment, tmp_path):
    def bad_monitor(config):
        config["scheduler"] = {"name": "ReduceLROnPlateau", "monitor": "val_dise"}

    with pytest.raises(ConfigError, match=r"scheduler.monitor: 'val_dise' is not a column.*did you mean 'val_dice'"):
        run_experiment(experiment("badmon", mutate=bad_monitor), tmp_path)

    def per_iteration_plateau(config):
        config["scheduler"] = {"name": "ReduceLROnPlateau", "step": "iteration"}

    with pytest.raises(ConfigError, match=r"scheduler.step: ReduceLROnPlateau"):
        run_experiment(experiment("badstep", mutate=per_iteration_plateau), tmp_path)
