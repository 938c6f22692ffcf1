"""`unet3d-evaluate` as a user runs it: exit codes, the printed summary, metrics.csv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli
from unet3d.cli.evaluate import main


def evaluate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_cli("evaluate", *args, cwd=cwd, timeout=120)


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([1.0, 1.0, 2.0, 1.0])), path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A config with two validation cases (labels relative to it), ground truth, and predictions for both."""
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0], truth[1], truth[2] = 2, 1, 4
    prediction = truth.copy()
    prediction[2] = 0  # enhancing tumour missed
    for case_id in ("a", "b"):
        save(tmp_path / f"gt/{case_id}.nii.gz", truth)
    save(tmp_path / "pred/a.nii.gz", truth)
    save(tmp_path / "pred/b.nii.gz", prediction)
    config = {
        "model": {"name": "DynUNet"},
        "optimizer": {"name": "Adam"},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        "dataset": {"labels": [2, 1, 4], "setup_label_hierarchy": True},
        "validation_filenames": [
            {"image": [f"img/{c}_t1.nii.gz"], "label": f"gt/{c}.nii.gz", "case_id": c} for c in ("a", "b")
        ],
    }
    (tmp_path / "exp.json").write_text(json.dumps(config))
    return tmp_path


def test_scores_the_validation_cases_prints_the_summary_and_writes_metrics(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = evaluate(
        "--predictions", str(project / "pred"), "--config_filename", str(project / "exp.json"), cwd=elsewhere
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["metric", "mean", "median", "sd", "n_nan"]
    # case b: whole tumour 2·32/(48+32) = 0.8, enhancing missed (Dice 0, HD95 undefined); case a is perfect
    assert lines[1].split() == ["dice_2+1+4", "0.9000", "0.9000", "0.1414", "0"]
    assert lines[3].split() == ["dice_4", "0.5000", "0.5000", "0.7071", "0"]
    assert lines[6].split() == ["hd95_4", "0.0000", "0.0000", "0.0000", "1"]
    assert lines[-1] == f"2 cases; metrics in {project / 'pred' / 'metrics.csv'}"
    rows = pd.read_csv(project / "pred/metrics.csv").set_index("case_id")
    assert list(rows.index) == ["a", "b", "mean", "median", "sd", "n_nan"]
    assert rows.loc["b", "dice_2+1+4"] == pytest.approx(0.8) and rows.loc["b", "hd95_2+1+4"] == pytest.approx(1.0)
    assert rows.loc["b", "dice_4"] == 0.0 and np.isnan(rows.loc["b", "hd95_4"])
    assert not list(elsewhere.iterdir())


def test_missing_predictions_folder_exits_2_with_one_line(project):
    result = evaluate("--predictions", str(project / "nowhere"), "--config_filename", str(project / "exp.json"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {project / 'nowhere'}: predictions folder does not exist"]


def test_ground_truth_folder_scores_every_prediction_found(project, capsys):
    output = project / "out/scores.csv"
    code = main(
        [
            "--predictions",
            str(project / "pred"),
            "--config_filename",
            str(project / "exp.json"),
            "--group",
            "nonexistent",
            "--ground_truth",
            str(project / "gt"),
            "--output",
            str(output),
        ]
    )
    assert code == 0
    assert list(pd.read_csv(output)["case_id"])[:2] == ["a", "b"]
    assert not (project / "pred/metrics.csv").exists()
    assert f"metrics in {output}" in capsys.readouterr().out


def test_missing_ground_truth_for_a_prediction_exits_2_naming_it(project, capsys):
    (project / "gt/b.nii.gz").unlink()
    code = main(
        [
            "--predictions",
            str(project / "pred"),
            "--config_filename",
            str(project / "exp.json"),
            "--ground_truth",
            str(project / "gt"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no ground-truth label file for 1 case(s): b ({project / 'gt/b.nii.gz'} does not exist)"]


def test_unknown_group_exits_2_with_the_groups_the_config_has(project, capsys):
    args = ["--predictions", str(project / "pred"), "--config_filename", str(project / "exp.json")]
    assert main([*args, "--group", "validaton"]) == 2
    err = capsys.readouterr().err
    assert f"--group validaton: the config {project / 'exp.json'} has no validaton_filenames" in err
    assert "did you mean 'validation'?" in err and "groups there: validation_filenames" in err
    assert err.rstrip().endswith("choose one with --group, or give --ground_truth")
