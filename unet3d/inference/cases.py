"""Predict a list of cases into a folder: one `<case_id>.nii.gz` label map per case in its original space."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from unet3d.config.schema import Case, Config
from unet3d.data.datasets import case_items
from unet3d.data.labels import channel_groups
from unet3d.data.transforms import build_transforms, split_dataset_config
from unet3d.inference.export import check_geometry, decode, to_original_space, write_label_map, write_probabilities
from unet3d.inference.predict import Predictor

log = logging.getLogger("unet3d")
PROBABILITY_SUFFIX = "_probabilities.nii.gz"


def prediction_path(folder: Path, case: Case) -> Path:
    """Where a case's label map goes: `<folder>/<case_id>.nii.gz` (case ids are unique within a group)."""
    return folder / f"{case.case_id}.nii.gz"


def predict_cases(
    predictor: Predictor,
    config: Config,
    cases: Sequence[Case],
    folder: Path,
    save_probabilities: bool = False,
    threshold: float = 0.5,
    description: str = "predict",
) -> list[Path]:
    """Preprocess each case as for validation, predict, invert to the original space, decode and write."""
    dataset = split_dataset_config(config.dataset, config.raw.get("dataset", {}), "validation")
    transform = build_transforms(dataset, with_label=False, softmax=predictor.activation == "softmax", augment=False)
    groups = channel_groups(config.labels, config.dataset.setup_label_hierarchy)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for case, item in tqdm(
        list(zip(cases, case_items(cases, with_label=False), strict=True)), desc=description, unit="case", disable=None
    ):
        image = transform(item)["image"]
        probabilities = predictor.probabilities(image.unsqueeze(0).as_tensor())[0]
        if predictor.activation == "softmax" and probabilities.shape[0] != len(groups) + 1:
            raise RuntimeError(f"model returns {probabilities.shape[0]} channels, expected {len(groups) + 1}")
        original = to_original_space(probabilities, image, transform)
        reference = check_geometry(original.shape[1:], original.affine.numpy(), case.images[0])
        label_map = decode(
            torch.as_tensor(original), groups, predictor.activation, config.dataset.setup_label_hierarchy, threshold
        )
        path = prediction_path(folder, case)
        write_label_map(path, label_map, reference)
        if save_probabilities:
            write_probabilities(folder / f"{case.case_id}{PROBABILITY_SUFFIX}", torch.as_tensor(original), reference)
        written.append(path)
    log.info("wrote %d label maps to %s", len(written), folder)
    return written
