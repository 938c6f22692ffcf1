"""The largest-connected-component postprocessing: the filter itself, the data-driven decision, and its record."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from unet3d.data.labels import encode
from unet3d.errors import ConfigError
from unet3d.evaluation.postprocessing import Decision, decide, keep_largest_component, read_decision, write_decision

BRATS = [(2, 1, 4), (1, 4), (4,)]
NAMES = ["2+1+4", "1+4", "4"]


def blob_map() -> np.ndarray:
    label_map = np.zeros((12, 12, 12), dtype=np.uint8)
    label_map[2:7, 2:7, 2:7] = 2
    label_map[3:6, 3:6, 3:6] = 1
    label_map[4, 4, 4] = 4
    label_map[9:11, 9:11, 9:11] = 1  # a separate speck of tumour core
    return label_map


def test_filter_removes_small_components_of_the_chosen_region_only():
    label_map = blob_map()
    whole = keep_largest_component(label_map, BRATS, [0])
    assert (whole[9:11, 9:11, 9:11] == 0).all()
    np.testing.assert_array_equal(whole[:8, :8, :8], label_map[:8, :8, :8])
    enhancing_only = keep_largest_component(label_map, BRATS, [2])
    np.testing.assert_array_equal(enhancing_only, label_map)
    diagonal = np.zeros((4, 4, 4), dtype=np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 1  # corner neighbours are one component
    np.testing.assert_array_equal(keep_largest_component(diagonal, [(1,)], [0]), diagonal)


def write_pair(folder, name, prediction, truth):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(prediction, affine), folder / f"{name}_pred.nii.gz")
    nib.save(nib.Nifti1Image(truth, affine), folder / f"{name}_truth.nii.gz")
    return folder / f"{name}_pred.nii.gz", folder / f"{name}_truth.nii.gz"


def test_decision_keeps_the_filter_where_it_raises_cross_validated_dice(tmp_path):
    truth = blob_map()
    truth[9:11, 9:11, 9:11] = 0
    pairs = [write_pair(tmp_path, f"c{i}", blob_map(), truth) for i in range(2)]
    decision = decide(pairs, BRATS, NAMES)
    assert decision.regions == ["2+1+4"]
    assert decision.dice_after > decision.dice_before


def test_decision_leaves_regions_whose_truth_has_several_components(tmp_path):
    pairs = [write_pair(tmp_path, "c0", blob_map(), blob_map())]
    decision = decide(pairs, BRATS, NAMES)
    assert decision.regions == [] and decision.dice_before == decision.dice_after == pytest.approx(1.0)


def test_decision_record_round_trip_and_unknown_regions(tmp_path):
    path = write_decision(tmp_path, Decision(["1+4"], 0.8, 0.85), {"fold1": {"epoch": 3}})
    assert json.loads(path.read_text())["keep_largest_component"] == ["1+4"]
    assert read_decision(path, NAMES) == [1]
    with pytest.raises(ConfigError, match=r"regions \['1\+4'\] are not among"):
        read_decision(path, ["1", "2"])


def test_postprocessing_demotes_stray_inner_voxels_to_the_enclosing_region():
    from unet3d.evaluation.postprocessing import keep_largest_component

    label_map = np.zeros((12, 12, 12), np.int16)
    label_map[1:8, 1:8, 1:8] = 2
    label_map[2:6, 2:6, 2:6] = 1
    label_map[3:5, 3:5, 3:5] = 4
    label_map[7, 7, 7] = 1  # a stray core voxel inside the whole tumour, apart from the core
    label_map[10, 10, 10] = 4  # an island of all three regions, apart from everything
    core_filtered = keep_largest_component(label_map, BRATS, [1])
    assert core_filtered[7, 7, 7] == 2 and core_filtered[10, 10, 10] == 2 and core_filtered[3, 3, 3] == 4
    enhancing_filtered = keep_largest_component(label_map, BRATS, [2])
    assert enhancing_filtered[10, 10, 10] == 1 and enhancing_filtered[3, 3, 3] == 4
    whole_filtered = keep_largest_component(label_map, BRATS, [0])
    assert whole_filtered[10, 10, 10] == 0 and whole_filtered[7, 7, 7] == 1
    for result in (core_filtered, enhancing_filtered, whole_filtered):
        masks = encode(torch.from_numpy(result)[None], BRATS, background=False).bool()
        assert not (masks[1] & ~masks[0]).any() and not (masks[2] & ~masks[1]).any()
