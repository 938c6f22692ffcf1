"""Write a few preprocessed training examples as NIfTI, so users can see exactly what the network sees."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose


def _to_nifti(tensor: torch.Tensor) -> nib.Nifti1Image:
    """(C, *spatial) → a NIfTI image with the channels last, using the tensor's affine when it carries one."""
    affine = np.asarray(tensor.affine) if hasattr(tensor, "affine") else np.eye(4)
    array = np.moveaxis(torch.as_tensor(tensor).detach().cpu().numpy().astype(np.float32), 0, -1)
    return nib.Nifti1Image(array, affine)


def write_examples(dataset: Dataset, folder: Path, n: int, transform: Compose | None = None) -> Path:
    """`input_test_{i}.nii.gz` and `target_test_{i}.nii.gz` for the first n items (with their augmentations).

    The items run through the whole chain (`transform`, else the dataset's), not the cache, so they keep their
    geometry. A crop that yields several patches per case writes the first."""
    folder.mkdir(parents=True, exist_ok=True)
    chain = transform if transform is not None else dataset.transform
    for i in range(min(n, len(dataset))):
        item = chain(dict(dataset.data[i]))
        if isinstance(item, list):
            item = item[0]
        nib.save(_to_nifti(item["image"]), folder / f"input_test_{i}.nii.gz")
        nib.save(_to_nifti(item["label"]), folder / f"target_test_{i}.nii.gz")
    return folder
