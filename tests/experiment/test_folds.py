"""Cross-validation as restartable steps (unet3d/experiment/folds.py): fold configs, skip/resume of folds, failures,
the summary, an inner validation split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli, with_cv
from unet3d import checkpoint as ckpt
from unet3d.errors import ConfigError
from unet3d.experiment.run import run_experiment
from unet3d.training.history import LOG_FILENAME
from unet3d.training.options import RunOptions


@pytest.fixture
def cv_run(experiment, tmp_path):
    """A finished 3-fold run of 2 epochs; returns (config path, CV work dir)."""

    def disk_cached_cv(config):
        with_cv()(config)
        config["dataset"]["cache"] = "disk"  # shared by the folds

    config = experiment("cv", n_validation=0, n_epochs=2, mutate=disk_cached_cv)
    result = run_experiment(config, tmp_path, RunOptions(seed=1))
    assert not result.failed
    return config, tmp_path / "cv"


def test_three_fold_run_writes_splits_fold_configs_folders_and_summary(cv_run):
    _, work = cv_run
    splits = json.loads((work / "splits.json").read_text())
    held_out = [fold["validation"] for fold in splits["folds"]]
    all_ids = sorted(i for fold in held_out for i in fold)
    assert len(all_ids) == 6 and len(set(all_ids)) == 6
    for k, fold in enumerate(splits["folds"], start=1):
        fold_config = json.loads((work / f"fold{k}.json").read_text())
        assert "cross_validation" not in fold_config
        val_ids = [case["case_id"] for case in fold_config["validation_filenames"]]
        train_ids = [case["case_id"] for case in fold_config["training_filenames"]]
        assert val_ids == fold["validation"] and sorted(train_ids + val_ids) == all_ids
        assert all(Path(p).is_absolute() for case in fold_config["training_filenames"] for p in case["image"])
        assert fold_config["dataset"]["cache_dir"] == str(work / "cache")
        assert list(pd.read_csv(work / f"fold{k}" / LOG_FILENAME)["epoch"]) == [1, 2]
    summary = pd.read_csv(work / "cv_summary.csv")
    assert list(summary["fold"].astype(str)) == ["1", "2", "3", "mean", "sd"]
    fold_dice = summary["val_dice"][:3].astype(float)
    assert float(summary["val_dice"][3]) == pytest.approx(fold_dice.mean(), abs=1e-4)
    assert float(summary["val_dice"][4]) == pytest.approx(fold_dice.std(ddof=1), abs=1e-4)
    assert {"best_epoch", "val_loss", "val_dice_2+1+4", "training_time_s", "samples_per_s"} <= set(summary.columns)
    for k in (1, 2, 3):  # a fold's throughput: the median over its epochs (the first pays for filling the cache)
        median = pd.read_csv(work / f"fold{k}" / LOG_FILENAME)["samples_per_s"].median()
        assert float(summary["samples_per_s"][k - 1]) == pytest.approx(median, abs=1e-4) and median > 0


def test_rerun_after_finishing_only_prints_the_summary(cv_run, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unet3d")
    config, work = cv_run
    before = {k: (work / f"fold{k}/model.pth").stat().st_mtime_ns for k in (1, 2, 3)}
    result = run_experiment(config, tmp_path, RunOptions(seed=1)).cross_validation
    assert result.skipped == [1, 2, 3] and result.trained == [] and not result.failed
    assert {k: (work / f"fold{k}/model.pth").stat().st_mtime_ns for k in (1, 2, 3)} == before
    assert "cross-validation summary" in caplog.text


def test_raising_n_epochs_resumes_every_fold_without_reshuffling(cv_run, tmp_path):
    config, work = cv_run
    splits_before = (work / "splits.json").read_text()
    fold_before = (work / "fold2.json").read_text()
    with pytest.raises(ConfigError, match=r"fold configs are written once") as refused:
        run_experiment(config, tmp_path, RunOptions(seed=1), overrides={"training.n_epochs": 3})
    assert "  fold2.json: training.n_epochs: 2 → 3" in str(refused.value).splitlines()
    assert (work / "fold2.json").read_text() == fold_before
    options = RunOptions(seed=1, update_fold_configs=True)
    result = run_experiment(config, tmp_path, options, overrides={"training.n_epochs": 3})
    assert result.cross_validation.trained == [1, 2, 3]
    assert (work / "splits.json").read_text() == splits_before
    for k in (1, 2, 3):
        assert list(pd.read_csv(work / f"fold{k}" / LOG_FILENAME)["epoch"]) == [1, 2, 3]
    assert pd.read_csv(work / "cv_summary.csv")["epochs"][:3].astype(float).tolist() == [3, 3, 3]


def test_fold_selection_and_a_failed_fold_that_spares_the_others(experiment, tmp_path):
    config = experiment("cvsel", n_validation=0, n_epochs=1, mutate=with_cv())
    result = run_experiment(config, tmp_path, RunOptions(seed=1), folds=[2]).cross_validation
    work = tmp_path / "cvsel"
    assert result.trained == [2] and not (work / "fold1").exists() and not (work / "cv_summary.csv").exists()
    (work / "fold2" / "model.pth").write_bytes(b"not a checkpoint")
    result = run_experiment(config, tmp_path, RunOptions(seed=1)).cross_validation
    assert result.trained == [1, 3] and list(result.failed) == [2]
    assert "cannot load checkpoint" in result.failed[2]
    assert ckpt.load_checkpoint(work / "fold3/model.pth")["epoch"] == 1


def test_summary_on_demand_lists_missing_folds(experiment, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unet3d")
    config = experiment("cvsum", n_validation=0, n_epochs=1, mutate=with_cv())
    partial = run_experiment(config, tmp_path, RunOptions(seed=1), folds=[1, 3]).cross_validation
    assert partial.unfinished == [2] and not (tmp_path / "cvsum/postprocessing.json").exists()
    assert not (tmp_path / "cvsum/cv_summary.csv").exists()
    result = run_experiment(config, tmp_path, RunOptions(seed=1), summary_only=True).cross_validation
    assert result.trained == [] and not (tmp_path / "cvsum/fold2").exists()
    summary = pd.read_csv(tmp_path / "cvsum/cv_summary.csv")
    assert list(summary["fold"].astype(str)) == ["1", "3", "mean", "sd"]
    assert "folds [2] are not finished and not included" in caplog.text


def test_inner_validation_fraction_keeps_the_held_out_cases_out_of_model_selection(experiment, tmp_path):
    config = experiment("cvinner", n_validation=0, n_epochs=1, mutate=with_cv(n_folds=2, validation_fraction=0.34))
    assert not run_experiment(config, tmp_path, RunOptions(seed=1)).failed
    work = tmp_path / "cvinner"
    splits = json.loads((work / "splits.json").read_text())
    assert splits["validation_fraction"] == 0.34
    for k, fold in enumerate(splits["folds"], start=1):
        inner, held = fold["inner_validation"], fold["validation"]
        assert len(inner) == 1 and not set(inner) & set(held)
        assert sorted(fold["training"] + inner + held) == sorted(f"case_{i:03d}_flair" for i in range(6))
        fold_config = json.loads((work / f"fold{k}.json").read_text())
        assert [c["case_id"] for c in fold_config["validation_filenames"]] == inner
        assert [c["case_id"] for c in fold_config["heldout_filenames"]] == held
        assert (work / f"fold{k}/heldout/metrics.csv").exists()
    summary = pd.read_csv(work / "cv_summary.csv")
    heldout = pd.read_csv(work / "fold1/heldout/metrics.csv").set_index("case_id")
    assert float(summary.loc[0, "dice_4"]) == pytest.approx(float(heldout.loc["mean", "dice_4"]), abs=1e-4)
    changed = experiment("cvinner", n_validation=0, n_epochs=1, mutate=with_cv(n_folds=2, validation_fraction=0.5))
    result = run_cli("train", "--config_filename", str(changed), "--output_dir", str(tmp_path), timeout=300)
    assert result.returncode == 2 and "was written with validation_fraction 0.34" in result.stderr
