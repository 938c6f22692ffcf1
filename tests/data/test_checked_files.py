"""The file checks' memory (unet3d/data/checked_files.py): a case checked once is not read again until one of its
files or the check's settings change; a broken case is never remembered."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.data.test_checks import BRATS, new_case
from unet3d.data import checked_files, checks
from unet3d.data.checks import check_cases
from unet3d.errors import DataError


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A records folder of this test; files written by the test count as settled at once."""
    folder = tmp_path / "records"
    monkeypatch.setenv("UNET3D_CACHE_DIR", str(folder))
    monkeypatch.setattr(checked_files, "RACY_SECONDS", -60.0)
    return folder


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files the check reads whole, in order."""
    seen: list[str] = []
    original = checks.read_array

    def counting(path):
        seen.append(Path(path).name)
        return original(path)

    monkeypatch.setattr(checks, "read_array", counting)
    return seen


def test_a_second_check_reads_no_file_and_learns_the_same(tmp_path: Path, records: Path, reads: list[str]):
    cases = [new_case(tmp_path / "data", f"c{i}", seed=i) for i in range(3)]
    first = check_cases({"training": cases}, BRATS, labelled_groups=("training",))
    assert len(reads) == 3 * 5  # four images and the label map of each case
    reads.clear()
    again = check_cases({"training": cases}, BRATS, labelled_groups=("training",))
    assert reads == [] and again == first
    assert len(list(records.glob("file_checks/*/*.json"))) == 6  # each case with its label, and its images alone


def test_a_changed_file_is_read_again_and_only_its_case(tmp_path: Path, records: Path, reads: list[str]):
    cases = [new_case(tmp_path / "data", f"c{i}", seed=i) for i in range(2)]
    check_cases({"training": cases}, BRATS, labelled_groups=("training",))
    reads.clear()
    flair = cases[1].images[0]
    image = nib.load(flair)
    data = np.asarray(image.dataobj).copy()
    data[0, 0, 0] = np.nan  # same size on disk, new content
    nib.save(nib.Nifti1Image(data, image.affine, image.header), flair)
    with pytest.raises(DataError, match=rf"{flair.name}: 1 voxel\(s\) are NaN"):
        check_cases({"training": cases}, BRATS, labelled_groups=("training",))
    assert flair.name in reads and not {p.name for p in [*cases[0].images, cases[0].label]} & set(reads)
    reads.clear()
    with pytest.raises(DataError, match="NaN"):  # a broken case is reported by every run
        check_cases({"training": cases}, BRATS, labelled_groups=("training",))
    assert flair.name in reads


def test_a_touched_file_other_settings_or_memory_off_read_again(tmp_path, records, reads, monkeypatch):
    case = new_case(tmp_path / "data", "c0")
    check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    reads.clear()
    os.utime(case.label, ns=(time.time_ns(), time.time_ns() + 10**9))
    check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    assert sorted(reads) == sorted(p.name for p in [*case.images, case.label])  # the case is checked as a whole
    reads.clear()
    check_cases({"training": [case]}, {0, 1, 2, 4, 5}, labelled_groups=("training",))
    assert len(reads) == 5  # other declared labels: a check under other settings
    reads.clear()
    monkeypatch.setenv("UNET3D_CACHE_DIR", "off")
    reads.clear()
    check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    assert len(reads) == 5


def test_images_checked_with_their_label_map_are_not_read_for_a_prediction(tmp_path, records, reads):
    from dataclasses import replace

    case = new_case(tmp_path / "data", "c0")
    check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    reads.clear()
    check_cases({"test": [replace(case, label=None)]}, None)  # what unet3d-predict checks: the images
    assert reads == []


def test_files_written_moments_ago_are_not_remembered(tmp_path, monkeypatch, reads):
    monkeypatch.setenv("UNET3D_CACHE_DIR", str(tmp_path / "records"))
    case = new_case(tmp_path / "data", "c0")  # written now: within RACY_SECONDS
    check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    assert not list((tmp_path / "records").glob("**/*.json"))


def test_an_unwritable_records_folder_costs_a_warning_not_the_check(tmp_path, records, caplog):
    records.parent.mkdir(exist_ok=True)
    records.write_text("a file where the folder should be")
    case = new_case(tmp_path / "data", "c0")
    infos = check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    assert infos["training"][0].n_channels == 4
    assert "cannot record the file checks" in caplog.text


def test_a_damaged_or_foreign_record_is_a_miss_not_a_crash(tmp_path: Path, records: Path, reads: list[str]):
    case = new_case(tmp_path / "data", "c0")
    check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    for damage in ("{ not json", '{"info": {"n_channels": "four"}}', '{"info": {}}', "[1, 2]"):
        for record in records.glob("file_checks/*/*.json"):
            record.write_text(damage)
        reads.clear()
        infos = check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
        assert infos["training"][0].n_channels == 4 and len(reads) == 5, damage
    reads.clear()
    check_cases({"training": [case]}, BRATS, labelled_groups=("training",))
    assert reads == []  # the records were written anew
