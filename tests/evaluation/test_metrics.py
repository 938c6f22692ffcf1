"""Full-volume metrics against values computed by hand on tiny label maps."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from unet3d.config.cases import Case
from unet3d.config.regions import label_regions, region_names
from unet3d.errors import DataError
from unet3d.evaluation.metrics import case_metrics, evaluate_cases, evaluate_directory, summary_rows, write_metrics

ONE = [(1,)]
BRATS = label_regions([2, 1, 4], hierarchy=True)


def save(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), shift=(0.0, 0.0, 0.0)) -> Path:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = shift
    image = nib.Nifti1Image(array.astype(np.uint8), affine)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def test_dice_of_two_overlapping_cubes():
    truth = np.zeros((8, 8, 8), int)
    prediction = np.zeros((8, 8, 8), int)
    truth[2:6, 2:6, 2:6] = 1  # 64 voxels
    prediction[3:7, 3:7, 3:7] = 1  # 64 voxels, 3³ = 27 in common
    metrics = case_metrics(prediction, truth, ONE, ["1"], (1, 1, 1))
    assert list(metrics) == ["dice_1", "hd95_1"]
    assert metrics["dice_1"] == pytest.approx(2 * 27 / (64 + 64))


def test_hd95_of_two_voxels_uses_the_anisotropic_spacing_in_mm():
    truth = np.zeros((5, 5, 6), int)
    prediction = np.zeros((5, 5, 6), int)
    truth[2, 2, 1] = 1
    prediction[2, 2, 3] = 1  # 2 voxels along z at 3 mm
    assert case_metrics(prediction, truth, ONE, ["1"], (1, 1, 3))["hd95_1"] == pytest.approx(6.0)
    assert case_metrics(prediction, truth, ONE, ["1"], (3, 3, 0.5))["hd95_1"] == pytest.approx(1.0)


def test_hd95_of_two_parallel_planes_and_of_identical_masks():
    truth = np.zeros((4, 4, 6), int)
    prediction = np.zeros((4, 4, 6), int)
    truth[:, :, 1] = 1
    prediction[:, :, 3] = 1  # every surface voxel is 2 slices (6 mm) from the other plane
    assert case_metrics(prediction, truth, ONE, ["1"], (1, 1, 3))["hd95_1"] == pytest.approx(6.0)
    assert case_metrics(truth, truth, ONE, ["1"], (1, 1, 3)) == {"dice_1": 1.0, "hd95_1": 0.0}


def test_empty_masks_follow_the_documented_conventions():
    empty = np.zeros((4, 4, 4), int)
    some = empty.copy()
    some[1, 1, 1] = 1
    assert case_metrics(empty, empty, ONE, ["1"], (1, 1, 1)) == {"dice_1": 1.0, "hd95_1": 0.0}
    missed = case_metrics(empty, some, ONE, ["1"], (1, 1, 1))
    assert missed["dice_1"] == 0.0 and math.isnan(missed["hd95_1"])
    spurious = case_metrics(some, empty, ONE, ["1"], (1, 1, 1))
    assert spurious["dice_1"] == 0.0 and math.isnan(spurious["hd95_1"])


def test_brats_hierarchy_regions_on_a_hand_made_label_map():
    truth = np.zeros((4, 4, 4), int)
    truth[0], truth[1], truth[2] = 2, 1, 4  # 16-voxel slabs along x
    prediction = np.zeros((4, 4, 4), int)
    prediction[0], prediction[1] = 2, 4
    metrics = case_metrics(prediction, truth, BRATS, region_names(BRATS), (1, 1, 1))
    assert list(metrics) == ["dice_2+1+4", "dice_1+4", "dice_4", "hd95_2+1+4", "hd95_1+4", "hd95_4"]
    # whole tumour: truth x∈{0,1,2} (48), prediction x∈{0,1} (32), all 32 shared
    assert metrics["dice_2+1+4"] == pytest.approx(2 * 32 / (48 + 32))
    # tumour core {1, 4}: truth x∈{1,2} (32), prediction x=1 (16), shared 16; the truth's x=2 slab is 1 voxel away
    assert metrics["dice_1+4"] == pytest.approx(2 * 16 / (32 + 16))
    assert metrics["hd95_1+4"] == pytest.approx(1.0)
    # enhancing {4}: truth x=2, prediction x=1: disjoint planes 1 mm apart
    assert metrics["dice_4"] == 0.0
    assert metrics["hd95_4"] == pytest.approx(1.0)


def test_float_label_maps_are_rounded_to_their_values():
    truth = np.zeros((4, 4, 4), int)
    truth[1:3, 1:3, 1:3] = 4
    metrics = case_metrics(truth.astype(np.float32) + 0.01, truth, BRATS, region_names(BRATS), (1, 1, 1))
    assert all(metrics[f"dice_{n}"] == 1.0 for n in region_names(BRATS))


def test_summary_rows_skip_nan_and_count_it():
    table = pd.DataFrame({"case_id": ["a", "b", "c"], "dice_1": [0.5, 0.7, 0.9], "hd95_1": [2.0, float("nan"), 4.0]})
    summary = summary_rows(table).set_index("case_id")
    assert list(summary.index) == ["mean", "median", "sd", "n_nan"]
    assert summary.loc["mean", "dice_1"] == pytest.approx(0.7)
    assert summary.loc["median", "dice_1"] == pytest.approx(0.7)
    assert summary.loc["sd", "dice_1"] == pytest.approx(0.2)  # sqrt((0.04 + 0 + 0.04) / 2)
    assert summary.loc["mean", "hd95_1"] == pytest.approx(3.0)
    assert summary.loc["median", "hd95_1"] == pytest.approx(3.0)
    assert summary.loc["sd", "hd95_1"] == pytest.approx(math.sqrt(2))
    assert summary.loc["n_nan", "dice_1"] == 0 and summary.loc["n_nan", "hd95_1"] == 1


def test_summary_sd_of_one_case_is_zero():
    summary = summary_rows(pd.DataFrame({"case_id": ["a"], "dice_1": [0.8]})).set_index("case_id")
    assert summary.loc["sd", "dice_1"] == 0.0
    assert summary.loc["mean", "dice_1"] == pytest.approx(0.8)


def test_evaluate_cases_reads_spacing_from_the_ground_truth_and_counts_nan(tmp_path):
    truth = np.zeros((5, 5, 6), np.uint8)
    truth[2, 2, 1] = 1
    prediction = np.zeros_like(truth)
    prediction[2, 2, 3] = 1
    empty = np.zeros_like(truth)
    spacing = (1.0, 1.0, 3.0)
    pairs = [
        (
            "shifted",
            save(tmp_path / "p/shifted.nii.gz", prediction, spacing),
            save(tmp_path / "t/s.nii.gz", truth, spacing),
        ),
        ("missed", save(tmp_path / "p/missed.nii.gz", empty, spacing), save(tmp_path / "t/m.nii.gz", truth, spacing)),
    ]
    table = evaluate_cases(pairs, ONE, ["1"], n_threads=2)
    assert list(table.columns) == ["case_id", "dice_1", "hd95_1"]
    assert list(table["case_id"]) == ["shifted", "missed"]
    assert table["hd95_1"].iloc[0] == pytest.approx(6.0)
    assert table["dice_1"].tolist() == [0.0, 0.0] and math.isnan(table["hd95_1"].iloc[1])

    path = write_metrics(tmp_path / "out/metrics.csv", table)
    written = pd.read_csv(path)
    assert list(written["case_id"]) == ["shifted", "missed", "mean", "median", "sd", "n_nan"]
    rows = written.set_index("case_id")
    assert rows.loc["mean", "hd95_1"] == pytest.approx(6.0) and rows.loc["n_nan", "hd95_1"] == 1
    assert "nan" in path.read_text().splitlines()[2]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"shape": (5, 4, 4)}, "shape (5, 4, 4) differs from the ground truth"),
        ({"shift": (0.0, 0.0, 2.0)}, "affine differs from the ground truth"),
    ],
)
def test_a_prediction_in_another_space_is_a_data_error_naming_both_files(tmp_path, kwargs, expected):
    truth = save(tmp_path / "truth.nii.gz", np.zeros((4, 4, 4)))
    prediction = save(
        tmp_path / "pred.nii.gz", np.zeros(kwargs.get("shape", (4, 4, 4))), shift=kwargs.get("shift", (0, 0, 0))
    )
    with pytest.raises(DataError) as error:
        evaluate_cases([("a", prediction, truth)], ONE, ["1"])
    message = str(error.value)
    assert expected in message and str(prediction) in message and str(truth) in message
    assert "\n" not in message


def test_affines_within_the_tolerance_are_accepted(tmp_path):
    truth = save(tmp_path / "truth.nii.gz", np.zeros((4, 4, 4)))
    prediction = save(tmp_path / "pred.nii.gz", np.zeros((4, 4, 4)), shift=(0.0, 0.0005, 0.0))
    assert evaluate_cases([("a", prediction, truth)], ONE, ["1"])["dice_1"].tolist() == [1.0]


def test_evaluate_directory_writes_metrics_next_to_the_predictions(tmp_path):
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0], truth[1], truth[2] = 2, 1, 4
    cases = [Case(images=[], label=save(tmp_path / f"gt/{case_id}.nii.gz", truth), case_id=case_id) for case_id in "ab"]
    for case_id in "ab":
        save(tmp_path / f"pred/{case_id}.nii.gz", truth)
    table = evaluate_directory(tmp_path / "pred", cases, BRATS, region_names(BRATS))
    assert list(table["case_id"]) == ["a", "b"]
    assert (table.drop(columns="case_id").to_numpy() == [1, 1, 1, 0, 0, 0]).all()
    assert list(pd.read_csv(tmp_path / "pred/metrics.csv")["case_id"]) == ["a", "b", "mean", "median", "sd", "n_nan"]


def test_missing_predictions_and_labels_are_one_data_error_naming_the_cases(tmp_path):
    labels = [save(tmp_path / f"gt/c{i}.nii.gz", np.zeros((4, 4, 4))) for i in range(8)]
    save(tmp_path / "pred/c0.nii.gz", np.zeros((4, 4, 4)))
    cases = [Case(images=[], label=label, case_id=f"c{i}") for i, label in enumerate(labels)]
    cases.append(Case(images=[], label=None, case_id="unlabelled"))
    with pytest.raises(DataError) as error:
        evaluate_directory(tmp_path / "pred", cases, ONE, ["1"])
    first, second = str(error.value).splitlines()
    assert "no prediction <case_id>.nii.gz (or .png, .mhd, ...) for 8 case(s): c1, c2, c3, c4, c5 and 3 more" in first
    assert str(tmp_path / "pred") in first
    assert second == "no ground-truth label file for 1 case(s): unlabelled"
    assert not (tmp_path / "pred/metrics.csv").exists()


def test_missing_prediction_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="predictions folder does not exist"):
        evaluate_directory(tmp_path / "nowhere", [Case([], None, "a")], ONE, ["1"])
