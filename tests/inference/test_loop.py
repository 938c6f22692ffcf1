"""Cases to label maps in a folder (unet3d/inference/loop.py): output names, and label maps that keep nested regions
nested in every format.

The model of the nested-decoding tests is what an undertrained network looks like (issue 10): its whole-tumour
channel finds the bright tumour, and its inner channels fire everywhere. A label map may then hold an inner label
only inside the predicted whole tumour, so each written region equals the voxels where it and all its enclosing
channels are predicted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from monai.inferers import SimpleInferer
from PIL import Image

from tests.conftest import Undertrained, nested_config
from unet3d.config.cases import Case
from unet3d.config.load import parse_config
from unet3d.config.regions import label_regions
from unet3d.data.image_io import read_array
from unet3d.inference.loop import iter_predictions, predict_cases
from unet3d.inference.predictor import Predictor

BRATS = label_regions([2, 1, 4], hierarchy=True)
CPU = torch.device("cpu")


def test_case_ids_name_outputs_uniquely(tmp_path):
    from unet3d.inference.loop import prediction_path

    assert (
        prediction_path(tmp_path, Case([Path("x/a_flair.nii.gz")], None, "sub-01_ses-2")).name == "sub-01_ses-2.nii.gz"
    )


def test_written_whole_region_scores_as_the_whole_tumour_channel_alone(trained_cv):
    """Issue 10: a tiny hierarchy model after 2 epochs (inner channels not yet trained). The label maps written for a
    fold's held-out cases score, on the whole tumour, exactly what the whole-tumour channel thresholded alone scores
    in the same (original) space; an inner channel never paints outside it."""
    from unet3d.config.load import load_config
    from unet3d.evaluation.metrics import read_labels
    from unet3d.inference.loop import iter_predictions
    from unet3d.inference.predictor import make_predictor
    from unet3d.workdir import RunDir

    _, work, _ = trained_cv
    for fold in (1, 2):
        config = load_config(work / f"fold{fold}.json")
        predictor = make_predictor(config, [RunDir(work / f"fold{fold}").model()], torch.device("cpu"))
        alone = []
        for prediction in iter_predictions(predictor, config, config.groups["validation"]):
            truth = read_labels(prediction.case.label)[0] > 0
            whole = prediction.probabilities[0].numpy() > 0.5
            alone.append(2 * (whole & truth).sum() / (whole.sum() + truth.sum()))
            np.testing.assert_array_equal(prediction.label_map.numpy() > 0, whole)
        metrics = pd.read_csv(work / f"fold{fold}" / "validation" / "metrics.csv").set_index("case_id")
        assert metrics.loc["mean", "dice_2+1+4"] == pytest.approx(np.mean(alone), abs=1e-5)


def assert_nested(label_map: np.ndarray, probabilities: np.ndarray, groups, threshold: float = 0.5) -> None:
    """Each region of the label map is exactly where its channel and every enclosing channel are above threshold."""
    inside = np.ones(label_map.shape, bool)
    for index, group in enumerate(groups):
        inside &= probabilities[index] > threshold
        np.testing.assert_array_equal(np.isin(label_map, group), inside, err_msg=f"region {group}")


@pytest.mark.parametrize("tta", [False, True])
def test_nifti_predictions_of_an_undertrained_model_are_nested(hard_cases, tmp_path, tta):
    folder, entries = hard_cases
    config = parse_config(
        nested_config(
            entries, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True, crop_foreground=True, orientation="RAS"
        ),
        folder,
    )
    # An ensemble of two models whose whole-tumour channels disagree, with and without mirroring: averaged, then
    # decoded.
    predictor = Predictor([Undertrained(), Undertrained(shift=0.3)], SimpleInferer(), "sigmoid", CPU, tta=tta)
    cases = config.groups["training"]
    predictions = list(iter_predictions(predictor, config, cases))
    for prediction in predictions:
        probabilities = prediction.probabilities.numpy()
        assert 0 < (probabilities[0] > 0.5).mean() < 0.5, "the whole-tumour channel should find a part of the head"
        assert (probabilities[1:] > 0.5).all(), "the inner channels should fire everywhere"
        assert_nested(prediction.label_map.numpy(), probabilities, BRATS)
    written = predict_cases(predictor, config, cases, tmp_path / "out")
    for path, prediction in zip(written, predictions, strict=True):
        np.testing.assert_array_equal(read_array(path), prediction.label_map.numpy())


def test_threshold_applies_to_every_nested_channel(hard_cases):
    folder, entries = hard_cases
    config = parse_config(nested_config(entries, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True), folder)
    predictor = Predictor([Undertrained()], SimpleInferer(), "sigmoid", CPU)
    for threshold in (0.3, 0.9):
        for prediction in iter_predictions(predictor, config, config.groups["training"][:1], threshold=threshold):
            assert_nested(prediction.label_map.numpy(), prediction.probabilities.numpy(), BRATS, threshold)


def test_png_pictures_with_nested_labels_are_nested(tmp_path):
    rows, columns = np.mgrid[:20, :30]
    cases = []
    for i in range(2):
        mask = np.zeros((20, 30), np.uint8)
        mask[3 + i : 15, 4 : 20 + i] = 2
        mask[6:10, 8:12] = 1
        image = np.where(mask > 0, 230, 40) + 5 * np.sin(rows + columns)
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / f"p{i}.png")
        Image.fromarray(mask).save(tmp_path / f"p{i}_mask.png")
        cases.append({"case_id": f"p{i}", "image": [f"p{i}.png"], "label": f"p{i}_mask.png"})
    config = parse_config(nested_config(cases, 2, 1, [2, 1], desired_shape=[16, 16], resample=True), tmp_path)
    groups = label_regions([2, 1], hierarchy=True)
    predictor = Predictor([Undertrained(n_out=2)], SimpleInferer(), "sigmoid", CPU)
    for prediction in iter_predictions(predictor, config, config.groups["training"]):
        assert (prediction.probabilities[1] > 0.5).all()
        assert_nested(prediction.label_map.numpy(), prediction.probabilities.numpy(), groups)
    for path in predict_cases(predictor, config, config.groups["training"], tmp_path / "out"):
        picture = np.asarray(Image.open(path))
        assert path.suffix == ".png" and picture.shape == (20, 30)
        # the inner channel fires everywhere, so the whole predicted region is inner: and nothing outside it
        assert set(np.unique(picture).tolist()) == {0, 1}


def test_metaimage_predictions_are_nested(hard_cases, tmp_path):
    itk = pytest.importorskip("itk")
    folder, entries = hard_cases
    cases = []
    for entry in entries:
        images = []
        for name in [*entry["image"], entry["label"]]:
            data = read_array(folder / name).astype(np.float32 if name in entry["image"] else np.uint8)
            image = itk.image_from_array(np.ascontiguousarray(np.transpose(data)))
            image.SetSpacing([0.8, 0.8, 5.0])
            target = tmp_path / Path(name).name.replace(".nii.gz", ".mhd")
            itk.imwrite(image, str(target))
            images.append(target.name)
        cases.append({"image": images[:-1], "label": images[-1]})
    config = parse_config(nested_config(cases, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True), tmp_path)
    predictor = Predictor([Undertrained()], SimpleInferer(), "sigmoid", CPU)
    predictions = list(iter_predictions(predictor, config, config.groups["training"]))
    written = predict_cases(predictor, config, config.groups["training"], tmp_path / "out")
    for path, prediction in zip(written, predictions, strict=True):
        assert path.suffix == ".mhd"
        assert_nested(prediction.label_map.numpy(), prediction.probabilities.numpy(), BRATS)
        np.testing.assert_array_equal(read_array(path), prediction.label_map.numpy())


def test_softmax_grouped_labels_decode_to_each_group_s_first_value(hard_cases):
    folder, entries = hard_cases
    raw = nested_config(entries, 3, 4, [[2, 1], 4], desired_shape=[16, 16, 16], resample=True)
    raw["dataset"]["setup_label_hierarchy"] = False
    raw["model"]["out_channels"] = 3
    raw["loss"] = {"name": "DiceLoss", "softmax": True, "to_onehot_y": False}
    config = parse_config(raw, folder)
    predictor = Predictor([Undertrained()], SimpleInferer(), "softmax", CPU)
    for prediction in iter_predictions(predictor, config, config.groups["training"]):
        probabilities = prediction.probabilities
        expected = torch.tensor([0, 2, 4], dtype=torch.int16)[probabilities.argmax(0)]
        assert torch.equal(prediction.label_map, expected)
        assert set(prediction.label_map.unique().tolist()) <= {0, 2, 4}
