"""What the network sees, written as NIfTI (unet3d/data/examples.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from tests.data.conftest import PATCHES, _chain
from unet3d.config.cases import parse_cases
from unet3d.data.datasets import case_items, make_dataset
from unet3d.data.examples import write_examples
from unet3d.data.synthetic import write_dataset


def test_examples_keep_the_case_geometry_with_a_filled_cache_and_take_the_first_patch(tmp_path: Path):
    entries = write_dataset(tmp_path / "data", 1, seed=6, shape_range=(16, 16))
    cases = parse_cases(entries, tmp_path / "data", "training_filenames")
    transform = _chain(spatial_augmentations=[PATCHES])
    dataset = make_dataset(case_items(cases, True), transform, "disk", tmp_path / "cache")
    dataset[0]  # the cache now holds the case as plain tensors, without its affine
    write_examples(dataset, tmp_path / "examples", 1)
    image = nib.load(tmp_path / "examples" / "input_test_0.nii.gz")
    target = nib.load(tmp_path / "examples" / "target_test_0.nii.gz")
    assert image.shape == (8, 8, 8, 4) and target.shape == (8, 8, 8, 3)
    original = nib.load(cases[0].images[0])
    np.testing.assert_allclose(np.abs(np.linalg.det(image.affine[:3, :3])), np.prod(original.header.get_zooms()[:3]))
    assert not np.allclose(image.affine, np.eye(4))
