"""Training loop behaviour: files, resume/extend, early stopping, checkpoint retention, deep supervision."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from unet3d import checkpoint as ckpt
from unet3d.experiment.run import run_experiment
from unet3d.training.history import LOG_FILENAME
from unet3d.training.run import RunOptions
from unet3d.training.state import TrainingState, should_stop


def weights(path):
    return ckpt.model_state(ckpt.load_checkpoint(path))


def test_training_writes_log_and_full_state_checkpoints(experiment, tmp_path):
    config = experiment("files", n_epochs=3)
    result = run_experiment(config, tmp_path, RunOptions(seed=1, n_examples=1))
    work = tmp_path / "files"
    assert result.work_dir == work
    log = pd.read_csv(work / LOG_FILENAME)
    assert list(log["epoch"]) == [1, 2, 3]
    for column in ("loss", "lr", "val_loss", "val_dice", "epoch_time", "val_dice_2+1+4", "val_dice_1+4", "val_dice_4"):
        assert log[column].notna().all(), column
    assert log["lr"].iloc[0] == pytest.approx(0.01)
    # Throughput as published runs count it: training samples (4 cases, one pass) per second of the training phase.
    assert (log["samples_per_s"] > 0).all() and (log["train_time"] < log["epoch_time"]).all()
    assert list(log["samples_per_s"] * log["train_time"]) == pytest.approx([4, 4, 4], rel=1e-4)
    assert f"{log['samples_per_s'].iloc[-1]:.1f} samples/s" in (work / "train.log").read_text()
    assert ((log["val_dice"] >= 0) & (log["val_dice"] <= 1)).all()
    state = ckpt.load_checkpoint(work / ckpt.LAST)
    assert state["epoch"] == 3
    assert {"model", "optimizer", "scheduler", "scaler", "best_metric", "best_epoch", "seed", "rows", "config"} <= set(
        state
    )
    assert state["seed"] == 1
    assert state["best_metric"] == pytest.approx(log["val_loss"].min(), rel=1e-5)
    best = ckpt.load_checkpoint(work / ckpt.BEST)
    assert best["epoch"] == state["best_epoch"] == int(log.loc[log["val_loss"].idxmin(), "epoch"])
    assert (work / "config.json").exists() and (work / "train.log").exists()
    examples = sorted(p.name for p in (work / "data_loader_testing").iterdir())
    assert examples == ["input_test_0.nii.gz", "target_test_0.nii.gz"]
    # Full-volume validation Dice joins the log (always after the last epoch), and the best model predicts the
    # validation cases into the work dir with their metrics.
    assert 0 <= log["full_dice"].iloc[-1] <= 1 and "full_dice_2+1+4" in log
    metrics = pd.read_csv(work / "validation" / "metrics.csv").set_index("case_id")
    assert len(metrics) == 2 + 4 and "hd95_4" in metrics


def test_resume_and_extend_match_an_uninterrupted_run(experiment, tmp_path):
    once = experiment("once", n_epochs=4)
    run_experiment(once, tmp_path / "a", RunOptions(seed=5))
    staged = experiment("staged", n_epochs=2)
    run_experiment(staged, tmp_path / "b", RunOptions(seed=5))
    run_experiment(staged, tmp_path / "b", RunOptions(seed=5), overrides={"training.n_epochs": 4})
    a, b = weights(tmp_path / "a/once/model.pth"), weights(tmp_path / "b/staged/model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged from the uninterrupted one"
    log_a = pd.read_csv(tmp_path / "a/once" / LOG_FILENAME)
    log_b = pd.read_csv(tmp_path / "b/staged" / LOG_FILENAME)
    assert list(log_b["epoch"]) == [1, 2, 3, 4]
    pd.testing.assert_series_equal(log_a["loss"], log_b["loss"])


def test_loader_workers_and_a_resume_do_not_change_the_augmentations(experiment, tmp_path):
    # Workers hold their own copies of the transforms; per-sample seeds from the training process make the run the
    # same with and without workers, and when resumed with workers.
    mutate = lambda c: c["dataset"]["training"]["spatial_augmentations"].append(  # noqa: E731
        {"name": "RandRotate90d", "prob": 0.5, "spatial_axes": [0, 1]}
    )
    config = experiment("workers", n_epochs=3, mutate=mutate)
    run_experiment(config, tmp_path / "a", RunOptions(seed=9))
    staged = experiment("workers_staged", n_epochs=2, mutate=mutate)
    run_experiment(staged, tmp_path / "b", RunOptions(seed=9, n_workers=2))
    run_experiment(staged, tmp_path / "b", RunOptions(seed=9, n_workers=2), overrides={"training.n_epochs": 3})
    a, b = weights(tmp_path / "a/workers/model.pth"), weights(tmp_path / "b/workers_staged/model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a), "2 workers (and a resume) trained differently from 0 workers"
    run_experiment(config, tmp_path / "c", RunOptions(seed=9, n_workers=2, thread_workers=True))
    c = weights(tmp_path / "c/workers/model.pth")
    assert all(torch.equal(a[k], c[k]) for k in a), "2 thread workers trained differently from 0 workers"


def test_rerunning_a_finished_run_trains_nothing(experiment, tmp_path):
    config = experiment("finished", n_epochs=2)
    run_experiment(config, tmp_path, RunOptions(seed=2))
    before = (tmp_path / "finished/model.pth").stat().st_mtime_ns
    state = run_experiment(config, tmp_path, RunOptions(seed=2)).state
    assert state.epoch == 2
    assert (tmp_path / "finished/model.pth").stat().st_mtime_ns == before


def test_log_is_rebuilt_from_the_checkpoint_after_a_crash_between_writes(experiment, tmp_path):
    config = experiment("crash", n_epochs=2)
    run_experiment(config, tmp_path, RunOptions(seed=2))
    log_path = tmp_path / "crash" / LOG_FILENAME
    log_path.write_text("epoch,loss\n1,0.5\n")  # as if the process died before rewriting the log
    run_experiment(config, tmp_path, RunOptions(seed=2), overrides={"training.n_epochs": 3})
    assert list(pd.read_csv(log_path)["epoch"]) == [1, 2, 3]


def test_should_stop_counts_epochs_without_improvement():
    assert not should_stop(TrainingState(epoch=5, best_epoch=3), patience=3)
    assert should_stop(TrainingState(epoch=6, best_epoch=3), patience=3)
    assert not should_stop(TrainingState(epoch=100, best_epoch=1), patience=None)


def test_early_stopping_ends_the_run_and_a_rerun_stays_stopped(experiment, tmp_path):
    # lr 0 keeps every val_loss equal to the first: no improvement after epoch 1.
    config = experiment("early", n_epochs=10, early_stopping_patience=2, mutate=lambda c: c["optimizer"].update(lr=0.0))
    state = run_experiment(config, tmp_path, RunOptions(seed=3)).state
    assert (state.epoch, state.best_epoch) == (3, 1)
    assert run_experiment(config, tmp_path, RunOptions(seed=3)).state.epoch == 3


def test_save_every_and_last_n_keep_the_right_epoch_files(experiment, tmp_path):
    config = experiment("retention", n_epochs=5, save_every_n_epochs=2, save_last_n_models=2)
    run_experiment(config, tmp_path, RunOptions(seed=4))
    kept = sorted(p.name for p in (tmp_path / "retention").glob("model_epoch*.pth"))
    assert kept == ["model_epoch2.pth", "model_epoch4.pth", "model_epoch5.pth"]
    assert ckpt.load_checkpoint(tmp_path / "retention/model_epoch4.pth")["epoch"] == 4


def test_reduce_lr_on_plateau_steps_on_val_loss(experiment, tmp_path):
    def plateau(config):
        config["optimizer"]["lr"] = 0.0
        config["scheduler"] = {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5}

    run_experiment(experiment("plateau", n_epochs=3, mutate=plateau), tmp_path, RunOptions(seed=1))
    state = ckpt.load_checkpoint(tmp_path / "plateau/model.pth")
    assert state["scheduler"]["num_bad_epochs"] == 0 and state["scheduler"]["best"] < float("inf")
    assert state["scheduler"]["last_epoch"] == 3


def test_without_validation_the_training_loss_is_monitored(experiment, tmp_path):
    state = run_experiment(experiment("noval", n_validation=0, n_epochs=2), tmp_path, RunOptions(seed=1)).state
    log = pd.read_csv(tmp_path / "noval" / LOG_FILENAME)
    assert "val_loss" not in log
    assert state.best_metric == pytest.approx(log["loss"].min(), rel=1e-5)


def test_dynunet_deep_supervision_trains_with_a_loss_over_all_heads(experiment, tmp_path):
    def deep(config):
        config["model"]["deep_supervision"] = True
        config["model"]["deep_supr_num"] = 1

    run_experiment(experiment("deep", n_epochs=2, mutate=deep), tmp_path, RunOptions(seed=1))
    log = pd.read_csv(tmp_path / "deep" / LOG_FILENAME)
    assert log["loss"].notna().all() and log["val_loss"].notna().all()
    # Head weights sum to 1, so the training loss stays in the Dice-loss range like the validation loss.
    assert ((log["loss"] > 0) & (log["loss"] <= 1.0)).all()


def test_deep_supervision_loss_weights_the_heads_halving_and_summing_to_one():
    from unet3d.config.schema import NamedSpec
    from unet3d.losses import build_loss, deep_supervision_weights

    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    spec = NamedSpec("DiceLoss", {"sigmoid": True})
    plain, deep = build_loss(spec), build_loss(spec, deep_supervision_heads=2)
    torch.manual_seed(0)
    heads = torch.randn(2, 2, 3, 8, 8, 8)  # (batch, heads, channels, *spatial), as DynUNet returns while training
    target = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    expected = 2 / 3 * plain(heads[:, 0], target) + 1 / 3 * plain(heads[:, 1], target)
    assert deep(heads, target) == pytest.approx(float(expected), rel=1e-5)
    assert deep(heads[:, 0], target) == pytest.approx(float(plain(heads[:, 0], target)))


def test_pretrained_weights_initialise_a_new_run(experiment, tmp_path):
    source = experiment("source", n_epochs=1)
    run_experiment(source, tmp_path, RunOptions(seed=1))
    target = experiment("target", n_epochs=1, mutate=lambda c: c["optimizer"].update(lr=0.0))
    run_experiment(target, tmp_path, RunOptions(seed=9, pretrained_model_filename=tmp_path / "source/model.pth"))
    a, b = weights(tmp_path / "source/model.pth"), weights(tmp_path / "target/model.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compiled_channels_last_network_trains_to_the_same_losses(experiment, tmp_path):
    plain = experiment("plain", n_epochs=1)
    fast = experiment("fast", n_epochs=1, compile=True, channels_last=True)
    run_experiment(plain, tmp_path, RunOptions(seed=3))
    run_experiment(fast, tmp_path, RunOptions(seed=3))
    a, b = (pd.read_csv(tmp_path / name / LOG_FILENAME) for name in ("plain", "fast"))
    assert b["loss"].iloc[0] == pytest.approx(a["loss"].iloc[0], rel=1e-3)
    assert b["val_loss"].iloc[0] == pytest.approx(a["val_loss"].iloc[0], rel=1e-3)
    state = ckpt.load_checkpoint(tmp_path / "fast/model.pth")
    assert not any(k.startswith("_orig_mod") for k in state["model"]), "checkpoints hold the bare network's names"
