"""Predictions back in each case's original space, as label maps with the original label values.

The preprocessing chain records every spatial step (reorientation, crop, resize, pad); inverting it maps the
probabilities onto the voxel grid of the case's first image. Channels are then decoded to label values: sigmoid
channels are thresholded, a softmax is arg-maxed, and nested regions (`setup_label_hierarchy`) are painted from the
outermost to the innermost, so BraTS regions [2, 1, 4] come back as the labels 0/2/1/4.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from unet3d.errors import DataError

AFFINE_TOLERANCE = 1e-3


def decode(
    probabilities: torch.Tensor,
    groups: Sequence[tuple[int, ...]],
    activation: str,
    hierarchy: bool,
    threshold: float = 0.5,
) -> torch.Tensor:
    """(C, *spatial) probabilities → (*spatial) integer label map with the config's label values.

    A channel that stands for several values (a nested list in `labels`) is written as its first value.
    softmax: channel 0 is background, channel i the i-th label group. sigmoid with a hierarchy: each channel above
    the threshold overwrites the outer ones. sigmoid without a hierarchy: the most probable channel above the
    threshold wins.
    """
    values = torch.tensor([0] + [group[0] for group in groups], dtype=torch.int16)
    if activation == "softmax":
        return values[probabilities.argmax(0)]
    above = probabilities > threshold
    if hierarchy:
        label_map = torch.zeros(probabilities.shape[1:], dtype=torch.int16)
        for index, group in enumerate(groups):
            label_map[above[index]] = group[0]
        return label_map
    scores = torch.where(above, probabilities, torch.zeros_like(probabilities))
    winner = scores.argmax(0) + 1
    winner[~above.any(0)] = 0
    return values[winner]


def to_original_space(probabilities: torch.Tensor, preprocessed: MetaTensor, transform: Compose) -> MetaTensor:
    """Invert the spatial steps recorded on the preprocessed image, applied to (C, *spatial) probabilities."""
    output = MetaTensor(
        probabilities.detach().cpu(),
        meta=dict(preprocessed.meta),
        applied_operations=list(preprocessed.applied_operations),
    )
    return transform.inverse({"image": output})["image"]


def check_geometry(array_shape: Sequence[int], affine: np.ndarray, reference: Path) -> nib.spatialimages.SpatialImage:
    """The reference image, after checking that a prediction has its spatial shape and affine."""
    image = nib.load(str(reference))
    shape = tuple(image.shape[: len(array_shape)])
    if tuple(array_shape) != shape or not np.allclose(affine, image.affine, atol=AFFINE_TOLERANCE):
        raise DataError(
            f"{reference}: the prediction's geometry {tuple(array_shape)} does not match the image "
            f"{shape}; this is a bug in the inversion of the preprocessing"
        )
    return image


def write_label_map(path: Path, label_map: torch.Tensor, reference: nib.spatialimages.SpatialImage) -> None:
    """Write a label map (uint8 when the values fit, else int16) with the reference image's affine and header."""
    array = label_map.cpu().numpy()
    dtype = np.uint8 if array.min() >= 0 and array.max() <= 255 else np.int16
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    image = nib.Nifti1Image(array.astype(dtype), reference.affine, header)
    image.header.set_slope_inter(1, 0)
    _save(image, path)


PROBABILITY_STEPS = 255


def write_probabilities(path: Path, probabilities: torch.Tensor, reference: nib.spatialimages.SpatialImage) -> None:
    """Write (C, *spatial) probabilities with the channels last, in the reference's space.

    NIfTI-1 has no float16, so values are stored as uint8 with a scale factor of 1/255 (a resolution of 0.004, half
    the size of float16); nibabel's `get_fdata()` and every viewer read them back as floats in [0, 1].
    """
    array = np.moveaxis(probabilities.cpu().numpy(), 0, -1)
    stored = np.clip(np.round(array * PROBABILITY_STEPS), 0, PROBABILITY_STEPS).astype(np.uint8)
    image = nib.Nifti1Image(stored, reference.affine)
    image.header.set_slope_inter(1.0 / PROBABILITY_STEPS, 0.0)
    _save(image, path)


def _save(image: nib.Nifti1Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    nib.save(image, str(tmp))
    tmp.replace(path)
