"""Networks from the config (unet3d/models.py): channel counts, downsampling and input shapes, deep supervision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unet3d.config.schema import NamedSpec
from unet3d.errors import ConfigError
from unet3d.models import (
    build_model,
    check_input_shape,
    check_model_spec,
    deep_supervision_heads,
    spatial_dims,
    total_downsampling,
)


def test_a_vnet_needs_inputs_in_multiples_of_16(tmp_path: Path):
    from unet3d.config.schema import NamedSpec
    from unet3d.models import check_input_shape

    check_input_shape(NamedSpec("VNet", {"spatial_dims": 3}), [32, 32, 48])
    with pytest.raises(ConfigError, match=r"\[32, 32, 24\] is not divisible by .* \[16, 16, 16\] \(fixed for VNet\)"):
        check_input_shape(NamedSpec("VNet", {"spatial_dims": 3}), [32, 32, 24])


UNET = {"spatial_dims": 3, "in_channels": 4, "out_channels": 3, "channels": [4, 8], "strides": [2]}


def test_total_downsampling_is_the_product_of_the_strides_per_axis():
    assert total_downsampling(NamedSpec("UNet", {"strides": [2, 2]}), 3) == [4, 4, 4]
    assert total_downsampling(NamedSpec("DynUNet", {"strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2]]}), 3) == [4, 4, 2]
    assert total_downsampling(NamedSpec("VNet", {}), 2) == [16, 16]
    assert total_downsampling(NamedSpec("SegResNet", {}), 3) is None  # no strides argument: nothing to check
    assert total_downsampling(NamedSpec("DynUNet", {"strides": [[2, 2]]}), 3) is None  # not one per axis


def test_an_input_reduced_to_one_voxel_is_refused_with_the_smallest_shape_that_works():
    spec = NamedSpec("UNet", {"strides": [2, 2]})
    check_input_shape(spec, [8, 8, 4])
    check_input_shape(spec, None)
    with pytest.raises(ConfigError) as raised:
        check_input_shape(spec, [4, 4, 4])
    assert str(raised.value) == (
        "dataset.desired_shape: [4, 4, 4] leaves a 1-voxel bottleneck after the model's total downsampling [4, 4, 4]; "
        "use at least [8, 8, 8] or fewer stride-2 levels"
    )


def test_channel_counts_must_match_the_images_and_the_labels():
    check_model_spec(NamedSpec("UNet", UNET), in_channels=4, out_channels=3)
    check_model_spec(NamedSpec("UNet", UNET), in_channels=None, out_channels=None)
    with pytest.raises(ConfigError, match=r"^model.in_channels: is 4 but each case has 2 image channel\(s\)$"):
        check_model_spec(NamedSpec("UNet", UNET), in_channels=2, out_channels=3)
    with pytest.raises(ConfigError, match=r"^model.out_channels: is 3 but the labels and activation need 4$"):
        check_model_spec(NamedSpec("UNet", UNET), in_channels=4, out_channels=4)


def test_the_network_is_built_from_its_arguments_and_its_constructor_errors_name_the_section():
    model = build_model(NamedSpec("UNet", UNET))
    assert model(torch.zeros(1, 4, 8, 8, 8)).shape == (1, 3, 8, 8, 8)
    with pytest.raises(ConfigError, match=r"^model: UNet: the length of `channels` should be no less than 2"):
        build_model(NamedSpec("UNet", {**UNET, "channels": [4], "strides": []}))


def test_spatial_dims_and_deep_supervision_heads_come_from_the_arguments():
    assert spatial_dims(NamedSpec("UNet", {"spatial_dims": 2})) == 2
    assert spatial_dims(NamedSpec("UNet", {"dimensions": 2})) == 2
    assert spatial_dims(NamedSpec("SegResNet", {})) == 3  # the network's default
    assert deep_supervision_heads(NamedSpec("DynUNet", {})) == 1
    assert deep_supervision_heads(NamedSpec("DynUNet", {"deep_supervision": True})) == 2
    assert deep_supervision_heads(NamedSpec("DynUNet", {"deep_supervision": True, "deep_supr_num": 3})) == 4
