"""`unet3d-plan` as a library function: a data set in → a config, its fingerprint and a data report out.

The planned config is an ordinary config in the 3DUnetCNN schema (readable, editable, and `unet3d-train` runs it
unchanged). It refers to a public-layout data set instead of copying it (`training_filenames` names its folder,
relative to the config); a case list's cases are written into it with paths relative to the config. Its `planned`
section holds the reason for each choice; nothing reads it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet3d.atomic import atomic_write_json, atomic_write_text, check_writable
from unet3d.config.cases import Case, parse_cases
from unet3d.config.layouts import Layout, dataset_json_of, read_layout
from unet3d.config.load import parse_config
from unet3d.config.regions import declared_values
from unet3d.data.checks import check_cases
from unet3d.data.image_io import image_format
from unet3d.devices import planned_kind
from unet3d.errors import ConfigError, DataError
from unet3d.output_guard import Inputs, check_outputs
from unet3d.planning import rules
from unet3d.planning.fingerprint import CaseFingerprint, fingerprint_cases, summarize
from unet3d.planning.report import render
from unet3d.preflight import check_experiment
from unet3d.version import __version__

log = logging.getLogger("unet3d")
FINGERPRINT_SUFFIX = ".fingerprint.json"  # beside the config, named after it: two plans in one folder keep both
REPORT_SUFFIX = ".data_report.txt"


@dataclass(frozen=True)
class Plan:
    """What `plan_experiment` wrote: the config (as JSON data), its reasons, and the report's text."""

    config: dict[str, Any]
    rules: dict[str, str]
    report: str
    config_path: Path


OUTPUT_BIAS_PRIOR = 0.01  # sigmoid regions; see unet3d.models.initialize_output_bias and benchmarks/nnunet_parity.py


def _label_spec(layout: Layout | None, cases: Sequence[CaseFingerprint]) -> tuple[list[Any], bool, str]:
    if layout is not None:
        kind = "regions nested in a chain" if layout.hierarchy else "exclusive classes"
        return list(layout.labels), layout.hierarchy, f"{kind} from the data set's labels {layout.label_names}"
    values = sorted({int(v) for case in cases for v in case.label_voxels})
    if not values:
        raise DataError("every label map is empty: there is nothing to plan a segmentation for")
    return values, False, f"label values found in the label maps {values}, taken as exclusive classes"


def _loss(hierarchy: bool) -> tuple[dict[str, Any], str]:
    if hierarchy:
        return (
            {"name": "DiceFocalLoss", "sigmoid": True, "include_background": True, "batch": True, "gamma": 0.0},
            "nested regions overlap: one sigmoid channel per region, batch Dice + binary cross-entropy (focal with "
            "gamma 0)",
        )
    return (
        {"name": "DiceCELoss", "softmax": True, "include_background": False, "batch": True},
        "exclusive classes: softmax over background and classes, batch Dice + cross-entropy",
    )


MAX_SAMPLED_VALUE = 255  # label values up to this get nnU-Net's per-class sampling (one weight per value)


def _patch_sampler(patch: list[int], values: Sequence[int]) -> tuple[dict[str, Any], str]:
    """nnU-Net's oversampling: a third of the patches centred on a voxel of one foreground label value, drawn
    uniformly among those the case holds (so a small organ is the centre as often as a large one), the others on the
    background. For nested regions the raw values are drawn, as nnU-Net does with regions."""
    foreground = sorted({int(v) for v in values} - {0})
    if not foreground or max(foreground) > MAX_SAMPLED_VALUE:
        crop = {"name": "RandCropByPosNegLabeld", "label_key": "label", "spatial_size": patch, "pos": 1, "neg": 2}
        return {**crop, "num_samples": 1, "allow_smaller": True}, "a third centred on foreground (pos 1 : neg 2)"
    ratios = [0] * (max(foreground) + 1)
    ratios[0] = 2 * len(foreground)
    for value in foreground:
        ratios[value] = 1
    crop = {
        "name": "RandCropByLabelClassesd",
        "label_key": "label",
        "spatial_size": patch,
        "ratios": ratios,
        "num_classes": len(ratios),
        "num_samples": 1,
        "allow_smaller": True,
        "warn": False,  # a case without one of the values: its share goes to the others
    }
    return crop, (
        f"a third centred on a voxel of one label value drawn uniformly among {foreground} (nnU-Net's oversampling: "
        "a small structure is a patch's centre as often as a large one), the others on the background"
    )


