"""The configs a benchmark runs: the example (its data made when missing), variants, the BraTS-scale network."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from perf.settings import EXAMPLE_CONFIG, EXAMPLE_MAKE_DATA, REPO
from unet3d.config.schema import Config
from unet3d.data.synthetic import write_dataset
from unet3d.devices import amp_dtype
from unet3d.errors import ConfigError

log = logging.getLogger("unet3d")


def ensure_example_data(config_path: Path) -> None:
    """The example's data is generated, not stored: write it when the example config's data folder is missing."""
    if config_path.resolve() != EXAMPLE_CONFIG.resolve() or (EXAMPLE_CONFIG.parent / "data").is_dir():
        return
    print(f"example data missing: running {EXAMPLE_MAKE_DATA.relative_to(REPO)}", file=sys.stderr)
    subprocess.run([sys.executable, str(EXAMPLE_MAKE_DATA)], check=True)


def with_validation(config: Config, n_validation: int) -> tuple[Config, str]:
    """The config's training cases used directly (no folds); the last `n_validation` become validation cases when
    the config has none. Returns the config and a note saying which cases play which part."""
    training = list(config.groups.get("training", []))
    if config.groups.get("validation"):
        return config, f"{len(training)} training case(s), {len(config.groups['validation'])} validation case(s)"
    n_validation = max(1, min(n_validation, len(training) - 1))
    if len(training) < 2:
        raise ConfigError("training_filenames: the benchmark needs at least 2 cases (1 is held out for prediction)")
    groups = dict(config.groups)
    groups["training"], groups["validation"] = training[:-n_validation], training[-n_validation:]
    note = f"{len(groups['training'])} training cases, last {n_validation} of training_filenames held out as validation"
    if config.cross_validation is not None:
        note += " (cross_validation ignored: no folds)"
    return dataclasses.replace(config, groups=groups), note


def variant_config(config: Config, overrides: dict[str, Any]) -> Config:
    """The same experiment with some dotted keys changed (through `load_config`'s override path, so that the change
    is validated and `raw` stays consistent); the benchmark's group split is kept."""
    from unet3d.config.load import apply_overrides, parse_config

    assert config.source is not None
    raw = apply_overrides(config.raw, overrides)
    changed = parse_config(raw, base=config.source.parent, source=config.source)
    return dataclasses.replace(changed, groups=config.groups)


def amp_label(amp: bool | str, device: torch.device) -> str:
    dtype = amp_dtype(amp, device, warn=False)
    return "fp32" if dtype is None else "AMP bf16" if dtype == torch.bfloat16 else "AMP fp16"


# --------------------------------------------------------------------------------------------------------------------
# (b) cache effect, and the per-transform breakdown of loading


def brats_scale_config(folder: Path, n_cases: int, shape: int, n_validation: int) -> Path:
    """Synthetic BraTS-like cases (each axis 140-160 voxels for 128^3 inputs) and a config with the brats2020
    fixture's network, loss, optimizer and preprocessing (3DUnetCNN examples/brats2020/brats2020_config.json)."""
    low, high = round(shape * 140 / 128), round(shape * 160 / 128)
    config_path = folder / "brats_scale_config.json"
    if config_path.exists():
        return config_path
    print(f"writing {n_cases} synthetic cases of {low}-{high} voxels per axis to {folder}", file=sys.stderr)
    entries = write_dataset(folder, n_cases, seed=2020, shape_range=(low, high), prefix="brats")
    levels = 6
    config = {
        "model": {
            "name": "DynUNet",
            "in_channels": 4,
            "out_channels": 3,
            "spatial_dims": 3,
            "deep_supervision": False,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (levels - 1),
            "filters": [64, 96, 128, 192, 256, 384],
            "kernel_size": [[3, 3, 3]] * levels,
            "upsample_kernel_size": [[2, 2, 2]] * (levels - 1),
        },
        "optimizer": {"name": "Adam", "lr": 0.001},
        "loss": {"name": "GeneralizedDiceLoss", "include_background": False, "sigmoid": True},
        "scheduler": {"name": "ReduceLROnPlateau", "patience": 10, "factor": 0.5, "min_lr": 1e-08},
        "dataset": {
            "name": "SegmentationDatasetPersistent",
            "desired_shape": [shape] * 3,
            # The fixture's BraTS labels; the synthetic cases use the BraTS values 2 (edema), 1 (core), 4 (enhancing).
            "labels": [2, 1, 4],
            "setup_label_hierarchy": True,
            "normalization": "NormalizeIntensityD",
            "normalization_kwargs": {"channel_wise": True, "nonzero": False},
            "resample": True,
            "crop_foreground": True,
        },
        "training": {"batch_size": 1, "validation_batch_size": 1, "amp": False, "n_epochs": 250, "save_best": True},
        "training_filenames": entries[: n_cases - n_validation],
        "validation_filenames": entries[n_cases - n_validation :],
    }
    config_path.write_text(json.dumps(config, indent=2))
    return config_path


# --------------------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------------------


def amp_settings(choice: str | None, config: Config, device: torch.device, notes: list[str]) -> list[bool | str]:
    """`training.amp` values to benchmark. unet3d ignores AMP on the CPU: there only full precision is measured."""
    configured = config.training.amp or True  # "on" keeps a configured 'bf16'/'fp16', else fp16 with a scaler
    if choice is None:
        choice = "on" if config.training.amp else "off"
    wanted: list[bool | str] = {"on": [configured], "off": [False], "both": [False, configured]}[choice]
    if amp_dtype(configured, device, warn=False) is None and any(wanted):
        notes.append(f"--amp {choice}: AMP is ignored on the {device.type} in unet3d; measured in full precision")
        return [False]
    return wanted
