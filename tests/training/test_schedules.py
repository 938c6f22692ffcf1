"""Per-iteration schedulers, monitored columns, fixed iterations per epoch, gradient clipping, iteration logs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

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


def test_fixed_iterations_per_epoch(experiment, tmp_path):
    def poly(config):
        config["scheduler"] = {
            "name": "LinearLR",
            "start_factor": 1.0,
            "end_factor": 0.5,
            "total_iters": 100,
            "step": "iteration",
        }

    run_experiment(experiment("iters", n_epochs=2, iterations_per_epoch=3, mutate=poly), tmp_path, RunOptions(seed=1))
    assert ckpt.load_checkpoint(tmp_path / "iters/model.pth")["scheduler"]["last_epoch"] == 6


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


def test_gradient_clipping_bounds_every_update(experiment, tmp_path):
    def sgd(config):
        config["optimizer"] = {"name": "SGD", "lr": 1.0}
        config["scheduler"] = None

    config = experiment("clip", n_epochs=1, gradient_clip=1e-3, mutate=sgd, log_every_n_iterations=1)
    run_experiment(config, tmp_path, RunOptions(seed=1, n_examples=0))
    # The initial weights are the seeded ones: rebuild them to measure the total update of 2 iterations.
    from unet3d.config.load import load_config
    from unet3d.models import build_model

    torch.manual_seed(1)
    initial = build_model(load_config(config).model)
    trained = build_model(load_config(config).model)
    trained.load_state_dict(ckpt.model_state(ckpt.load_checkpoint(tmp_path / "clip/model.pth")))
    # Over the parameters, not the state dict: DynUNet's state dict lists some tensors under two names.
    pairs = zip(initial.parameters(), trained.parameters(), strict=True)
    change = torch.sqrt(sum(((b.detach() - a.detach()).double() ** 2).sum() for a, b in pairs))
    assert 1e-4 < float(change) <= 2 * 1e-3 * 1.01  # two iterations of at most lr * clip each
    assert "epoch 1 iteration 2 | loss" in (tmp_path / "clip/train.log").read_text()