def _augmentations(patch: list[int], coarse_axis: int | None, crop: dict[str, Any]) -> list[dict[str, Any]]:
    rotation = [0.5236 if coarse_axis in (None, axis) else 0.0 for axis in range(3)]
    return [
        crop,
        {"name": "SpatialPadd", "spatial_size": patch},
        {"name": "RandAffined", "prob": 0.2, "rotate_range": rotation, "padding_mode": "zeros"},
        {"name": "RandAffined", "prob": 0.2, "scale_range": [[-0.3, 0.4]] * 3, "padding_mode": "zeros"},
        *({"name": "RandFlipd", "spatial_axis": axis, "prob": 0.5} for axis in range(3)),
    ]


INTENSITY_AUGMENTATIONS = [
    {"name": "RandGaussianNoised", "prob": 0.1, "mean": 0.0, "std": 0.1},
    {"name": "RandGaussianSmoothd", "prob": 0.2, "sigma_x": [0.5, 1.0], "sigma_y": [0.5, 1.0], "sigma_z": [0.5, 1.0]},
    {"name": "RandScaleIntensityd", "prob": 0.15, "factors": 0.25},
    {"name": "RandAdjustContrastd", "prob": 0.15, "gamma": [0.7, 1.5], "retain_stats": True},
]


def build_config(
    cases: Sequence[CaseFingerprint],
    layout: Layout | None,
    profile: rules.Profile,
    n_folds: int = 5,
    spacing: list[float] | None = None,
) -> tuple[dict[str, Any], dict[str, str], list[int]]:
    """The planned config (without its file lists), the reason for each choice keyed by config key, and the channels
    planned as CT."""
    crop = all(
        float(np.median([c.channels[i].zero_fraction for c in cases])) > 0.2 for i in range(len(cases[0].channels))
    )
    shapes = [c.shape_after_crop() if crop else c.shape for c in cases]
    labels, hierarchy, label_reason = _label_spec(layout, cases)
    try:
        geometry = rules.plan_geometry([c.spacing for c in cases], shapes, profile, spacing, len(labels) + 1)
    except rules.PlanError as error:
        raise ConfigError(str(error)) from None
    spacing, network, lowres, reasons = geometry.spacing, geometry.network, geometry.low_resolution, geometry.reasons
    reasons["model"] = (
        f"DynUNet, {len(network.strides)} levels (nnU-Net's topology): each axis halved while its spacing is under "
        f"2x the finest and its feature map stays >= {rules.MIN_FEATURE_MAP} voxels; kernels 1 across thick slices; "
        f"filters {network.filters} ({profile.device} profile)"
    )
    reasons["dataset.labels"] = label_reason
    loss, reasons["loss"] = _loss(hierarchy)
    names = layout.channel_names if layout is not None else [None] * len(cases[0].channels)
    summary = summarize(cases)
    channels = [
        {
            "image_p00_5": float(np.median([c.channels[i].image_p00_5 for c in cases])),
            "zero_fraction": float(np.median([c.channels[i].zero_fraction for c in cases])),
            "air_cases": [c.case_id for c in cases if c.channels[i].image_p00_5 < rules.AIR_HU],
            "other_cases": [c.case_id for c in cases if c.channels[i].image_p00_5 >= rules.AIR_HU],
        }
        for i in range(len(names))
    ]
    normalization, kwargs, reasons["dataset.normalization"] = rules.normalization_schemes(
        names, channels, summary["foreground_intensities"]
    )
    ct_channels = [i for i, (n, c) in enumerate(zip(names, channels, strict=True)) if rules.is_ct(n, c)[0]]
    reasons["dataset.crop_foreground"] = (
        "every channel has a zeroed background: crop to the foreground"
        if crop
        else "a channel has no zeroed background (e.g. CT air): the whole image is kept"
    )
    anisotropic = max(spacing) / min(spacing) > rules.ANISOTROPY
    coarse = int(np.argmax(spacing)) if anisotropic else None
    values = declared_values(layout.labels) if layout is not None else {int(v) for c in cases for v in c.label_voxels}
    sampler, sampling = _patch_sampler(network.patch, sorted(values))
    reasons["augmentation"] = (
        f"random patches, {sampling}; rotations "
        + (f"only about the coarse axis {coarse} (in-plane)" if anisotropic else "about every axis")
        + ", scaling, flips, noise, blur, brightness and contrast"
    )
    n_folds = min(n_folds, len(cases))
    depth = len(network.strides)
    out_channels = len(labels) + (0 if hierarchy else 1)
    config: dict[str, Any] = {
        "model": {
            "name": "DynUNet",
            "spatial_dims": 3,
            "in_channels": len(names),
            "out_channels": out_channels,
            "kernel_size": network.kernels,
            "strides": network.strides,
            "upsample_kernel_size": network.strides[1:],
            "filters": network.filters,
            "norm_name": "instance",
            "deep_supervision": depth > 2,
            **({"deep_supr_num": min(2, depth - 2)} if depth > 2 else {}),
        },
        "loss": loss,
        "optimizer": {"name": "SGD", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5},
        "scheduler": {"name": "PolynomialLR", "power": 0.9, "total_iters": profile.n_epochs},
        "inference": {
            "name": "SlidingWindowInferer",
            "roi_size": network.patch,
            "overlap": 0.5,
            "mode": "gaussian",
            "sw_batch_size": 2,
        },
        "cross_validation": {"n_folds": n_folds, "random_seed": 12345},
        "dataset": {
            "name": "SegmentationDataset",
            "labels": labels,
            "setup_label_hierarchy": hierarchy,
            "orientation": "RAS",
            "spacing": spacing,
            "crop_foreground": crop,
            "resample": False,
            "normalization": normalization,
            "normalization_kwargs": kwargs,
            "training": {
                "spatial_augmentations": _augmentations(network.patch, coarse, sampler),
                "intensity_augmentations": INTENSITY_AUGMENTATIONS,
            },
        },
        "training": {
            "n_epochs": profile.n_epochs,
            "batch_size": network.batch_size,
            "iterations_per_epoch": profile.iterations_per_epoch,
            "gradient_clip": 12.0,
            **({"output_bias_prior": OUTPUT_BIAS_PRIOR} if hierarchy else {}),
            "amp": profile.device == "accelerator",
            "save_best": True,
            "select_by": "val_loss",
        },
    }
    reasons["training"] = (
        f"{profile.n_epochs} epochs x {profile.iterations_per_epoch} batches of {network.batch_size}, SGD 0.01 "
        "(Nesterov 0.99) with polynomial decay per epoch, gradients clipped at 12"
        + (", mixed precision" if profile.device == "accelerator" else "")
        + (
            f"; every region starts at probability {OUTPUT_BIAS_PRIOR} (output_bias_prior), so that small regions "
            "are not switched off by the first steps"
            if hierarchy
            else ""
        )
        + "; the best model is the lowest val_loss (select_by): on the real-CT recipe it kept a better epoch than "
        "the moving average of val_dice or the last epoch (benchmarks/results/select_by_real_ct.md)"
    )
    reasons["cross_validation"] = f"{n_folds} folds"
    config["planned"] = {"median_shape": [round(n, 1) for n in geometry.median_shape]}
    if lowres is not None:  # for a script that plans it next (see reasons["resolution"])
        config["planned"]["low_resolution"] = {"spacing": lowres.spacing, "patch": lowres.network.patch}
    return config, reasons, ct_channels


