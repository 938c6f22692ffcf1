"""Predictions back in each case's original space, as label maps with the original label values.

The preprocessing chain records every spatial step (reorientation, crop, resize, pad); inverting it maps the
probabilities onto the voxel grid of the case's first image. Channels are then decoded to label values by
`unet3d.data.labels.decode` (nested regions stay nested: BraTS regions [2, 1, 4] come back as the labels 0/2/1/4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from unet3d.atomic import atomic_save
from unet3d.data import image_io
from unet3d.errors import DataError
from unet3d.formats import AFFINE_TOLERANCE


def to_original_space(probabilities: torch.Tensor, preprocessed: MetaTensor, transform: Compose) -> MetaTensor:
    """Invert the spatial steps recorded on the preprocessed image, applied to (C, *spatial) probabilities."""
    output = MetaTensor(
        probabilities.detach().cpu(),
        meta=dict(preprocessed.meta),
        applied_operations=list(preprocessed.applied_operations),
    )
    return transform.inverse({"image": output})["image"]


def check_geometry(array_shape: Sequence[int], affine: np.ndarray, reference: Path) -> None:
    """Check that a prediction has the spatial shape and affine of its reference image."""
    header = image_io.read_header(reference)
    shape = tuple(header.shape[: len(array_shape)])
    size = min(len(affine), len(header.affine))
    if tuple(array_shape) != shape or not np.allclose(
        np.asarray(affine)[:size, :size], header.affine[:size, :size], atol=AFFINE_TOLERANCE
    ):
        raise DataError(
            f"{reference}: the prediction's geometry {tuple(array_shape)} does not match the image "
            f"{shape}; this is a bug in the inversion of the preprocessing"
        )


def write_label_map(path: Path, label_map: torch.Tensor, reference: Path) -> None:
    """Write a label map in `path`'s format with the reference image's geometry (see `image_io.write_label_map`)."""
    image_io.write_label_map(path, label_map.cpu().numpy(), reference)


PROBABILITY_STEPS = 255


def write_probabilities(path: Path, probabilities: torch.Tensor, reference: Path) -> None:
    """Write (C, *spatial) probabilities as NIfTI (whatever the input format), channels last, in the reference's space.

    NIfTI-1 has no float16, so values are stored as uint8 with a scale factor of 1/255 (a resolution of 0.004, half
    the size of float16); nibabel's `get_fdata()` and every viewer read them back as floats in [0, 1].
    """
    array = np.moveaxis(probabilities.cpu().numpy(), 0, -1)
    stored = np.clip(np.round(array * PROBABILITY_STEPS), 0, PROBABILITY_STEPS).astype(np.uint8)
    image = nib.Nifti1Image(stored, image_io.nifti_affine(image_io.read_header(reference).affine))
    image.header.set_slope_inter(1.0 / PROBABILITY_STEPS, 0.0)
    atomic_save(path, lambda tmp: nib.save(image, tmp))
