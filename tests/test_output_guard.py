"""The one output guard (unet3d/output_guard.py) that every writer goes through: inputs, a work dir's checkpoints and
configs, and folders are never written; an existing file the command did not make only with the replace flag."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from unet3d.config.cases import parse_cases
from unet3d.data.synthetic_layouts import write_nnunet_dataset
from unet3d.errors import ConfigError
from unet3d.output_guard import Inputs, check_outputs, work_dir_file


@pytest.fixture(scope="module")
def data_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimpleNamespace]:
    """A two-case nnU-Net v2 data set and a config (what the guard reads of one) that trained on it."""
    dataset = write_nnunet_dataset(tmp_path_factory.mktemp("guard") / "DS", 2, seed=1, shape_range=(16, 16))
    cases = parse_cases(str(dataset), dataset.parent, "training_filenames")
    return dataset, SimpleNamespace(groups={"training": cases[:1], "validation": cases[1:]})


def refusal(outputs: dict[Path, str], inputs: Inputs, **options) -> str:
    with pytest.raises(ConfigError) as raised:
        check_outputs(outputs, inputs, **options)
    return str(raised.value)


def test_a_label_of_a_case_the_model_was_validated_on_is_never_replaced(data_set):
    # Issue 22, item 1: predicting DS/imagesTr into DS/labelsTr replaced the model's own training labels.
    dataset, config = data_set
    inputs = Inputs().add_config(config, "the model's config plan/fold1/config.json")
    label = dataset / "labelsTr" / "syn_001.nii.gz"
    message = refusal({label: "the label map of case 'syn_001'"}, inputs, replace=True)
    assert message == (
        f"refusing to write {label} (the label map of case 'syn_001'): it is the label of case 'syn_001' of the "
        "model's config plan/fold1/config.json (validation_filenames); choose another output"
    )


def test_the_data_set_s_description_is_an_input_of_every_config_that_uses_it(data_set):
    # Issue 22, items 2 and 3: an export and a planned config with --overwrite replaced DS/dataset.json.
    dataset, config = data_set
    inputs = Inputs().add_config(config, "the config exp.json")
    message = refusal({dataset / "dataset.json": "the exported network"}, inputs, replace=True)
    assert message.endswith(f"it is the description of the data set {dataset}; choose another output")


def test_paths_are_compared_resolved_through_symlinks_dots_and_relative_names(data_set, tmp_path, monkeypatch):
    dataset, config = data_set
    inputs = Inputs().add_config(config, "the config exp.json")
    alias = tmp_path / "alias.nii.gz"
    os.symlink(dataset / "imagesTr" / "syn_000_0001.nii.gz", alias)
    monkeypatch.chdir(dataset / "imagesTr")
    for path in (alias, dataset / "imagesTr" / ".." / "labelsTr" / "syn_000.nii.gz", Path("syn_000_0000.nii.gz")):
        assert "it is " in refusal({path: "an output"}, inputs, replace=True), path


def test_a_work_dir_s_checkpoints_configs_and_experiment_config_are_never_replaced(tmp_path):
    # Issue 22, item 2: unet3d-export --output fold1/model.pth replaced the resume point.
    fold = tmp_path / "exp" / "fold1"
    fold.mkdir(parents=True)
    for name in ("model.pth", "model_best.pth", "config.json", "training_log.csv"):
        (fold / name).write_text(name)
    (tmp_path / "exp" / "splits.json").write_text("{}")
    (tmp_path / "exp.json").write_text("{}")
    os.symlink(fold / "config.json", tmp_path / "link.json")
    for path in (fold / "model.pth", fold / "model_best.pth", fold / "config.json", tmp_path / "exp" / "fold1.json"):
        assert work_dir_file(path) == f"{path.name} of the unet3d work dir {path.parent}"
    assert work_dir_file(tmp_path / "link.json") == f"config.json of the unet3d work dir {fold}"
    assert work_dir_file(tmp_path / "exp.json") == f"the experiment config of the unet3d work dir {tmp_path / 'exp'}"
    assert work_dir_file(fold / "notes.txt") is None and work_dir_file(tmp_path / "other.json") is None
    message = refusal({fold / "model.pth": "the exported network"}, Inputs(), replace=True)
    assert message.endswith(f"it is model.pth of the unet3d work dir {fold}; choose another output")


def test_an_existing_file_is_replaced_only_with_the_flag_or_when_the_command_made_it(tmp_path):
    # Issue 22, item 3: without --overwrite, an existing <name>.fingerprint.json and .data_report.txt were replaced.
    notes = tmp_path / "exp.data_report.txt"
    notes.write_text("my notes")
    message = refusal({notes: "the data report"}, Inputs())
    assert message == (
        f"refusing to write {notes} (the data report): it exists and this command did not write it; choose another "
        "output, or pass --overwrite to replace it"
    )
    check_outputs({notes: "the data report"}, Inputs(), replace=True)
    check_outputs({notes: "the data report"}, Inputs(), made_here=lambda path: path == notes)
    check_outputs({tmp_path / "new.txt": "the data report"}, Inputs())
    assert notes.read_text() == "my notes"  # the guard only checks; it writes nothing


def test_a_folder_is_refused_and_every_refused_file_is_one_line(tmp_path):
    # Issue 22, item 2: an existing folder as --output was a traceback.
    outputs = {tmp_path: "the exported network", **{tmp_path / f"{i}.txt": "a file" for i in range(12)}}
    for path in list(outputs)[1:]:
        path.write_text("mine")
    lines = refusal(outputs, Inputs()).splitlines()
    assert lines[0] == f"refusing to write {tmp_path} (the exported network): it is a folder; give a file name"
    assert len(lines) == 11 and lines[-1] == "... and 3 more files alike"
