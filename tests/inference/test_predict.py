"""Predictions after training and with unet3d-predict: geometry, label values, names, ensembles, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from unet3d.config.schema import Case
from unet3d.experiment.run import run_experiment
from unet3d.inference.inputs import cases_in_folder
from unet3d.inference.predictor import Predictor, mirror_axes
from unet3d.training.run import RunOptions


def test_every_fold_predicts_its_held_out_and_extra_cases_in_their_original_space(trained_cv):
    _, work, _ = trained_cv
    for k in (1, 2):
        fold = json.loads((work / f"fold{k}.json").read_text())
        for group in ("validation", "test"):
            for case in fold[f"{group}_filenames"]:
                prediction = nib.load(work / f"fold{k}" / group / f"{case['case_id']}.nii.gz")
                image = nib.load(case["image"][0])
                assert prediction.shape == image.shape
                np.testing.assert_allclose(prediction.affine, image.affine, atol=1e-4)
                assert set(np.unique(np.asanyarray(prediction.dataobj))) <= {0, 1, 2, 4}
        metrics = pd.read_csv(work / f"fold{k}" / "validation" / "metrics.csv")
        assert list(metrics["case_id"])[-4:] == ["mean", "median", "sd", "n_nan"]
        assert {"dice_2+1+4", "dice_1+4", "dice_4", "hd95_2+1+4"} <= set(metrics.columns)
        assert not (work / f"fold{k}" / "test" / "metrics.csv").exists(), "unlabelled cases get no metrics"
    summary = pd.read_csv(work / "cv_summary.csv")
    assert {"mean_dice", "dice_2+1+4", "hd95_4"} <= set(summary.columns)
    fold1 = pd.read_csv(work / "fold1/validation/metrics.csv").set_index("case_id")
    assert float(summary.loc[0, "dice_2+1+4"]) == pytest.approx(float(fold1.loc["mean", "dice_2+1+4"]), abs=1e-4)


def test_predictions_are_not_redone_when_up_to_date(trained_cv):
    config_path, work, _ = trained_cv
    stamp = (work / "fold1/predictions.json").stat().st_mtime_ns
    result = run_experiment(config_path, work.parent, RunOptions(seed=1)).cross_validation
    assert result.skipped == [1, 2]
    assert (work / "fold1/predictions.json").stat().st_mtime_ns == stamp


def test_folder_cases_are_found_by_modality_endings_and_duplicates_refused(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        for modality in ("_t1.nii.gz", "_t1ce.nii.gz"):
            (tmp_path / sub / f"{sub}case{modality}").write_bytes(b"")
    cases = cases_in_folder(tmp_path, ["_t1.nii.gz", "_t1ce.nii.gz"])
    assert [c.case_id for c in cases] == ["acase", "bcase"]
    assert [p.name for p in cases[0].images] == ["acase_t1.nii.gz", "acase_t1ce.nii.gz"]
    (tmp_path / "c").mkdir()
    for modality in ("_t1.nii.gz", "_t1ce.nii.gz"):
        (tmp_path / "c" / f"acase{modality}").write_bytes(b"")
    with pytest.raises(Exception, match="several cases are named 'acase'"):
        cases_in_folder(tmp_path, ["_t1.nii.gz", "_t1ce.nii.gz"])


class Constant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2, *x.shape[2:]), self.value) + x[:, :1]


def test_ensemble_averages_probabilities_and_tta_undoes_each_mirroring():
    from monai.inferers import SimpleInferer

    image = torch.randn(1, 1, 4, 5, 6)
    single = [
        Predictor([Constant(v)], SimpleInferer(), "sigmoid", torch.device("cpu")).probabilities(image)
        for v in (-1.0, 2.0)
    ]
    both = Predictor([Constant(-1.0), Constant(2.0)], SimpleInferer(), "sigmoid", torch.device("cpu"))
    torch.testing.assert_close(both.probabilities(image), (single[0] + single[1]) / 2)
    mirrored = Predictor([Constant(0.5)], SimpleInferer(), "sigmoid", torch.device("cpu"), tta=True)
    torch.testing.assert_close(mirrored.probabilities(image), torch.sigmoid(image[:, :1] + 0.5).expand(1, 2, 4, 5, 6))
    assert len(mirror_axes(3)) == 8 and mirror_axes(2) == [(), (2,), (3,), (2, 3)]


def test_case_ids_name_outputs_uniquely(tmp_path):
    from unet3d.inference.writing import prediction_path

    assert (
        prediction_path(tmp_path, Case([Path("x/a_flair.nii.gz")], None, "sub-01_ses-2")).name == "sub-01_ses-2.nii.gz"
    )


def test_written_whole_region_scores_as_the_whole_tumour_channel_alone(trained_cv):
    """Issue 10: a tiny hierarchy model after 2 epochs (inner channels not yet trained). The label maps written for a
    fold's held-out cases score, on the whole tumour, exactly what the whole-tumour channel thresholded alone scores
    in the same (original) space; an inner channel never paints outside it."""
    from unet3d.config.load import load_config
    from unet3d.evaluation.metrics import read_labels
    from unet3d.experiment.steps import best_model_path
    from unet3d.inference.predictor import make_predictor
    from unet3d.inference.writing import iter_predictions

    _, work, _ = trained_cv
    for fold in (1, 2):
        config = load_config(work / f"fold{fold}.json")
        predictor = make_predictor(config, [best_model_path(work / f"fold{fold}")], torch.device("cpu"))
        alone = []
        for prediction in iter_predictions(predictor, config, config.groups["validation"]):
            truth = read_labels(prediction.case.label)[0] > 0
            whole = prediction.probabilities[0].numpy() > 0.5
            alone.append(2 * (whole & truth).sum() / (whole.sum() + truth.sum()))
            np.testing.assert_array_equal(prediction.label_map.numpy() > 0, whole)
        metrics = pd.read_csv(work / f"fold{fold}" / "validation" / "metrics.csv").set_index("case_id")
        assert metrics.loc["mean", "dice_2+1+4"] == pytest.approx(np.mean(alone), abs=1e-5)


def test_prediction_autocasts_in_the_precision_the_model_was_trained_in(monkeypatch):
    """A `training.amp: "bf16"` model is predicted (and full-validated) in bfloat16, not float16; on the CPU there is
    no autocast at all."""
    from contextlib import nullcontext

    from monai.inferers import SimpleInferer

    import unet3d.inference.predictor as predict_module
    from unet3d.devices import amp_dtype

    chosen = []

    def spy(dtype, device):
        chosen.append(dtype)
        return nullcontext()

    monkeypatch.setattr(predict_module, "autocast", spy)
    image = torch.randn(1, 1, 4, 5, 6)
    for amp in ("bf16", "fp16", True, False):
        predictor = Predictor([Constant(0.0)], SimpleInferer(), "sigmoid", torch.device("cpu"), amp=amp)
        predictor._forward(predictor.models[0], image, torch.device("cuda"))  # what a GPU run would ask for
        predictor._forward(predictor.models[0], image, torch.device("cpu"))
    assert chosen == [torch.bfloat16, None, torch.float16, None, torch.float16, None, None, None]
    assert amp_dtype("bf16", torch.device("cuda")) is torch.bfloat16
