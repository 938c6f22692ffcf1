"""A resumed run takes the config changes that only extend it and refuses the ones that change what the model
learns or sees, unless they are accepted explicitly (issue 11, item 8). Which keys a resume applies, and how changes
are listed: tests/training/test_resume.py."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from unet3d.errors import ConfigError
from unet3d.experiment.run import run_experiment
from unet3d.training.options import RunOptions


def edit(path, **changes):
    config = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(json.dumps(config))


@pytest.fixture
def one_epoch(experiment, tmp_path):
    config = experiment("resume", n_epochs=1)
    run_experiment(config, tmp_path, RunOptions(seed=1))
    return config, tmp_path / "resume"


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"optimizer__lr": 0.0001}, "optimizer.lr: 0.01 → 0.0001"),
        ({"dataset__desired_shape": [24, 24, 24]}, "dataset.desired_shape: [16, 16, 16] → [24, 24, 24]"),
        ({"dataset__normalization_kwargs": {"channel_wise": False}}, "dataset.normalization_kwargs.channel_wise: True"),
        ({"model__filters": [8, 16, 32]}, "model.filters: [4, 8, 16] → [8, 16, 32]"),
    ],
)
def test_a_change_to_what_the_model_learns_is_refused_and_nothing_is_rewritten(one_epoch, tmp_path, change, shown):
    config, work = one_epoch
    saved_config = (work / "config.json").read_text()
    checkpoint = (work / "model.pth").read_bytes()
    edit(config, training__n_epochs=2, **change)
    with pytest.raises(ConfigError) as raised:
        run_experiment(config, tmp_path, RunOptions(seed=1))
    lines = str(raised.value).splitlines()
    assert lines[0].endswith("differs from the run being resumed in keys that change what the model learns or sees:")
    assert any(line.strip().startswith(shown) for line in lines[1:-1])
    assert "training.n_epochs" not in str(raised.value)  # extending is not a problem
    assert "--accept_config_changes" in lines[-1] and "new work dir" in lines[-1]
    assert (work / "config.json").read_text() == saved_config
    assert (work / "model.pth").read_bytes() == checkpoint


def test_an_accepted_learning_rate_change_is_applied_and_logged(one_epoch, tmp_path):
    config, work = one_epoch
    edit(config, training__n_epochs=2, optimizer__lr=0.0001)
    state = run_experiment(config, tmp_path, RunOptions(seed=1, accept_config_changes=True)).state
    assert state.epoch == 2
    saved = torch.load(work / "model.pth", weights_only=True)
    assert [group["lr"] for group in saved["optimizer"]["param_groups"]] == [0.0001]
    assert saved["config"]["optimizer"]["lr"] == 0.0001
    assert json.loads((work / "config.json").read_text())["optimizer"]["lr"] == 0.0001
    assert list(pd.read_csv(work / "training_log.csv")["lr"]) == [0.01, 0.0001]
    assert "--accept_config_changes: resuming with optimizer.lr: 0.01 → 0.0001" in (work / "train.log").read_text()


def test_a_removed_optimizer_key_returns_to_the_class_default(experiment, tmp_path):
    # Issue 22, item 4: train.log said `0.1 → (not set)` and the restored optimizer kept 0.1.
    config = experiment("decay", n_epochs=1, mutate=lambda c: c["optimizer"].update(weight_decay=0.1))
    run_experiment(config, tmp_path, RunOptions(seed=1))
    raw = json.loads(config.read_text())
    del raw["optimizer"]["weight_decay"]
    raw["training"]["n_epochs"] = 2
    config.write_text(json.dumps(raw))
    run_experiment(config, tmp_path, RunOptions(seed=1, accept_config_changes=True))
    saved = torch.load(tmp_path / "decay" / "model.pth", weights_only=True)
    assert [group["weight_decay"] for group in saved["optimizer"]["param_groups"]] == [0.0]  # Adam's default
    assert "optimizer.weight_decay: 0.1 → (not set)" in (tmp_path / "decay" / "train.log").read_text()


def test_an_accepted_new_optimizer_class_starts_a_fresh_optimizer_state(one_epoch, tmp_path):
    # Issue 22, item 4: Adam → SGD was accepted, then the first step failed with KeyError: 'momentum'.
    config, work = one_epoch
    edit(config, training__n_epochs=2, optimizer={"name": "SGD", "lr": 0.01, "momentum": 0.9})
    state = run_experiment(config, tmp_path, RunOptions(seed=1, accept_config_changes=True)).state
    assert state.epoch == 2
    saved = torch.load(work / "model.pth", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert "the optimizer is now SGD: it starts with a fresh state" in (work / "train.log").read_text()


def halved_twice(experiment, tmp_path):
    """A run that halves its learning rate every epoch (StepLR), 2 epochs done: its config."""
    scheduler = {"name": "StepLR", "step_size": 1, "gamma": 0.5}
    config = experiment("stepped", n_epochs=2, mutate=lambda c: c.update(scheduler=scheduler))
    run_experiment(config, tmp_path, RunOptions(seed=1))
    return config


def test_an_accepted_scheduler_change_starts_the_learning_rate_again(experiment, tmp_path):
    # Issue 22, item 4, the scheduler's side: a new scheduler started from its first epoch, but on the learning rate
    # the old one had decayed to (0.0025 here instead of 0.01).
    config = halved_twice(experiment, tmp_path)
    edit(config, training__n_epochs=3, scheduler={"name": "StepLR", "step_size": 1})  # gamma: 0.5 → (not set)
    run_experiment(config, tmp_path, RunOptions(seed=1, accept_config_changes=True))
    work = tmp_path / "stepped"
    assert list(pd.read_csv(work / "training_log.csv")["lr"]) == pytest.approx([0.01, 0.005, 0.01])
    saved = torch.load(work / "model.pth", weights_only=True)
    assert saved["scheduler"]["gamma"] == 0.1 and saved["scheduler"]["last_epoch"] == 1  # StepLR's default gamma
    assert (
        "the scheduler's settings changed: it starts again from its initial state" in (work / "train.log").read_text()
    )


def test_an_accepted_learning_rate_change_moves_the_kept_schedule_to_the_new_base(experiment, tmp_path):
    config = halved_twice(experiment, tmp_path)
    edit(config, training__n_epochs=3, optimizer__lr=0.001)
    run_experiment(config, tmp_path, RunOptions(seed=1, accept_config_changes=True))
    work = tmp_path / "stepped"
    assert list(pd.read_csv(work / "training_log.csv")["lr"]) == pytest.approx([0.01, 0.005, 0.001])
    saved = torch.load(work / "model.pth", weights_only=True)
    assert saved["scheduler"]["base_lrs"] == [0.001] and saved["scheduler"]["last_epoch"] == 3
    assert saved["optimizer"]["param_groups"][0]["initial_lr"] == 0.001


def test_an_accepted_setting_that_needs_more_state_starts_a_fresh_optimizer_state(one_epoch, tmp_path):
    # Adam's amsgrad turned on: its first step read max_exp_avg_sq, which the restored state lacks (KeyError).
    config, work = one_epoch
    edit(config, training__n_epochs=2, optimizer__amsgrad=True)
    assert run_experiment(config, tmp_path, RunOptions(seed=1, accept_config_changes=True)).state.epoch == 2
    saved = torch.load(work / "model.pth", weights_only=True)
    assert all("max_exp_avg_sq" in state for state in saved["optimizer"]["state"].values())
    assert "new settings keep max_exp_avg_sq, which the run so far did not" in (work / "train.log").read_text()


def test_extending_keys_are_applied_without_asking(one_epoch, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unet3d")
    config, work = one_epoch
    edit(config, training__n_epochs=2, training__save_every_n_epochs=1, training__early_stopping_patience=5)
    assert run_experiment(config, tmp_path, RunOptions(seed=1)).state.epoch == 2
    assert "config change applied on resume: training.n_epochs: 1 → 2" in caplog.text
    assert (work / "model_epoch2.pth").exists()


def test_a_corrected_validation_label_is_scored_again(one_epoch, tmp_path):
    config, work = one_epoch
    case = json.loads((work / "config.json").read_text())["validation_filenames"][0]
    before = pd.read_csv(work / "validation" / "metrics.csv").set_index("case_id")
    label = nib.load(case["label"])
    data = np.asarray(label.dataobj).copy()
    data[data == 4] = 1  # a "corrected" label: no enhancing tumour
    nib.save(nib.Nifti1Image(data, label.affine, label.header), case["label"])
    try:
        run_experiment(config, tmp_path, RunOptions(seed=1))
        after = pd.read_csv(work / "validation" / "metrics.csv").set_index("case_id")
        assert after.loc[case["case_id"], "dice_4"] != before.loc[case["case_id"], "dice_4"]
    finally:
        data[np.asarray(label.dataobj) == 4] = 4
        nib.save(nib.Nifti1Image(data, label.affine, label.header), case["label"])


def test_a_finished_fold_whose_config_changed_is_not_skipped(experiment, tmp_path):
    def cv(config):
        config["cross_validation"] = {"n_folds": 2, "random_seed": 3}

    config = experiment("changed_cv", n_validation=0, n_epochs=1, mutate=cv)
    assert not run_experiment(config, tmp_path, RunOptions(seed=1)).failed
    edit(config, loss__name="DiceFocalLoss")
    with pytest.raises(ConfigError, match=r"fold1\.json: loss\.name: 'DiceLoss' → 'DiceFocalLoss'"):
        run_experiment(config, tmp_path, RunOptions(seed=1))  # the fold configs are written once (issue 23)
    result = run_experiment(config, tmp_path, RunOptions(seed=1, update_fold_configs=True)).cross_validation
    assert result.skipped == [] and sorted(result.failed) == [1, 2]
    assert "loss.name: 'DiceLoss' → 'DiceFocalLoss'" in result.failed[1]
