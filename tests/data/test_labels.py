"""Tests for label maps → network channels (unet3d/data/labels.py)."""

import pytest
import torch
from monai.data import MetaTensor

from unet3d.config.regions import label_regions
from unet3d.data.labels import (
    LabelsToChannelsd,
    check_label_spec,
    encode,
    n_target_channels,
)
from unet3d.errors import ConfigError

# A (1, 2, 2, 3) label map with every BraTS value (0, 1, 2, 4) in known places.
LABEL = torch.tensor(
    [
        [
            [[0, 1, 2], [4, 0, 1]],
            [[2, 2, 4], [0, 4, 1]],
        ]
    ]
)


def test_encode_hierarchy_exact_channels():
    out = encode(LABEL, label_regions([2, 1, 4], hierarchy=True), background=False)
    values = LABEL[0]
    assert out.dtype == torch.float32
    assert out.shape == (3, 2, 2, 3)
    expected_whole = torch.tensor([[[0, 1, 1], [1, 0, 1]], [[1, 1, 1], [0, 1, 1]]], dtype=torch.float32)
    expected_core = torch.tensor([[[0, 1, 0], [1, 0, 1]], [[0, 0, 1], [0, 1, 1]]], dtype=torch.float32)
    expected_enhancing = torch.tensor([[[0, 0, 0], [1, 0, 0]], [[0, 0, 1], [0, 1, 0]]], dtype=torch.float32)
    assert torch.equal(out[0], expected_whole)
    assert torch.equal(out[1], expected_core)
    assert torch.equal(out[2], expected_enhancing)
    # Cross-check against the definition: channel i is the union of labels[i:].
    assert torch.equal(out[1], ((values == 1) | (values == 4)).float())


def test_encode_softmax_background_first():
    out = encode(LABEL, label_regions([[1, 2], 4]), background=True)
    values = LABEL[0]
    assert out.shape == (3, 2, 2, 3)
    expected_background = torch.tensor([[[1, 0, 0], [0, 1, 0]], [[0, 0, 0], [1, 0, 0]]], dtype=torch.float32)
    assert torch.equal(out[0], expected_background)
    assert torch.equal(out[1], ((values == 1) | (values == 2)).float())
    assert torch.equal(out[2], (values == 4).float())
    # Mutually exclusive and exhaustive: exactly one channel per voxel.
    assert torch.equal(out.sum(0), torch.ones(2, 2, 3))


def test_encode_without_labels_present_is_all_background():
    out = encode(torch.zeros(1, 2, 2, 2, dtype=torch.int64), [(1,), (2,)], background=True)
    assert torch.equal(out[0], torch.ones(2, 2, 2))
    assert out[1:].sum() == 0


@pytest.mark.parametrize(
    ("labels", "hierarchy", "activation", "match"),
    [
        ([], False, "sigmoid", "required for training"),
        (None, False, "sigmoid", "required for training"),
        ([1, 2, 1], False, "sigmoid", r"\[1\] appear in more than one channel"),
        ([[1, 2], 2], False, "softmax", r"\[2\] appear in more than one channel"),
        ([0, 1], False, "sigmoid", "0 is the background"),
        ([[0, 1], 2], False, "sigmoid", "0 is the background"),
        ([2, 1, 4], True, "softmax", "setup_label_hierarchy.*sigmoid"),
    ],
)
def test_check_label_spec_errors(labels, hierarchy, activation, match):
    with pytest.raises(ConfigError, match=match):
        check_label_spec(labels, hierarchy, activation)


@pytest.mark.parametrize(
    ("labels", "hierarchy", "activation"),
    [([2, 1, 4], True, "sigmoid"), ([[1, 2], 4], False, "softmax"), ([1], False, "sigmoid")],
)
def test_check_label_spec_accepts_valid_specs(labels, hierarchy, activation):
    check_label_spec(labels, hierarchy, activation)


def test_check_label_spec_names_where():
    with pytest.raises(ConfigError, match=r"^model\.labels:"):
        check_label_spec([], False, "sigmoid", where="model.labels")


@pytest.mark.parametrize(
    ("labels", "activation", "expected"),
    [
        ([2, 1, 4], "sigmoid", 3),
        ([2, 1, 4], "softmax", 4),
        ([[1, 2], 4], "sigmoid", 2),
        ([[1, 2], 4], "softmax", 3),
        ([1], "softmax", 2),
    ],
)
def test_n_target_channels(labels, activation, expected):
    assert n_target_channels(labels, activation) == expected


def test_n_target_channels_matches_encoding():
    labels = [[1, 2], 4]
    out = encode(LABEL, label_regions(labels), background=True)
    assert out.shape[0] == n_target_channels(labels, "softmax")


def test_labels_to_channels_keeps_meta_tensor_affine():
    affine = torch.tensor(
        [[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -4.0], [0.0, 0.0, 3.0, 7.0], [0.0, 0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    # Resampled label maps come as floats close to, not at, the label values.
    label = MetaTensor(LABEL.float() + 0.01 * torch.randn(LABEL.shape).clamp(-1, 1), affine=affine)
    image = MetaTensor(torch.rand(1, 2, 2, 3), affine=affine)
    transform = LabelsToChannelsd(keys="label", groups=label_regions([2, 1, 4], hierarchy=True))
    result = transform({"image": image, "label": label})
    out = result["label"]
    assert isinstance(out, MetaTensor)
    assert out.shape == (3, 2, 2, 3)
    assert torch.allclose(out.affine.double(), affine)
    assert torch.equal(out.as_tensor(), encode(LABEL, label_regions([2, 1, 4], hierarchy=True), False))
    assert result["image"] is image  # other keys untouched
    assert torch.equal(label.affine.double(), affine)  # input not changed


def test_labels_to_channels_plain_tensor_with_background():
    transform = LabelsToChannelsd(keys=["label"], groups=[(1, 2), (4,)], background=True)
    out = transform({"label": LABEL})["label"]
    assert not isinstance(out, MetaTensor)
    assert torch.equal(out, encode(LABEL, [(1, 2), (4,)], True))


# Decoding: channels → label maps (the inverse of `encode`), with nested regions kept nested.


@pytest.mark.parametrize("groups", [[(1, 2), (2,), (7,)], [(-1, 2), (2,), (7,)]])
def test_encode_matches_its_definition_for_any_values(groups):
    # Values beyond the declared ones (above, below zero) belong to no channel; negative declared values work too.
    label = torch.tensor([[[[-3, -1, 0], [1, 2, 7]], [[8, 2, 1], [0, 7, 100]]]], dtype=torch.float32)
    for background in (False, True):
        out = encode(label, groups, background)
        expected = torch.stack([sum((label[0] == v) for v in group).bool() for group in groups]).float()
        if background:
            expected = torch.cat([1 - expected.amax(0, keepdim=True), expected])
        assert torch.equal(out, expected), (groups, background)
