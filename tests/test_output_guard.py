"""The output guard (unet3d/output_guard.py): one rule for every file a command writes (issue 22)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from unet3d.errors import ConfigError
from unet3d.output_guard import MAX_LINES, Inputs, check_outputs, work_dir_file


def test_an_input_is_refused_through_a_symlink_a_dotdot_path_and_a_hard_link_even_with_replace(tmp_path):
    image = tmp_path / "data" / "a_t1.nii.gz"
    image.parent.mkdir()
    image.write_bytes(b"scan")
    inputs = Inputs().add_cases([SimpleNamespace(case_id="a", images=[image], label=None)], "the config exp.json")
    os.symlink(image.parent, tmp_path / "alias")
    os.link(image, tmp_path / "hard.nii.gz")
    for path in (
        tmp_path / "alias" / image.name,
        tmp_path / "data" / ".." / "data" / image.name,
        tmp_path / "hard.nii.gz",
    ):
        with pytest.raises(ConfigError, match=r"would replace image 1 of case 'a' of the config exp.json"):
            check_outputs({path: "a label map"}, inputs, replace=True)
    assert image.read_bytes() == b"scan"


def test_work_dir_files_are_recognised_by_the_folder_s_markers(tmp_path):
    (tmp_path / "model.pth").write_bytes(b"x")
    assert work_dir_file(tmp_path / "config.json") == f"config.json of the unet3d work dir {tmp_path}"
    assert work_dir_file(tmp_path / "model_epoch3.pth") is not None and work_dir_file(tmp_path / "fold2.json")
    assert work_dir_file(tmp_path / "case_000.nii.gz") is None  # a prediction may go there
    assert work_dir_file(tmp_path / "elsewhere" / "config.json") is None  # no work dir there


def test_an_existing_file_needs_replace_unless_the_command_made_it(tmp_path):
    mine = tmp_path / "notes.csv"
    mine.write_text("mine")
    with pytest.raises(ConfigError, match=r"notes.csv: exists and was not written by this command; .* --overwrite"):
        check_outputs({mine: "the metrics table"}, Inputs())
    check_outputs({mine: "the metrics table"}, Inputs(), replace=True)
    check_outputs({mine: "the metrics table"}, Inputs(), made_here=lambda path: path == mine)
    check_outputs({tmp_path / "new.csv": "the metrics table"}, Inputs())  # nothing there: nothing to ask


def test_a_folder_is_refused_and_long_lists_are_cut(tmp_path):
    with pytest.raises(ConfigError, match="is a folder; the export needs a file name"):
        check_outputs({tmp_path: "the export"}, Inputs(), replace=True)
    inputs = Inputs()
    outputs = {}
    for i in range(MAX_LINES + 3):
        path = tmp_path / f"c{i}.nii.gz"
        path.write_bytes(b"x")
        inputs.add(path, f"input {i}")
        outputs[path] = f"map {i}"
    with pytest.raises(ConfigError) as raised:
        check_outputs(outputs, inputs)
    lines = str(raised.value).splitlines()
    assert len(lines) == MAX_LINES + 1 and lines[-1] == "... and 3 more files alike"
    assert Path(lines[0].split(":")[0]) == tmp_path / "c0.nii.gz"
