"""Optimizers and schedulers from the config (unet3d/optim.py): when a scheduler steps, what it follows, what is
refused."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from unet3d import checkpoint as ckpt
from unet3d.config.schema import NamedSpec
from unet3d.errors import ConfigError
from unet3d.experiment.run import run_experiment
from unet3d.optim import (
    build_optimizer,
    build_scheduler,
    check_optim_specs,
    current_lr,
    missing_state,
    scheduler_monitor,
    scheduler_step_mode,
    step_scheduler,
)
from unet3d.training.history import LOG_FILENAME
from unet3d.training.options import RunOptions


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


def test_reduce_lr_on_plateau_steps_on_val_loss(experiment, tmp_path):
    def plateau(config):
        config["optimizer"]["lr"] = 0.0
        config["scheduler"] = {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5}

    run_experiment(experiment("plateau", n_epochs=3, mutate=plateau), tmp_path, RunOptions(seed=1))
    state = ckpt.load_checkpoint(tmp_path / "plateau/model.pth")
    assert state["scheduler"]["num_bad_epochs"] == 0 and state["scheduler"]["best"] < float("inf")
    assert state["scheduler"]["last_epoch"] == 3


def test_a_scheduler_steps_per_epoch_and_follows_val_loss_unless_told_otherwise():
    assert scheduler_step_mode(None) == "epoch"
    assert scheduler_step_mode(NamedSpec("StepLR", {"step_size": 2})) == "epoch"
    assert scheduler_step_mode(NamedSpec("PolynomialLR", {"step": "iteration"})) == "iteration"
    assert scheduler_monitor(None, "val_loss") == "val_loss"
    assert scheduler_monitor(NamedSpec("ReduceLROnPlateau", {}), "loss") == "loss"
    assert scheduler_monitor(NamedSpec("ReduceLROnPlateau", {"monitor": "val_dice"}), "val_loss") == "val_dice"


def test_unet3d_s_own_scheduler_keys_never_reach_the_scheduler_class():
    optimizer = build_optimizer(NamedSpec("SGD", {"lr": 0.1}), [torch.nn.Parameter(torch.zeros(1))])
    options = {"step": "epoch", "monitor": "loss"}
    step = build_scheduler(NamedSpec("StepLR", {"step_size": 1, "gamma": 0.5, **options}), optimizer)
    optimizer.step()  # no gradients: nothing moves, but torch expects it before the scheduler's step
    step_scheduler(step, monitored=123.0)  # a StepLR ignores the monitored value
    assert current_lr(optimizer) == pytest.approx(0.05)
    plateau = build_scheduler(NamedSpec("ReduceLROnPlateau", {"patience": 0, "factor": 0.5, **options}), optimizer)
    step_scheduler(plateau, monitored=1.0)
    step_scheduler(plateau, monitored=2.0)  # worse: no patience left
    assert current_lr(optimizer) == pytest.approx(0.025)
    assert build_scheduler(None, optimizer) is None
    step_scheduler(None, monitored=1.0)
    assert current_lr(optimizer) == pytest.approx(0.025)


def test_wrong_step_modes_monitors_and_arguments_are_config_errors():
    adam = NamedSpec("Adam", {"lr": 0.01})
    check_optim_specs(adam, None)
    with pytest.raises(ConfigError, match=r"^scheduler.step: must be 'epoch' or 'iteration', got 'weekly'$"):
        check_optim_specs(adam, NamedSpec("StepLR", {"step_size": 1, "step": "weekly"}))
    with pytest.raises(ConfigError, match=r"^scheduler.monitor: expected a log column name such as 'val_dice', got 3$"):
        check_optim_specs(adam, NamedSpec("ReduceLROnPlateau", {"monitor": 3}))
    with pytest.raises(ConfigError, match=r"^optimizer: Adam: Invalid learning rate: -1"):
        build_optimizer(NamedSpec("Adam", {"lr": -1}), [torch.nn.Parameter(torch.zeros(1))])


@pytest.mark.parametrize(
    ("name", "setting", "missing"),
    [
        ("Adam", {"amsgrad": True}, ["max_exp_avg_sq"]),
        ("Adam", {"weight_decay": 0.1}, []),
        ("SGD", {"momentum": 0.9}, []),
    ],
)
def test_missing_state_names_what_a_restored_optimizer_lacks_for_its_new_settings(name, setting, missing):
    params = [torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(2))]
    optimizer = getattr(torch.optim, name)(params, lr=0.1)
    sum(param.sum() for param in params).backward()
    optimizer.step()
    optimizer.param_groups[0].update(setting)  # as an accepted config change sets it on the restored groups
    assert missing_state(optimizer) == missing
