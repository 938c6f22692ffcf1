"""Tests for the foreground that a case is cropped to (unet3d/data/foreground.py)."""

import torch

from unet3d.data.foreground import FOREGROUND_TOLERANCE, _numpy_quantile, foreground_above_percentile


def test_a_constant_image_is_cropped_to_the_whole_volume_not_to_nothing():
    mask = foreground_above_percentile(torch.zeros(2, 4, 5, 6), 0.1)
    assert mask.shape == (1, 4, 5, 6) and bool(mask.all())


def test_a_ct_background_of_minus_1000_with_resampling_dust_is_not_foreground():
    image = torch.full((1, 10, 12, 8), -1000.0)
    image[0, 3:6, 4:9, 2:5] = 40.0
    image[0, 0, 0, 0] = -1000.0 + 1e-4  # interpolation dust, far below the tolerance of the 1040 HU range
    mask = foreground_above_percentile(image, 0.0)
    assert torch.equal(mask[0], image[0] > -500)
    assert 1e-4 < FOREGROUND_TOLERANCE * 1040


def test_a_voxel_is_foreground_when_any_channel_is_above_its_own_quantile():
    image = torch.zeros(2, 6, 6, 6)
    image[0, 1, 1, 1] = 5.0
    image[1, 4, 4, 4] = -3.0  # a channel whose background is higher than its content
    image[1] += 10.0
    mask = foreground_above_percentile(image, 0.0)[0]
    assert bool(mask[1, 1, 1]) and not bool(mask[4, 4, 4])
    assert int(mask.sum()) == 6**3 - 1  # channel 1's quantile 0 is 7: every voxel but its minimum is above it


def test_the_fast_quantile_agrees_with_torch():
    flat = torch.randn(3, 5000, generator=torch.Generator().manual_seed(1)) * 100 - 1000
    for q in (0.0, 0.005, 0.5, 0.995):
        assert torch.allclose(_numpy_quantile(flat, q), torch.quantile(flat, q, 1), atol=1e-3)
