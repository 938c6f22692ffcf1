"""Tests for network channels → label maps (unet3d/data/decoding.py)."""

import torch
from monai.data import MetaTensor

from tests.data.test_labels import LABEL  # every BraTS value (0, 1, 2, 4) in known places
from unet3d.config.regions import label_regions
from unet3d.data.decoding import DecodeLabelsd, FillBackgroundd, activate, decode, enclosing, fill_background
from unet3d.data.labels import encode, region_masks

BRATS = label_regions([2, 1, 4], hierarchy=True)  # whole tumour {2,1,4} ⊃ core {1,4} ⊃ enhancing {4}


def test_enclosing_regions_of_a_hierarchy_and_of_disjoint_groups():
    assert enclosing(BRATS) == [None, 0, 1]
    assert enclosing([(1,), (2,), (3, 4)]) == [None, None, None]
    assert enclosing([(1, 2, 3), (2,), (3,)]) == [None, 0, 0]  # two inner regions side by side


def test_decode_inverts_encode_for_a_hierarchy():
    channels = encode(LABEL, BRATS, background=False)
    assert torch.equal(decode(channels, BRATS, "sigmoid"), LABEL[0].to(torch.int16))


def test_decode_never_paints_an_inner_region_outside_its_enclosing_region():
    # Voxels: background everywhere but the core and enhancing channels fire; whole only; whole + enhancing without
    # core; all three. An undertrained network's inner channels look like the first voxel.
    probabilities = torch.tensor(
        [
            [0.1, 0.9, 0.9, 0.9],  # whole tumour
            [0.9, 0.2, 0.3, 0.8],  # core
            [0.9, 0.1, 0.9, 0.7],  # enhancing
        ]
    )
    assert decode(probabilities, BRATS, "sigmoid").tolist() == [0, 2, 2, 4]
    masks = region_masks(probabilities, BRATS, "sigmoid")
    assert masks.tolist() == [[False, True, True, True], [False, False, False, True], [False, False, False, True]]
    assert not (masks[1] & ~masks[0]).any() and not (masks[2] & ~masks[1]).any()


def test_decode_nested_regions_choose_among_siblings_by_probability():
    groups = [(1, 2, 3), (2,), (3,)]  # an organ with two lesion types inside it
    probabilities = torch.tensor([[0.9, 0.9, 0.9, 0.3], [0.8, 0.6, 0.2, 0.9], [0.7, 0.7, 0.4, 0.9]])
    assert decode(probabilities, groups, "sigmoid").tolist() == [2, 3, 1, 0]


def test_decode_sigmoid_threshold_is_strict_and_ties_go_to_the_first_channel():
    groups = [(1,), (2,)]
    probabilities = torch.tensor([[0.9, 0.6, 0.2, 0.4, 0.5, 0.7], [0.1, 0.7, 0.3, 0.6, 0.5, 0.7]])
    assert decode(probabilities, groups, "sigmoid").tolist() == [1, 2, 0, 2, 0, 1]
    assert decode(probabilities, groups, "sigmoid", threshold=0.65).tolist() == [1, 2, 0, 0, 0, 1]


def test_decode_softmax_takes_the_argmax_with_background_first_and_writes_each_group_s_first_value():
    groups = [(1, 3), (2,)]
    probabilities = torch.tensor([[0.5, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.1, 0.7]])
    assert decode(probabilities, groups, "softmax").tolist() == [0, 1, 2]
    assert decode(probabilities, groups, "softmax", threshold=0.99).tolist() == [0, 1, 2]  # no threshold for softmax
    assert region_masks(probabilities, groups, "softmax").tolist() == [[False, True, False], [False, False, True]]


def test_decode_works_on_2d_and_3d_maps():
    probabilities = torch.zeros(3, 4, 5, 6)
    probabilities[0, 1:3, 1:4, 1:5] = 0.9
    probabilities[1:] = 0.8  # inner channels fire everywhere
    label_map = decode(probabilities, BRATS, "sigmoid")
    assert label_map.shape == (4, 5, 6)
    assert set(label_map[probabilities[0] > 0.5].tolist()) == {4}
    assert set(label_map[probabilities[0] <= 0.5].tolist()) == {0}
    assert decode(probabilities[:, 0], BRATS, "sigmoid").shape == (5, 6)


def test_activate_matches_torch():
    logits = torch.randn(2, 3, 4)
    assert torch.equal(activate(logits, "sigmoid"), torch.sigmoid(logits))
    assert torch.allclose(activate(logits, "softmax").sum(1), torch.ones(2, 4))


def test_the_dictionary_transforms_decode_as_the_functions_do_and_keep_the_affine():
    """The bundle's postprocessing ends with these two: a MetaTensor keeps its affine, and the label map gains a
    channel axis, as MONAI's writers expect."""
    groups = [(1,), (2,)]
    logits = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    probabilities = torch.softmax(logits, 0) * torch.linspace(0.2, 1.0, 6)  # an inverted crop's faded border
    affine = torch.diag(torch.tensor([0.8, 0.8, 5.0, 1.0], dtype=torch.float64))
    item = {"pred": MetaTensor(probabilities, affine=affine)}
    filled = FillBackgroundd("pred")(item)["pred"]
    assert isinstance(filled, MetaTensor) and torch.equal(filled.affine, affine)
    assert torch.allclose(filled.as_tensor(), fill_background(probabilities))
    decoded = DecodeLabelsd("pred", groups, "softmax")({"pred": filled})["pred"]
    assert decoded.shape == (1, 4, 5, 6) and torch.equal(decoded.affine, affine)
    assert torch.equal(decoded.as_tensor()[0], decode(fill_background(probabilities), groups, "softmax"))
    assert (decoded == 0).any() and (decoded == 1).any() and (decoded == 2).any()
    nested = DecodeLabelsd("pred", BRATS, "sigmoid")({"pred": encode(LABEL, BRATS, background=False)})["pred"]
    assert torch.equal(nested, LABEL.to(torch.int16))
