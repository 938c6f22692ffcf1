"""The library behind unet3d-evaluate (unet3d/evaluation/evaluate.py): which cases are scored against what."""

from __future__ import annotations

import json

import pytest

import unet3d
from unet3d.config.cases import cases_from_folders
from unet3d.errors import ConfigError, DataError
from unet3d.evaluation.evaluate import evaluate


def test_evaluate_scores_label_maps_against_a_ground_truth_folder(tmp_path, tiny_data):
    import shutil

    folder, entries = tiny_data
    predictions, truth = tmp_path / "predictions", tmp_path / "truth"
    predictions.mkdir()
    truth.mkdir()
    for entry in entries[:2]:
        label = folder / entry["label"]
        shutil.copy(label, predictions / label.name.replace("_seg", ""))
        shutil.copy(label, truth / label.name.replace("_seg", ""))
    config = tmp_path / "labels.json"
    config.write_text(
        json.dumps(
            {
                "model": {"name": "UNet"},
                "optimizer": {"name": "Adam"},
                "loss": {"name": "DiceLoss", "sigmoid": True},
                "dataset": {"labels": [2, 1, 4], "setup_label_hierarchy": True},
            }
        )
    )
    table = unet3d.evaluate(predictions, config, ground_truth=truth)
    assert list(table["case_id"]) == ["case_000", "case_001"]
    assert (table[["dice_2+1+4", "dice_1+4", "dice_4"]] == 1.0).all().all()
    assert (predictions / "metrics.csv").exists()
    unet3d.evaluate(predictions, config, ground_truth=truth)  # its own earlier table: replaced without asking
    truth_file = truth / "case_000.nii.gz"
    before = truth_file.read_bytes()
    for output in (truth_file, config, predictions / "case_001.nii.gz"):
        with pytest.raises(ConfigError, match=rf"refusing to write {output} \(the metrics table\): it is "):
            unet3d.evaluate(predictions, config, ground_truth=truth, output=output, overwrite=True)
    assert truth_file.read_bytes() == before
    notes = tmp_path / "notes.csv"
    notes.write_text("my,notes\n")
    with pytest.raises(ConfigError, match=r"notes.csv \(the metrics table\): it exists and this command did not"):
        unet3d.evaluate(predictions, config, ground_truth=truth, output=notes)
    assert notes.read_text() == "my,notes\n"
    unet3d.evaluate(predictions, config, ground_truth=truth, output=notes, overwrite=True)
    assert notes.read_text().startswith("case_id,")


def test_ground_truth_files_are_matched_by_case_id_in_any_format(tmp_path):
    predictions, truth = tmp_path / "pred", tmp_path / "gt"
    predictions.mkdir()
    truth.mkdir()
    for name in ("b.nii.gz", "a.nii.gz", "c.png", "a_probabilities.nii.gz", "metrics.csv"):
        (predictions / name).write_bytes(b"")
    for name in ("a.nrrd", "b.nii.gz"):
        (truth / name).write_bytes(b"")
    cases = cases_from_folders(predictions, truth)
    assert [case.case_id for case in cases] == ["a", "b", "c"]  # probability maps and other files are no predictions
    assert [case.label for case in cases] == [truth / "a.nrrd", truth / "b.nii.gz", truth / "c.png"]  # c: missing
    assert all(case.images == [] for case in cases)


def test_missing_folders_and_an_empty_predictions_folder_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"nowhere: predictions folder does not exist"):
        cases_from_folders(tmp_path / "nowhere", tmp_path / "empty")
    with pytest.raises(DataError, match=r"nowhere: ground-truth folder does not exist"):
        cases_from_folders(tmp_path / "empty", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"empty: no prediction files \(<case_id>.nii.gz, .png, .mhd, ...\)"):
        cases_from_folders(tmp_path / "empty", tmp_path / "empty")


def test_a_config_without_labels_names_the_missing_key(tmp_path):
    config = tmp_path / "unlabelled.json"
    sections = {"model": {"name": "UNet"}, "optimizer": {"name": "Adam"}, "loss": {"name": "DiceLoss"}}
    config.write_text(json.dumps(sections))
    with pytest.raises(ConfigError, match=r"^dataset.labels: required to know which regions to score"):
        evaluate(tmp_path, config, ground_truth=tmp_path)
    assert list(tmp_path.iterdir()) == [config]  # nothing written
