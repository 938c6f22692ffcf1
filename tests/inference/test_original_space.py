"""The geometry round trip back to each case's original space, and the label map writers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from unet3d.config.load import parse_config
from unet3d.config.regions import label_regions
from unet3d.data.datasets import case_items
from unet3d.data.decoding import decode, fill_background
from unet3d.data.synthetic import write_dataset
from unet3d.data.transforms import build_transforms
from unet3d.inference.original_space import to_original_space, write_label_map


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geometry")
    entries = write_dataset(folder, 4, seed=3, shape_range=(16, 22))  # RAS, LPS, LAS and PSR orientations
    return folder, entries


def round_trip(folder, entries, index, **dataset):
    config = {
        "model": {
            "name": "UNet",
            "spatial_dims": 3,
            "in_channels": 4,
            "out_channels": 3,
            "channels": [4, 8],
            "strides": [2],
        },
        "optimizer": {"name": "Adam"},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        "dataset": {"labels": [2, 1, 4], "setup_label_hierarchy": True, **dataset},
        "training_filenames": entries,
    }
    parsed = parse_config(config, folder)
    case = parsed.groups["training"][index]
    transform = build_transforms(parsed.dataset, with_label=True, softmax=False, augment=False)
    out = transform(case_items([case], with_label=True)[0])
    groups = label_regions([2, 1, 4], hierarchy=True)
    # The preprocessed label channels stand in for a perfect prediction in the preprocessed space; prediction inverts
    # the same chain (built without the label key, see the end-to-end checks in tests/experiment/test_steps.py).
    original = transform.inverse({"image": out["image"], "label": out["label"]})["label"]
    reference = nib.load(str(case.images[0]))
    return decode(torch.as_tensor(original), groups, "sigmoid").numpy(), original, reference, case


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_round_trip_is_exact_without_resampling(cases, index):
    folder, entries = cases
    label_map, original, reference, case = round_trip(
        folder, entries, index, orientation="RAS", crop_foreground=True, desired_shape=[24, 24, 24]
    )
    truth = np.asanyarray(nib.load(str(case.label)).dataobj)
    assert label_map.shape == reference.shape
    np.testing.assert_allclose(original.affine.numpy(), reference.affine, atol=1e-4)
    np.testing.assert_array_equal(label_map, truth)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_round_trip_through_resampling_keeps_shape_affine_and_labels(cases, index):
    folder, entries = cases
    label_map, original, reference, case = round_trip(
        folder, entries, index, orientation="RAS", crop_foreground=True, resample=True, desired_shape=[16, 16, 16]
    )
    truth = np.asanyarray(nib.load(str(case.label)).dataobj)
    assert label_map.shape == truth.shape
    np.testing.assert_allclose(original.affine.numpy(), reference.affine, atol=1e-4)
    assert set(np.unique(label_map)) <= {0, 1, 2, 4}
    whole = (label_map > 0), (truth > 0)
    assert 2 * (whole[0] & whole[1]).sum() / (whole[0].sum() + whole[1].sum()) > 0.9


def test_written_label_map_has_the_reference_geometry_and_integer_values(cases, tmp_path):
    folder, entries = cases
    reference = nib.load(str(folder / entries[1]["image"][0]))
    label_map = torch.zeros(reference.shape, dtype=torch.int16)
    label_map[2:5, 3:6, 4:7] = 4
    write_label_map(tmp_path / "case.nii.gz", label_map, folder / entries[1]["image"][0])
    written = nib.load(str(tmp_path / "case.nii.gz"))
    assert written.shape == reference.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, reference.affine)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(reference.affine)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), label_map.numpy())


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_round_trip_through_a_fixed_voxel_spacing(cases, index):
    folder, entries = cases
    truth = np.asanyarray(nib.load(str(folder / entries[index]["label"])).dataobj)
    # Finer than every input spacing: nearest-neighbour up and back down is exact.
    label_map, original, reference, _ = round_trip(folder, entries, index, orientation="RAS", spacing=[0.5] * 3)
    np.testing.assert_allclose(original.affine.numpy(), reference.affine, atol=1e-4)
    np.testing.assert_array_equal(label_map, truth)
    # Coarser: the object (about 200 voxels) loses boundary voxels twice, and comes back on the original grid.
    label_map, original, reference, _ = round_trip(folder, entries, index, orientation="RAS", spacing=[1.5] * 3)
    assert label_map.shape == truth.shape
    np.testing.assert_allclose(original.affine.numpy(), reference.affine, atol=1e-4)
    whole = (label_map > 0), (truth > 0)
    assert 2 * (whole[0] & whole[1]).sum() / (whole[0].sum() + whole[1].sum()) > 0.8


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_softmax_probabilities_left_out_by_the_crop_are_background(cases, index):
    # an undertrained network's softmax (class 2 the likeliest everywhere), inverted as predictions are (linear
    # interpolation, through resampling and the crop): outside the crop every channel comes back 0 plus
    # interpolation dust of 1e-16, whose arg-max wrote class 2 there; filled, those voxels are background
    folder, entries = cases
    config = {
        "model": {"name": "UNet", "spatial_dims": 3, "in_channels": 4, "out_channels": 4, "channels": [4, 8]},
        "optimizer": {"name": "Adam"},
        "loss": {"name": "DiceCELoss", "softmax": True},
        "dataset": {"labels": [2, 1, 4], "orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "crop_foreground": True},
        "training_filenames": entries,
    }
    config["model"]["strides"] = [2]
    parsed = parse_config(config, folder)
    case = parsed.groups["training"][index]
    transform = build_transforms(parsed.dataset, with_label=False, softmax=True, augment=False)  # as prediction
    image = transform(case_items([case], with_label=False)[0])["image"]
    undertrained = torch.tensor([0.1, 0.5, 0.2, 0.2]).reshape(4, 1, 1, 1).expand(4, *image.shape[1:]).clone()
    inverted = torch.as_tensor(to_original_space(undertrained, image, transform))
    groups = label_regions([2, 1, 4], hierarchy=False)
    outside, inside = inverted.sum(0) < 0.5, inverted.sum(0) > 0.999
    assert outside.any() and inside.any()
    assert (decode(inverted, groups, "softmax")[outside] == 2).any()  # the dust's arg-max, before the fill
    filled = fill_background(inverted)
    assert torch.allclose(filled.sum(0), torch.ones_like(filled[0]), atol=1e-5)
    label_map = decode(filled, groups, "softmax")
    assert (label_map[outside] == 0).all() and (label_map[inside] == 2).all()
