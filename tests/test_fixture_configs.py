"""3DUnetCNN's own example configs run unchanged, with only their file lists and sizes pointed at synthetic data.

The fixtures live in ../shared/fixtures/3dunetcnn beside a development checkout; a user's clone has no such folder,
so these tests skip there (the same schema is exercised by every other test through tests/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import run_cli
from unet3d import checkpoint as ckpt
from unet3d.data.synthetic import write_case, write_dataset

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "3dunetcnn"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="3DUnetCNN fixtures are not beside this checkout")


def train(*args: str) -> subprocess.CompletedProcess:
    return run_cli("train", *args)


def test_brats2020_config_trains_with_only_file_lists_and_sizes_changed(tmp_path):
    config = json.loads((FIXTURES / "brats2020_config.json").read_text())
    training = write_dataset(tmp_path / "data", 5, seed=1, shape_range=(20, 24))
    unlabelled = write_dataset(tmp_path / "data", 2, seed=2, prefix="val", shape_range=(20, 24), with_labels=False)
    config["training_filenames"] = [
        {"image": [f"data/{p}" for p in e["image"]], "label": f"data/{e['label']}"} for e in training
    ]
    config["bratsvalidation_filenames"] = [{"image": [f"data/{p}" for p in e["image"]]} for e in unlabelled]
    config["dataset"]["desired_shape"] = [64, 64, 64]  # the smallest shape its 5 stride-2 levels allow
    config["model"]["filters"] = [4, 4, 8, 8, 8, 8]
    config["training"]["n_epochs"] = 1
    path = tmp_path / "brats2020_config.json"
    path.write_text(json.dumps(config))
    result = train("--config_filename", str(path), "--fold", "1")
    assert result.returncode == 0, result.stderr
    work = tmp_path / "brats2020_config"
    assert len(json.loads((work / "splits.json").read_text())["folds"]) == 5
    assert ckpt.load_checkpoint(work / "fold1/model.pth")["epoch"] == 1
    assert (work / "fold1/training_log.csv").read_text().startswith("epoch,loss,lr,val_loss,val_dice")


def test_sppin_config_setup_keeps_each_subjects_visits_in_one_fold(tmp_path):
    config = json.loads((FIXTURES / "sppin_config.json").read_text())
    rng = np.random.default_rng(0)
    cases = []
    for subject in range(6):
        for visit in range(1 + subject % 3):
            case_id = f"PT_{subject:02d}_{visit}"
            entry = write_case(tmp_path / "aligned", case_id, (16, 16, 16), (1.0, 1.0, 1.0), rng)
            label = tmp_path / "aligned" / entry["label"]
            image = nib.load(label)  # sppin segments one label: merge the tumour regions
            nib.save(nib.Nifti1Image((np.asanyarray(image.dataobj) > 0).astype(np.uint8), image.affine), label)
            cases.append(
                {
                    "image": [f"aligned/{p}" for p in entry["image"]],
                    "label": f"./aligned/{entry['label']}",
                    "subject": f"PT_{subject:02d}",
                }
            )
    config["training_filenames"] = cases
    path = tmp_path / "sppin_config.json"
    path.write_text(json.dumps(config))
    result = train("--config_filename", str(path), "--setup_crossval_only")
    assert result.returncode == 0, result.stderr
    assert "legacy spelling" in result.stderr
    work = tmp_path / "sppin_config"
    folds = json.loads((work / "splits.json").read_text())["folds"]
    assert len(folds) == 5
    fold_of_subject: dict[str, set[int]] = {}
    for k, fold in enumerate(folds, start=1):
        for case_id in fold["validation"]:
            fold_of_subject.setdefault(case_id[:5], set()).add(k)
    assert all(len(f) == 1 for f in fold_of_subject.values()) and len(fold_of_subject) == 6
    assert not list(work.glob("fold*/model.pth"))
    assert subprocess.run(["bash", "-n", str(work / "submit_folds.sbatch")]).returncode == 0
