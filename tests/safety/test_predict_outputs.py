"""unet3d-predict never writes over an input of the run (issue 11, item 1): refused with exit 2 before any model is
loaded, and every input file is left as it was."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli
from unet3d.data.synthetic import write_dataset
from unet3d.errors import ConfigError
from unet3d.prediction import predict


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.nii.gz")}


@pytest.fixture
def single_modality(tmp_path: Path) -> tuple[Path, Path]:
    """Two single-modality cases under data/ and a config that lists them; a model file that is not a checkpoint
    (loading it would fail with another message: the refusal must come first)."""
    data = tmp_path / "data"
    entries = write_dataset(data, 2, seed=3, shape_range=(16, 16), n_modalities=1)
    config = {
        "model": {"name": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
                  "strides": [2]},
        "optimizer": {"name": "Adam"},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        "dataset": {"labels": [2, 1, 4], "setup_label_hierarchy": True, "desired_shape": [16, 16, 16]},
        "training_filenames": [{"image": [f"data/{p}" for p in e["image"]], "label": f"data/{e['label']}"}
                               for e in entries],
    }  # fmt: skip
    (tmp_path / "exp.json").write_text(json.dumps(config))
    (tmp_path / "model.pth").write_bytes(b"not a checkpoint")
    return tmp_path, data


def test_predicting_a_case_folder_into_itself_is_refused_and_loses_nothing(single_modality):
    root, data = single_modality
    before = digest(data)
    folder = data / "case_000"
    done = run_cli(
        "predict", "--model_filename", str(root / "model.pth"), "--config_filename", str(root / "exp.json"),
        "--input", str(folder), "--output_directory", str(folder),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert "found 2 case(s)" in done.stderr and "Traceback" not in done.stderr
    assert lines and all(line.startswith(f"error: refusing to write {folder}/") for line in lines)
    assert "(the label map of case" in lines[0] and "): it is image 1 of case" in lines[0]
    assert lines[0].endswith("choose another output")
    assert digest(data) == before


def test_a_json_list_written_into_its_images_folder_is_refused(single_modality, tmp_path):
    root, data = single_modality
    listing = tmp_path / "list.json"
    flair = data / "case_001" / "case_001_flair.nii.gz"
    listing.write_text(json.dumps([{"image": [str(flair), str(flair.with_name("case_001_seg.nii.gz"))]}]))
    before = digest(data)
    refusal = rf"refusing to write {flair} \(the label map of case 'case_001_flair'\): it is image 1"
    with pytest.raises(ConfigError, match=refusal):
        predict(flair.parent, model_filenames=[root / "model.pth"], config_filename=root / "exp.json",
                input_path=listing)  # fmt: skip
    assert digest(data) == before


def test_an_output_folder_reached_through_a_symlink_is_refused(single_modality, tmp_path):
    root, data = single_modality
    alias = tmp_path / "alias"
    os.symlink(data / "case_000", alias)
    with pytest.raises(ConfigError, match=r"refusing to write .*: it is image 1 of case"):
        predict(alias, model_filenames=[root / "model.pth"], config_filename=root / "exp.json",
                input_path=data / "case_000")  # fmt: skip


def test_a_hard_link_to_an_input_in_the_output_folder_is_refused(single_modality, tmp_path):
    root, data = single_modality
    out = tmp_path / "out"
    out.mkdir()
    os.link(data / "case_000" / "case_000_flair.nii.gz", out / "case_000_flair.nii.gz")
    with pytest.raises(ConfigError, match=r"refusing to write .*: it is image 1 of case"):
        predict(out, model_filenames=[root / "model.pth"], config_filename=root / "exp.json",
                input_path=data / "case_000")  # fmt: skip


def test_a_label_the_model_was_trained_on_is_refused_even_with_another_config_and_overwrite(single_modality, tmp_path):
    # Issue 22, item 1: only the cases being predicted and the config given were guarded, not the model's own cases.
    root, data = single_modality
    given = json.loads((root / "exp.json").read_text())
    (root / "config.json").write_text(json.dumps(given))  # the model's config, as a work dir holds it beside model.pth
    given["training_filenames"] = given["training_filenames"][:1]
    (root / "other.json").write_text(json.dumps(given))
    label = data / "case_001" / "case_001_seg.nii.gz"
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(data / "case_001" / "case_001_flair.nii.gz", new / label.name)  # a new case named as the label
    before = digest(data)
    owner = f"the label of case 'case_001_flair' of the model's config {root / 'config.json'} (training_filenames)"
    refusal = f"refusing to write {label} (the label map of case 'case_001_seg'): it is {owner}"
    with pytest.raises(ConfigError, match=re.escape(refusal)):
        predict(label.parent, model_filenames=[root / "model.pth"], config_filename=root / "other.json",
                input_path=new, overwrite=True)  # fmt: skip
    assert digest(data) == before
