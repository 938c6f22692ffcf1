"""Cases (unet3d/config/cases.py): found in a folder by their modality endings, or read from a file list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from unet3d.config.cases import cases_from_input, cases_in_folder, modality_suffixes
from unet3d.config.load import parse_config
from unet3d.config.schema import Config
from unet3d.errors import ConfigError, DataError


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


MODALITIES = ("flair", "t1", "t1ce", "t2")


def listing(*cases: list[str]) -> Config:
    """A config whose training cases have these image files (relative to /data; they need not exist)."""
    return parse_config(
        {
            "model": {"name": "UNet"},
            "optimizer": {"name": "Adam"},
            "loss": {"name": "DiceLoss", "sigmoid": True},
            "training_filenames": [{"image": images} for images in cases],
        },
        base=Path("/data"),
    )


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_the_modality_endings_learnt_from_the_config_find_a_new_case_of_the_same_naming(tmp_path):
    config = listing([f"BraTS_001/BraTS_001_{m}.nii.gz" for m in MODALITIES])
    suffixes = modality_suffixes(config)
    assert [s.lstrip("_") for s in suffixes] == [f"{m}.nii.gz" for m in MODALITIES]  # after the case's common prefix
    touch(tmp_path / "BraTS_777", *(f"BraTS_777_{m}.nii.gz" for m in reversed(MODALITIES)))
    (case,) = cases_in_folder(tmp_path, suffixes)
    assert case.case_id == "BraTS_777" and case.label is None
    assert [p.name for p in case.images] == [f"BraTS_777_{m}.nii.gz" for m in MODALITIES]  # in the config's order


def test_one_image_per_case_is_found_by_its_format_ending_and_no_case_is_an_error():
    assert modality_suffixes(listing(["cars/car_0001.jpg"])) == [".jpg"]
    assert modality_suffixes(listing(["scans/lung.mhd"])) == [".mhd"]
    with pytest.raises(ConfigError, match="lists no case to learn the modality file names from; give --modality_"):
        modality_suffixes(listing())


def test_a_missing_folder_an_incomplete_case_and_no_match_are_data_errors(tmp_path):
    suffixes = ["_t1.nii.gz", "_t2.nii.gz"]
    with pytest.raises(DataError, match=r"nowhere: input folder does not exist"):
        cases_in_folder(tmp_path / "nowhere", suffixes)
    touch(tmp_path / "empty")
    with pytest.raises(DataError, match=r"empty: no image ending with '_t1.nii.gz' \(the first modality ending\)"):
        cases_in_folder(tmp_path / "empty", suffixes)
    touch(tmp_path / "cases", "a_t1.nii.gz", "a_t2.nii.gz", "b_t1.nii.gz")
    with pytest.raises(DataError) as raised:
        cases_in_folder(tmp_path / "cases", suffixes)
    incomplete = tmp_path / "cases" / "b_t1.nii.gz"
    assert (
        str(raised.value)
        == f"{incomplete.parent}: 1 case(s) lack a modality (_t1.nii.gz, _t2.nii.gz), e.g. {incomplete}"
    )


def test_an_empty_input_folder_names_where_the_missing_ending_came_from(tmp_path):
    touch(tmp_path / "empty")
    config = listing(["x/x_t1.nii.gz", "x/x_t2.nii.gz"])
    with pytest.raises(DataError, match=r"no image ending with 't1.nii.gz' \(the config's first modality\)"):
        cases_from_input(tmp_path / "empty", config)
    with pytest.raises(DataError, match=r"no image ending with '_0000.nii.gz' \(the first of --modality_suffixes\)"):
        cases_from_input(tmp_path / "empty", config, ["_0000.nii.gz", "_0001.nii.gz"])


def test_a_file_list_input_resolves_its_paths_beside_the_list(tmp_path):
    (tmp_path / "lists").mkdir()
    listed = tmp_path / "lists" / "new.json"
    listed.write_text(json.dumps([{"image": ["../scans/a_t1.nii.gz", "../scans/a_t2.nii.gz"], "case_id": "a"}]))
    (case,) = cases_from_input(listed, listing(["x/x_t1.nii.gz", "x/x_t2.nii.gz"]))
    assert case.case_id == "a"
    assert case.images == [(tmp_path / "scans" / name).resolve() for name in ("a_t1.nii.gz", "a_t2.nii.gz")]


def test_cases_are_made_in_one_module():
    package = Path(__file__).resolve().parents[2] / "unet3d"
    makers = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "cases.py" and re.search(r"\bCase\(", p.read_text())
    ]
    assert makers == [], f"{makers} build cases; unet3d.config.cases is their one home"