def _relative_case(entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    entry["image"] = [os.path.relpath(p, folder) for p in entry["image"]]
    if "label" in entry:
        entry["label"] = os.path.relpath(entry["label"], folder)
    return entry


def _cases_of(dataset: Path) -> tuple[Layout | None, list[Case]]:
    if dataset_json_of(dataset) is not None:
        layout = read_layout(dataset, "--dataset")
        return layout, parse_cases(layout.training, dataset, "--dataset")
    return None, parse_cases(str(dataset), dataset.parent, "--dataset")  # a list's paths: relative to its folder


def _data_set_files(dataset: Path, layout: Layout | None, cases: Sequence[Case]) -> Inputs:
    """Every file of the data set being planned: its description (dataset.json, or the case list) and the images
    and labels of its training and test cases."""
    inputs = Inputs().add(dataset_json_of(dataset) or dataset, f"the description of the data set {dataset}")
    inputs.add_cases(cases, f"the data set {dataset}")
    if layout is not None and layout.test:
        inputs.add_cases(parse_cases(layout.test, dataset, "--dataset"), f"the data set {dataset} (test cases)")
    return inputs


def plan_experiment(
    dataset: str | Path,
    config_filename: str | Path,
    gpu_memory_gb: float = 8.0,
    device: str = "cuda",
    n_folds: int = 5,
    n_threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    spacing: Sequence[float] | None = None,
) -> Plan:
    """Check every file of the data set (MSD or nnU-Net v2 folder, or a JSON/.npy case list), fingerprint it, plan a
    config for it, check the config as `unet3d-train` would, and write it with `<name>.fingerprint.json` and
    `<name>.data_report.txt` beside it. None of the three replaces a file of the data set (`--overwrite` never
    extends to those), and an existing one is replaced only with `overwrite` (see `unet3d.output_guard`)."""
    dataset, out = Path(dataset).expanduser().resolve(), Path(config_filename).expanduser().resolve()
    device = planned_kind(device)
    if spacing is not None and (len(spacing) != 3 or not all(v > 0 for v in spacing)):
        raise ConfigError(f"--spacing: expected three positive numbers (mm), got {list(spacing)}")
    if not gpu_memory_gb > 0:
        raise ConfigError(f"--gpu_memory_gb: expected a positive number, got {gpu_memory_gb}")
    if n_folds < 2:
        raise ConfigError(f"--n_folds: expected at least 2, got {n_folds}")
    layout, cases = _cases_of(dataset)
    outputs = {
        out: "the planned config",
        out.parent / (out.stem + FINGERPRINT_SUFFIX): "the data set's fingerprint",
        out.parent / (out.stem + REPORT_SUFFIX): "the data report",
    }
    check_outputs(outputs, _data_set_files(dataset, layout, cases), replace=overwrite)
    labelled = [case for case in cases if case.label is not None]
    if len(labelled) < 2:
        raise DataError(f"{dataset}: {len(labelled)} labelled case(s); planning a cross-validation needs at least 2")
    if any(image_format(case.images[0]) == "picture" for case in labelled):
        raise DataError(f"{dataset}: unet3d-plan plans 3D volumes; write a 2D config by hand (examples/carvana_2d)")
    declared = declared_values(layout.labels) if layout is not None else None  # dataset.json's, else any
    check_cases({"training": labelled}, declared, 3, ("training",), n_threads or 4)  # every file, before statistics
    check_writable(out.parent)  # a read-only folder is one line now, not after the statistics
    fingerprints = fingerprint_cases(labelled, n_threads, progress)
    flat = [f for f in fingerprints if min(f.shape) == 1]
    if flat:
        raise DataError(
            f"{dataset}: {len(flat)} of {len(fingerprints)} cases are a single slice ({flat[0].case_id}: shape "
            f"{flat[0].shape}); unet3d-plan plans 3D volumes: write a 2D config by hand (examples/carvana_2d)"
        )
    profile = rules.profile_for("cpu" if device == "cpu" else "accelerator", gpu_memory_gb)
    given = None if spacing is None else [float(v) for v in spacing]
    config, reasons, ct_channels = build_config(fingerprints, layout, profile, n_folds, given)
    source = os.path.relpath(dataset, out.parent)
    if layout is not None:
        config["training_filenames"] = source
        if layout.test:
            config["test_filenames"] = source
    else:  # a case list is copied, its paths made relative to the config (a config reads lists relative to itself)
        config["training_filenames"] = [_relative_case(case.to_json(), out.parent) for case in cases]
    config["planned"] = {
        "by": f"unet3d-plan {__version__}",
        "device": device,
        "gpu_memory_gb": gpu_memory_gb,
        "fingerprint": out.stem + FINGERPRINT_SUFFIX,
        "rules": reasons,
        **config.get("planned", {}),
    }
    check_experiment(parse_config(json.loads(json.dumps(config)), base=out.parent, source=out))
    report = render(fingerprints, reasons, ct_channels)
    out.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = {
        "dataset": str(dataset),
        "channel_names": layout.channel_names if layout is not None else None,
        "summary": summarize(fingerprints),
        "cases": [f.to_json() for f in fingerprints],
    }
    atomic_write_json(out.parent / (out.stem + FINGERPRINT_SUFFIX), fingerprint)
    atomic_write_text(out.parent / (out.stem + REPORT_SUFFIX), report)
    atomic_write_json(out, config)
    return Plan(config, reasons, report, out)
