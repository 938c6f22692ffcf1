"""Losses from the config (unet3d/losses.py): the output activation, argument checks, deep supervision."""

from __future__ import annotations

import pytest
import torch

from unet3d.config.schema import NamedSpec
from unet3d.errors import ConfigError
from unet3d.losses import activation_from_loss, build_loss, check_loss_spec


def test_deep_supervision_loss_weights_the_heads_halving_and_summing_to_one():
    from unet3d.config.schema import NamedSpec
    from unet3d.losses import build_loss, deep_supervision_weights

    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    spec = NamedSpec("DiceLoss", {"sigmoid": True})
    plain, deep = build_loss(spec), build_loss(spec, deep_supervision_heads=2)
    torch.manual_seed(0)
    heads = torch.randn(2, 2, 3, 8, 8, 8)  # (batch, heads, channels, *spatial), as DynUNet returns while training
    target = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    expected = 2 / 3 * plain(heads[:, 0], target) + 1 / 3 * plain(heads[:, 1], target)
    assert deep(heads, target) == pytest.approx(float(expected), rel=1e-5)
    assert deep(heads[:, 0], target) == pytest.approx(float(plain(heads[:, 0], target)))


@pytest.mark.parametrize(
    ("name", "kwargs", "activation"),
    [
        ("DiceLoss", {"sigmoid": True}, "sigmoid"),
        ("DiceCELoss", {"softmax": True}, "softmax"),
        ("BCEWithLogitsLoss", {}, "sigmoid"),
        ("CrossEntropyLoss", {}, "softmax"),
    ],
)
def test_the_output_activation_follows_the_loss_flags_or_the_loss_itself(name, kwargs, activation):
    assert activation_from_loss(NamedSpec(name, kwargs)) == activation


def test_an_undecidable_or_contradictory_activation_is_refused():
    with pytest.raises(ConfigError, match=r"^loss: sigmoid and softmax cannot both be true$"):
        activation_from_loss(NamedSpec("DiceLoss", {"sigmoid": True, "softmax": True}))
    with pytest.raises(ConfigError, match=r'^loss: cannot tell the output activation; set "sigmoid": true'):
        activation_from_loss(NamedSpec("DiceLoss", {}))


def test_loss_arguments_are_checked_by_name_and_by_the_loss_itself():
    check_loss_spec(NamedSpec("DiceLoss", {"sigmoid": True}))
    with pytest.raises(ConfigError, match=r"^loss.sigmoidd: DiceLoss has no argument 'sigmoidd'; did you mean 'sig"):
        check_loss_spec(NamedSpec("DiceLoss", {"sigmoidd": True}))
    with pytest.raises(ConfigError, match=r"^loss: DiceLoss: Incompatible values"):
        build_loss(NamedSpec("DiceLoss", {"sigmoid": True, "softmax": True}))
