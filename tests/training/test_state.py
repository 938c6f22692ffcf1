"""What a checkpoint holds and how an epoch is committed (unet3d/training/state.py): early stopping, checkpoint
retention."""

from __future__ import annotations

from unet3d import checkpoint as ckpt
from unet3d.experiment.run import run_experiment
from unet3d.training.options import RunOptions
from unet3d.training.state import TrainingState, should_stop


def test_should_stop_counts_epochs_without_improvement():
    assert not should_stop(TrainingState(epoch=5, best_epoch=3), patience=3)
    assert should_stop(TrainingState(epoch=6, best_epoch=3), patience=3)
    assert not should_stop(TrainingState(epoch=100, best_epoch=1), patience=None)


def test_save_every_and_last_n_keep_the_right_epoch_files(experiment, tmp_path):
    config = experiment("retention", n_epochs=5, save_every_n_epochs=2, save_last_n_models=2)
    run_experiment(config, tmp_path, RunOptions(seed=4))
    kept = sorted(p.name for p in (tmp_path / "retention").glob("model_epoch*.pth"))
    assert kept == ["model_epoch2.pth", "model_epoch4.pth", "model_epoch5.pth"]
    assert ckpt.load_checkpoint(tmp_path / "retention/model_epoch4.pth")["epoch"] == 4
