"""Shared fixtures: tiny synthetic experiments in the 3DUnetCNN (brats2020) config schema, the command runner,
and the helpers that the tests of several folders use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from unet3d.config.load import parse_config
from unet3d.config.schema import Config
from unet3d.data.synthetic import write_dataset

# The file checks' records (unet3d.data.checked_files) of this test process, in and under it: never the user's cache.
os.environ["UNET3D_CACHE_DIR"] = tempfile.mkdtemp(prefix="unet3d-test-checks-")

# The grid of the cases that the data-check and preflight tests write one by one (write_case).
SHAPE = (16, 17, 18)
SPACING = (1.0, 1.5, 2.0)

TINY_SHAPE = (16, 20)


def tiny_config(entries: list[dict[str, Any]], n_validation: int = 2, **training: Any) -> dict[str, Any]:
    """A brats2020-schema config sized for a CPU test: 16³ inputs, a 3-level DynUNet with 4-16 filters."""
    cases = [{"image": list(e["image"]), "label": e["label"]} for e in entries]
    config: dict[str, Any] = {
        "model": {
            "name": "DynUNet",
            "in_channels": 4,
            "out_channels": 3,
            "spatial_dims": 3,
            "deep_supervision": False,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "filters": [4, 8, 16],
            "kernel_size": [[3, 3, 3]] * 3,
            "upsample_kernel_size": [[2, 2, 2]] * 2,
        },
        "optimizer": {"name": "Adam", "lr": 0.01},
        "loss": {"name": "DiceLoss", "include_background": True, "sigmoid": True},
        "scheduler": {"name": "ReduceLROnPlateau", "patience": 10, "factor": 0.5, "min_lr": 1e-08},
        "dataset": {
            "name": "SegmentationDataset",
            "desired_shape": [16, 16, 16],
            "labels": [2, 1, 4],
            "setup_label_hierarchy": True,
            "normalization": "NormalizeIntensityD",
            "normalization_kwargs": {"channel_wise": True, "nonzero": False},
            "resample": True,
            "crop_foreground": True,
            "training": {"spatial_augmentations": [{"name": "RandFlipD", "spatial_axis": 0, "prob": 0.5}]},
        },
        "training": {"batch_size": 2, "validation_batch_size": 2, "n_epochs": 2, "save_best": True, **training},
        "training_filenames": cases[: len(cases) - n_validation] if n_validation else cases,
    }
    if n_validation:
        config["validation_filenames"] = cases[len(cases) - n_validation :]
    return config


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Six labelled 16-20 voxel cases, written once per test session; paths relative to the returned folder."""
    folder = tmp_path_factory.mktemp("tiny_data")
    return folder, write_dataset(folder, 6, seed=7, shape_range=TINY_SHAPE)


@pytest.fixture
def experiment(tiny_data: tuple[Path, list[dict[str, Any]]]):
    """A factory writing a tiny config next to the shared data: experiment(name, **training) → config path."""
    folder, entries = tiny_data

    def write(name: str = "exp", n_validation: int = 2, mutate=None, **training: Any) -> Path:
        config = tiny_config(entries, n_validation, **training)
        if mutate is not None:
            mutate(config)
        path = folder / f"{name}.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    return write


