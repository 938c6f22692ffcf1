"""How a run executes (unet3d/training/options.py): the earlier name n_gpus, one rule for it in training and
prediction, and what a rerun does with fold configs that differ."""

from __future__ import annotations

import pytest

from unet3d.errors import ConfigError
from unet3d.prediction import predict
from unet3d.training.options import RunOptions


def test_run_options_still_take_the_earlier_name_n_gpus():
    assert RunOptions(n_gpus=0).n_devices == 0
    assert RunOptions(n_gpus=2, n_devices=2).n_devices == 2
    assert RunOptions(n_devices=3).n_devices == 3
    with pytest.raises(ConfigError, match="RunOptions: n_gpus=1 and n_devices=2 disagree"):
        RunOptions(n_gpus=1, n_devices=2)


def test_predict_refuses_a_disagreeing_n_gpus_as_training_does(tmp_path):
    with pytest.raises(ConfigError, match="predict: n_gpus=1 and n_devices=0 disagree"):
        predict(tmp_path / "out", model_filenames=[tmp_path / "absent.pth"], n_devices=0, n_gpus=1)
    assert not (tmp_path / "out").exists()


def test_changed_fold_configs_are_refused_unless_updating_them_was_asked_for():
    assert RunOptions().existing_fold_configs == "refuse"
    assert RunOptions(update_fold_configs=True).existing_fold_configs == "update"
