"""unet3d's own intensity normalizations (unet3d/normalization.py): the CT scheme and per-channel schemes."""

import pytest
import torch
from monai.data import MetaTensor

from unet3d.config.schema import DatasetConfig
from unet3d.data.transforms import normalization_transform
from unet3d.errors import ConfigError
from unet3d.normalization import ChannelNormalized, CTNormalized
from unet3d.registry import lookup


def test_ct_clips_to_the_range_then_uses_the_stored_statistics():
    image = MetaTensor(torch.tensor([[[[-3000.0, -1000.0, 40.0, 3000.0]]]]), affine=torch.diag(torch.tensor([2.0] * 4)))
    out = CTNormalized("image", lower=-1000, upper=1000, mean=40.0, std=10.0)({"image": image})["image"]
    assert out.flatten().tolist() == [-104.0, -104.0, 0.0, 96.0]
    assert isinstance(out, MetaTensor) and out.affine[0, 0] == 2.0  # the geometry travels on


def test_one_scheme_per_channel():
    image = torch.stack([torch.tensor([-2000.0, 0.0, 100.0]), torch.tensor([0.0, 1.0, 3.0])]).reshape(2, 3, 1, 1)
    schemes = [
        {"scheme": "ct", "lower": -1000, "upper": 50, "mean": 0, "std": 50},
        {"scheme": "zscore", "nonzero": True},
    ]
    out = ChannelNormalized("image", schemes)({"image": image})["image"]
    assert out[0].flatten().tolist() == [-20.0, 0.0, 1.0]
    assert out[1].flatten().tolist() == [0.0, -1.0, 1.0]  # z-scored over the non-zero voxels only; zeros stay


def test_scheme_count_must_match_the_channels():
    with pytest.raises(ValueError, match="2 normalization schemes for an image of 3 channels"):
        ChannelNormalized("image", [{"scheme": "none"}] * 2)({"image": torch.zeros(3, 2, 2, 2)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schemes": [{"scheme": "ct", "lower": 1}]}, r"schemes\[0\]: the ct scheme needs \['mean', 'std', 'upper'\]"),
        ({"schemes": [{"scheme": "minmax"}]}, r"schemes\[0\]: expected an object with 'scheme' one of"),
        (
            {"schemes": [{"scheme": "ct", "lower": 5, "upper": 1, "mean": 0, "std": 1}]},
            r"schemes\[0\]: needs lower < upper",
        ),
        (
            {"schemes": [{"scheme": "zscore", "clip": 3}]},
            r"schemes\[0\]: unknown key\(s\) \['clip'\] for scheme 'zscore'",
        ),
    ],
)
def test_bad_schemes_are_config_errors_naming_the_key(kwargs, message):
    dataset = DatasetConfig(normalization="ChannelNormalized", normalization_kwargs=kwargs)
    with pytest.raises(ConfigError, match=rf"dataset.normalization: ChannelNormalized: {message}"):
        normalization_transform(dataset)


def test_the_config_names_them_like_monai_transforms():
    built = normalization_transform(
        DatasetConfig(normalization="CTNormalized", normalization_kwargs={"lower": -1, "upper": 1, "mean": 0, "std": 1})
    )
    assert isinstance(built, CTNormalized)
    assert lookup("transform", "ChannelNormalized", "x") is ChannelNormalized


def test_the_rescale_and_rgb_schemes_map_to_0_1():
    # nnU-Net's rescale_to_0_1 (the case's own range) and rgb_to_0_1 (/ 255), planned from channel names (issue 24).
    from unet3d.normalization import normalize_channel

    channel = torch.tensor([[10.0, 20.0], [30.0, 60.0]])
    rescaled = normalize_channel(channel, {"scheme": "rescale_to_0_1"})
    assert rescaled.flatten().tolist() == pytest.approx([0.0, 0.2, 0.4, 1.0])
    assert normalize_channel(torch.tensor([0.0, 255.0]), {"scheme": "rgb_to_0_1"}).tolist() == [0.0, 1.0]
