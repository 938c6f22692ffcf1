"""The training loop (unet3d/training/loop.py): the files of a run, exact resume and extension, loader workers,
early stopping, monitoring without validation, deep supervision, gradient clipping, and the logged Dice of
nested regions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import SimpleInferer

from tests.conftest import Undertrained, nested_config
from tests.training.conftest import weights
from unet3d import checkpoint as ckpt
from unet3d.config.load import parse_config
from unet3d.config.regions import label_regions, region_names
from unet3d.experiment.run import run_experiment
from unet3d.losses import build_loss
from unet3d.training.history import LOG_FILENAME
from unet3d.training.loop import validate
from unet3d.training.options import RunOptions

BRATS = label_regions([2, 1, 4], hierarchy=True)
CPU = torch.device("cpu")


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


def test_early_stopping_ends_the_run_and_a_rerun_stays_stopped(experiment, tmp_path):
    # lr 0 keeps every val_loss equal to the first: no improvement after epoch 1.
    config = experiment("early", n_epochs=10, early_stopping_patience=2, mutate=lambda c: c["optimizer"].update(lr=0.0))
    state = run_experiment(config, tmp_path, RunOptions(seed=3)).state
    assert (state.epoch, state.best_epoch) == (3, 1)
    assert run_experiment(config, tmp_path, RunOptions(seed=3)).state.epoch == 3


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


def test_training_log_dice_scores_the_nested_decoding(hard_cases):
    """validate(): an inner channel firing everywhere scores as the decoded label map does (inside the whole tumour),
    not as the channel alone would."""
    folder, entries = hard_cases
    config = parse_config(nested_config(entries, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True), folder)
    from unet3d.data.datasets import case_items
    from unet3d.data.transforms import build_transforms

    transform = build_transforms(config.dataset, with_label=True, softmax=False, augment=False)
    dataset = Dataset(case_items(config.groups["training"], with_label=True), transform)
    components = SimpleNamespace(
        network=Undertrained(),
        val_loader=DataLoader(dataset, batch_size=2),
        inferer=SimpleInferer(),
        eval_loss=build_loss(config.loss),
        activation="sigmoid",
        groups=BRATS,
        channel_names=region_names(BRATS),
        amp_dtype=None,
    )
    row = validate(components, CPU)
    expected = {name: [] for name in region_names(BRATS)}
    for item in dataset:
        probabilities = torch.sigmoid(Undertrained()(item["image"][None]))[0]
        truth = item["label"].bool()
        inside = torch.ones_like(truth[0])
        for index, name in enumerate(region_names(BRATS)):
            inside = inside & (probabilities[index] > 0.5)
            total = inside.sum() + truth[index].sum()
            expected[name].append(float(2 * (inside & truth[index]).sum() / total) if total else 1.0)
    for name, values in expected.items():
        assert row[f"val_dice_{name}"] == pytest.approx(np.mean(values), abs=1e-5)
    alone = torch.sigmoid(Undertrained()(dataset[0]["image"][None]))[0, 1] > 0.5
    assert alone.all()  # the channel alone would have claimed the whole volume as tumour core


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
