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


def _dynunet(deep_supervision: bool) -> torch.nn.Module:
    spec = NamedSpec(
        "DynUNet",
        {
            "spatial_dims": 3,
            "in_channels": 2,
            "out_channels": 3,
            "kernel_size": [3, 3, 3],
            "strides": [1, 2, 2],
            "upsample_kernel_size": [2, 2],
            "filters": [4, 8, 16],
            "deep_supervision": deep_supervision,
            "deep_supr_num": 1,
        },
    )
    return build_model(spec)


def test_output_bias_prior_starts_every_sigmoid_region_and_every_head_at_the_prior():
    from unet3d.models import initialize_output_bias, output_layers

    model = _dynunet(deep_supervision=True)
    assert initialize_output_bias(model, 3, 0.01) == 2  # the output block and the deep-supervision head
    model.train()
    with torch.no_grad():  # with the heads' weights zeroed the outputs are their biases alone
        for layer in output_layers(model, 3):
            layer.weight.zero_()
    heads = torch.sigmoid(model(torch.randn(1, 2, 16, 16, 16)))
    assert heads.shape == (1, 2, 3, 16, 16, 16)
    assert torch.allclose(heads, torch.full_like(heads, 0.01), atol=1e-6)


def test_output_bias_prior_under_softmax_leaves_the_rest_to_the_background():
    from unet3d.models import initialize_output_bias

    model = _dynunet(deep_supervision=False).eval()
    initialize_output_bias(model, 3, 0.05, activation="softmax")
    with torch.no_grad():
        model.output_block.conv.conv.weight.zero_()
    probabilities = torch.softmax(model(torch.randn(1, 2, 16, 16, 16)), dim=1)[0, :, 3, 4, 5]
    assert probabilities.tolist() == pytest.approx([0.9, 0.05, 0.05], abs=1e-6)
    with pytest.raises(ConfigError, match=r"2 classes at 0\.5 each leave no probability for the background"):
        initialize_output_bias(model, 3, 0.5, activation="softmax")


def test_output_bias_prior_takes_the_last_convolution_of_networks_without_1x1_heads():
    from unet3d.models import CONVOLUTIONS, initialize_output_bias, output_layers

    model = build_model(NamedSpec("UNet", UNET))
    (layer,) = output_layers(model, 3)
    assert layer is [m for m in model.modules() if isinstance(m, CONVOLUTIONS)][-1]
    initialize_output_bias(model, 3, 0.2)
    assert torch.allclose(layer.bias, torch.full((3,), float(torch.logit(torch.tensor(0.2)))))
    with pytest.raises(ConfigError, match=r"output_bias_prior: UNet has no convolution with 5 output channels"):
        initialize_output_bias(model, 5, 0.2)
