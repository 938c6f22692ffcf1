"""What a run is assembled from (unet3d/training/components.py): the compiled channels-last network and a fixed
number of iterations per epoch."""

from __future__ import annotations

import pandas as pd
import pytest

from unet3d import checkpoint as ckpt
from unet3d.experiment.run import run_experiment
from unet3d.training.history import LOG_FILENAME
from unet3d.training.options import RunOptions


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


def test_output_bias_prior_is_applied_to_a_new_run_and_logged(experiment, tmp_path, caplog):
    import math

    import torch

    from unet3d.config.load import load_config
    from unet3d.models import CONVOLUTIONS
    from unet3d.runtime import Runtime
    from unet3d.training.components import build_components

    config = load_config(experiment("prior", n_epochs=1, output_bias_prior=0.01))
    with caplog.at_level("INFO", logger="unet3d"):
        runtime = Runtime(torch.device("cpu"), n_devices=0, n_workers=0, pin_memory=False)
        components = build_components(config, tmp_path / "prior", runtime)
    last = [m for m in components.model.modules() if isinstance(m, CONVOLUTIONS)][-1]
    expected = math.log(0.01 / 0.99) if components.activation == "sigmoid" else math.log(0.01)
    assert last.bias[-1].item() == pytest.approx(expected, rel=1e-6)
    assert "every region starts at probability 0.01" in caplog.text


def test_augmentations_on_the_device_train_as_in_the_loader(experiment, tmp_path):
    # Same seeds, same samples: the run with its random transforms in the training process (and 2 loader workers that
    # only load and crop) learns what the run with all of it in the loader learns.
    def augment(config):
        config["dataset"]["training"]["spatial_augmentations"] += [
            {"name": "RandAffined", "prob": 0.5, "rotate_range": [0.3, 0.3, 0.3]},
            {"name": "RandFlipd", "prob": 0.5, "spatial_axis": 0},
        ]
        config["dataset"]["training"]["intensity_augmentations"] = [{"name": "RandGaussianNoised", "prob": 0.5}]

    loader = experiment("loader", n_epochs=2, mutate=augment)
    device = experiment("device", n_epochs=2, augment_on="device", mutate=augment)
    run_experiment(loader, tmp_path, RunOptions(seed=4))
    run_experiment(device, tmp_path, RunOptions(seed=4, n_workers=2))
    a, b = (pd.read_csv(tmp_path / name / LOG_FILENAME) for name in ("loader", "device"))
    assert list(b["loss"]) == pytest.approx(list(a["loss"]), rel=1e-5)
    assert list(b["val_loss"]) == pytest.approx(list(a["val_loss"]), rel=1e-5)
    other = experiment("other", n_epochs=2, augment_on="device", mutate=augment)
    run_experiment(other, tmp_path, RunOptions(seed=5))
    assert pd.read_csv(tmp_path / "other" / LOG_FILENAME)["loss"].iloc[0] != a["loss"].iloc[0]
