"""The automatic choice between the in-memory and the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet3d.config.load import parse_cases
from unet3d.data.datasets import MEMORY_SHARE, automatic_cache, preprocessed_bytes
from unet3d.data.synthetic import write_dataset


def test_memory_when_the_cases_fit_in_a_quarter_of_the_available_memory():
    assert MEMORY_SHARE == 0.25
    assert automatic_cache(250, 1000) == "memory"
    assert automatic_cache(251, 1000) == "disk"
    assert automatic_cache(10, 0) == "disk", "unknown available memory: the disk is the safe choice"


def test_size_estimate_from_the_desired_shape_or_the_image_headers(tmp_path: Path):
    entries = write_dataset(tmp_path, 2, seed=1, shape_range=(16, 20))
    cases = parse_cases(entries, tmp_path, "training_filenames")
    assert preprocessed_bytes(cases, [16, 16, 16], 3) == 2 * 16**3 * (4 + 3) * 4
    import nibabel as nib

    voxels = sum(int(np.prod(nib.load(str(case.images[0])).shape)) for case in cases)
    assert preprocessed_bytes(cases, None, 3) == voxels * 7 * 4
