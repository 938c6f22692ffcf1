"""Helpers of the data tests: a labelled transform chain (with optional patch crops) as a dataset section gives it."""

from __future__ import annotations

from typing import Any

from monai.transforms import Compose

from unet3d.config.fields import parse_section
from unet3d.config.schema import DatasetConfig
from unet3d.data.transforms import build_transforms

PATCHES = {
    "name": "RandCropByPosNegLabeld",
    "label_key": "label",
    "spatial_size": [8, 8, 8],
    "pos": 1,
    "neg": 1,
    "num_samples": 2,
}


def _chain(**dataset_keys: Any) -> Compose:
    """The training chain (augmentations on) of a dataset section with labels [1, 2, 4] and `dataset_keys`."""
    dataset = parse_section(DatasetConfig, {"labels": [1, 2, 4], **dataset_keys}, "dataset")
    return build_transforms(dataset, with_label=True, softmax=False, augment=True)
