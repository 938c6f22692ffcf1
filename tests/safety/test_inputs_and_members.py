"""What goes into a run is what the user meant (issue 11, items 7, 9, 10): one work dir per config file, no file in two
cases, symlinked case folders followed, and no ensemble silently built from missing or unfinished folds."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from unet3d.config.cases import cases_in_folder
from unet3d.data.synthetic import write_dataset
from unet3d.errors import CheckpointError, DataError
from unet3d.experiment.run import run_experiment, work_dir_for
from unet3d.prediction import ensemble_members


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("exp.json", "exp"),
        ("exp.v1.json", "exp.v1"),
        ("exp.v2.json", "exp.v2"),
        ("EXP.JSON", "EXP"),
        ("exp", "exp_run"),
    ],
)
def test_the_work_dir_is_the_whole_file_name_without_json(tmp_path, name, expected):
    assert work_dir_for(tmp_path / name, None) == tmp_path / expected
    assert work_dir_for(tmp_path / name, tmp_path / "out") == tmp_path / "out" / expected


def test_a_file_listed_under_two_case_ids_is_refused_before_training(experiment, tmp_path):
    path = experiment("duplicate")
    config = json.loads(path.read_text())
    twin = dict(config["training_filenames"][0], case_id="twin")
    config["validation_filenames"].append(twin)
    path.write_text(json.dumps(config))
    with pytest.raises(DataError) as raised:
        run_experiment(path, tmp_path)
    lines = str(raised.value).splitlines()
    assert len(lines) == 5  # four images and the label, each named once
    assert lines[0].startswith("validation_filenames[2] (twin): ")
    assert "is also a file of training_filenames[0] (case_000_flair); a file may belong to one case" in lines[0]
    assert not (tmp_path / "duplicate").exists()


def test_case_folders_behind_symlinks_are_found_and_counted(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unet3d")
    write_dataset(tmp_path / "real", 1, seed=1, shape_range=(16, 16), with_labels=False)
    write_dataset(tmp_path / "elsewhere", 2, seed=2, shape_range=(16, 16), with_labels=False, prefix="linked")
    os.symlink(tmp_path / "elsewhere" / "linked_000", tmp_path / "real" / "linked_000")
    os.symlink(tmp_path / "elsewhere" / "linked_001", tmp_path / "real" / "linked_001")
    os.symlink(tmp_path / "real", tmp_path / "real" / "loop")  # a link back up must not loop forever
    cases = cases_in_folder(tmp_path / "real", ["_flair.nii.gz", "_t1.nii.gz", "_t1ce.nii.gz", "_t2.nii.gz"])
    assert [case.case_id for case in cases] == ["case_000", "linked_000", "linked_001"]
    assert "found 3 case(s)" in caplog.text


def fake_fold(fold_dir: Path, epoch: int, n_epochs: int, best: int | None = None) -> None:
    fold_dir.mkdir(parents=True)
    state = {"epoch": epoch, "best_epoch": best or epoch, "config": {"training": {"n_epochs": n_epochs}}, "model": {}}
    torch.save(state, fold_dir / "model.pth")
    if best is not None:
        torch.save({**state, "epoch": best}, fold_dir / "model_best.pth")


def test_an_ensemble_of_a_cv_dir_with_a_missing_and_an_unfinished_fold_is_refused(tmp_path):
    for k in (1, 2, 3):
        (tmp_path / f"fold{k}.json").write_text("{}")
    fake_fold(tmp_path / "fold1", epoch=8, n_epochs=8, best=6)
    fake_fold(tmp_path / "fold2", epoch=1, n_epochs=8)
    with pytest.raises(CheckpointError) as raised:
        ensemble_members([tmp_path])
    assert str(raised.value).splitlines() == [
        f"{tmp_path / 'fold3'}: no trained model",
        f"{tmp_path / 'fold2'}: not finished (epoch 1 of 8)",
        "finish these folds (rerun unet3d-train) or predict with --allow_partial",
    ]


def test_allow_partial_takes_what_exists_and_says_which_epochs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unet3d")
    for k in (1, 2):
        (tmp_path / f"fold{k}.json").write_text("{}")
    fake_fold(tmp_path / "fold1", epoch=8, n_epochs=8, best=6)
    fake_fold(tmp_path / "fold2", epoch=1, n_epochs=8)
    assert ensemble_members([tmp_path], allow_partial=True) == [
        tmp_path / "fold1" / "model_best.pth",
        tmp_path / "fold2" / "model.pth",
    ]
    assert "fold1 (model_best.pth, epoch 6; trained 8/8); fold2 (model.pth, epoch 1; trained 1/8)" in caplog.text
    assert "--allow_partial: " in caplog.text


def test_a_fold_stopped_early_counts_as_finished(tmp_path):
    fold = tmp_path / "fold1"
    fold.mkdir()
    state = {"model": {"w": torch.zeros(1)}, "epoch": 5, "best_epoch": 2}
    state["config"] = {"training": {"n_epochs": 50, "early_stopping_patience": 3}}
    torch.save(state, fold / "model.pth")
    assert ensemble_members([fold]) == [fold / "model.pth"]
