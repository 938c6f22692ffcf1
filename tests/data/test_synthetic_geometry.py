"""The geometry of synthetic cases (unet3d/data/synthetic_geometry.py): orientation codes and random affines."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from unet3d.data.synthetic_geometry import ORIENTATIONS, random_affine


def test_random_affine_default_and_invalid():
    rng = np.random.default_rng(0)
    codes = {"".join(nib.aff2axcodes(random_affine((1.0, 1.0, 2.0), rng))) for _ in range(40)}
    assert codes == set(ORIENTATIONS)
    origins = {tuple(random_affine((1.0, 1.0, 1.0), rng, "RAS")[:3, 3]) for _ in range(5)}
    assert len(origins) == 5  # random origin offset
    for bad in ["RRS", "RA", "XYZ", "RASL"]:
        with pytest.raises(ValueError):
            random_affine((1.0, 1.0, 1.0), rng, bad)
    with pytest.raises(ValueError):
        random_affine((1.0, 0.0, 1.0), rng)


def test_oblique_axes_keep_the_spacing_and_stay_orthogonal():
    spacing = (0.8, 1.2, 5.0)
    straight = random_affine(spacing, np.random.default_rng(1), "LPS")
    oblique = random_affine(spacing, np.random.default_rng(1), "LPS", oblique_degrees=20.0)
    for affine in (straight, oblique):
        np.testing.assert_allclose(affine[:3, :3].T @ affine[:3, :3], np.diag(np.square(spacing)), atol=1e-9)
        np.testing.assert_array_equal(affine[3], [0, 0, 0, 1])
    assert np.count_nonzero(straight[:3, :3]) == 3  # a flipped, permuted diagonal
    assert np.count_nonzero(np.abs(oblique[:3, :3]) > 1e-6) > 3  # tilted: not a permuted diagonal
    angles = np.degrees(np.arccos(np.clip(np.sum(straight[:3, :3] * oblique[:3, :3], 0) / np.square(spacing), -1, 1)))
    assert np.isclose(angles, 20.0).sum() == 2 and np.isclose(angles, 0.0).sum() == 1  # turned about one axis