def run_cli(command: str, *args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `unet3d-<command>` as a user does (`python -m unet3d.cli.<command> ARGS`), capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", f"unet3d.cli.{command}", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    """Wait until `path` exists while `process` runs; fail with the process's stderr when it never appears."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert path.exists(), process.communicate()[1]


@pytest.fixture(scope="session")
def trained_cv(tiny_data, tmp_path_factory):
    """A finished 2-fold run of the tiny experiment with an unlabelled extra group (trained once per session):
    (config path, CV work dir, data folder)."""
    from unet3d.experiment.run import run_experiment
    from unet3d.training.options import RunOptions

    folder, entries = tiny_data
    extra = write_dataset(folder / "extra", 2, seed=11, shape_range=(16, 20), with_labels=False, prefix="new")
    config = tiny_config(entries, n_validation=0, n_epochs=2)
    config["cross_validation"] = {"n_folds": 2, "random_seed": 1}
    config["test_filenames"] = [{"image": [f"extra/{p}" for p in e["image"]]} for e in extra]
    path = folder / "predict_cv.json"
    path.write_text(json.dumps(config))
    output = tmp_path_factory.mktemp("out")
    result = run_experiment(path, output, RunOptions(seed=1))
    assert not result.failed
    return path, output / "predict_cv", folder


# --- helpers shared by the tests of several folders ------------------------------------------------------------------


def _touch(path: str) -> None:
    Path(path).write_text("code ran")


class Payload:
    """Unpickling an instance calls _touch(marker): a stand-in for arbitrary code in a file list or a checkpoint."""

    def __init__(self, marker: Path | str) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _touch, (self.marker,)


def config(directory: Path, entries: list, loss: dict | None = None, **dataset) -> Config:
    """A parsed config whose dataset section is `dataset`, listing `entries` (relative to `directory`) for training."""
    data = {
        "model": {"name": "UNet", "spatial_dims": 3},
        "optimizer": {"name": "Adam", "lr": 1e-3},
        "loss": loss or {"name": "DiceLoss", "sigmoid": True},
        "dataset": dataset,
        "training_filenames": entries,
    }
    return parse_config(data, base=directory)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Two tiny cases, written once per test module: (folder, entries)."""
    directory = tmp_path_factory.mktemp("transforms")
    return directory, write_dataset(directory, 2, seed=5, shape_range=(16, 20))


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write `data` as a NIfTI file with `affine`."""
    nib.save(nib.Nifti1Image(data, affine), str(path))


def affine_of(path: Path) -> np.ndarray:
    """The affine of an image file."""
    return nib.load(str(path)).affine


class Undertrained(torch.nn.Module):
    """Whole tumour where the first modality is bright; the inner channels fire everywhere."""

    def __init__(self, n_out: int = 3, shift: float = 0.0) -> None:
        super().__init__()
        self.n_out, self.shift = n_out, shift
        self.weight = torch.nn.Parameter(torch.ones(1))  # something to move to a device

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        whole = 6.0 * (image[:, :1] - 1.0 + self.shift)
        return torch.cat([whole, torch.full_like(whole, 4.0).expand(-1, self.n_out - 1, *whole.shape[2:])], 1)


def nested_config(cases: list[dict], spatial_dims: int, in_channels: int, labels: list, **dataset) -> dict:
    """A config of a small UNet for nested labels (`setup_label_hierarchy`) over `cases`."""
    return {
        "model": {
            "name": "UNet",
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": len(labels),
            "channels": [4, 8],
            "strides": [2],
        },
        "optimizer": {"name": "Adam"},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        "dataset": {
            "labels": labels,
            "setup_label_hierarchy": True,
            "normalization_kwargs": {"channel_wise": True},
            **dataset,
        },
        "training_filenames": cases,
    }


@pytest.fixture(scope="session")
def hard_cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Cases unlike the easy defaults: CT-like and shifted backgrounds, oblique and thick-slice voxels."""
    folder = tmp_path_factory.mktemp("hard")
    entries = write_dataset(
        folder,
        2,
        seed=5,
        shape_range=(16, 20),
        spacing=(0.8, 0.8, 5.0),
        background_range=(-1000, 300),
        oblique_degrees=15.0,
    )
    return folder, entries


def with_cv(n_folds: int = 3, **extra: Any) -> Callable[[dict[str, Any]], None]:
    """A `mutate` for the `experiment` fixture: add a cross_validation section."""

    def mutate(config):
        config["cross_validation"] = {"n_folds": n_folds, "random_seed": 25, **extra}

    return mutate


def ct_softmax_sliding_window(config: dict[str, Any]) -> None:
    """A `mutate` for the `experiment` fixture taking every preprocessing and decoding step the tiny config does not:
    reoriented to RAS, resampled to 1.5 mm, the CT scheme, random 16³ patches, exclusive classes under softmax, and a
    16³ Gaussian sliding window over the larger volumes."""
    config["dataset"].update(
        orientation="RAS",
        spacing=[1.5, 1.5, 1.5],
        desired_shape=None,
        resample=False,
        normalization="CTNormalized",
        normalization_kwargs={"lower": 0.0, "upper": 600.0, "mean": 200.0, "std": 150.0},
    )
    config["dataset"]["training"]["spatial_augmentations"] = [
        {"name": "RandSpatialCropd", "roi_size": [16, 16, 16], "random_size": False},
        {"name": "SpatialPadd", "spatial_size": [16, 16, 16]},
    ]
    config["dataset"]["setup_label_hierarchy"] = False
    config["loss"] = {"name": "DiceCELoss", "softmax": True, "include_background": False}
    config["model"]["out_channels"] = 4
    config["inference"] = {"name": "SlidingWindowInferer", "roi_size": [16, 16, 16], "overlap": 0.5}
