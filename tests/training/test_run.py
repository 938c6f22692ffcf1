"""One model in one work dir (unet3d/training/run.py): a finished run is not redone, and a warm start."""

from __future__ import annotations

import torch

from tests.training.conftest import weights
from unet3d.experiment.run import run_experiment
from unet3d.training.options import RunOptions


def test_rerunning_a_finished_run_trains_nothing(experiment, tmp_path):
    config = experiment("finished", n_epochs=2)
    run_experiment(config, tmp_path, RunOptions(seed=2))
    before = (tmp_path / "finished/model.pth").stat().st_mtime_ns
    state = run_experiment(config, tmp_path, RunOptions(seed=2)).state
    assert state.epoch == 2
    assert (tmp_path / "finished/model.pth").stat().st_mtime_ns == before


def test_pretrained_weights_initialise_a_new_run(experiment, tmp_path):
    source = experiment("source", n_epochs=1)
    run_experiment(source, tmp_path, RunOptions(seed=1))
    target = experiment("target", n_epochs=1, mutate=lambda c: c["optimizer"].update(lr=0.0))
    run_experiment(target, tmp_path, RunOptions(seed=9, pretrained_model_filename=tmp_path / "source/model.pth"))
    a, b = weights(tmp_path / "source/model.pth"), weights(tmp_path / "target/model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
