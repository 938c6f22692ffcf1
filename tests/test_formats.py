"""The file endings every stage agrees on (unet3d/formats.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unet3d.formats import image_suffix, strip_image_suffix


@pytest.mark.parametrize(
    ("name", "suffix", "stem"),
    [
        ("BraTS_001_flair.nii.gz", ".nii.gz", "BraTS_001_flair"),
        ("case.nii", ".nii", "case"),
        ("scan.mha", ".mha", "scan"),
        ("scan.mhd", ".mhd", "scan"),
        ("vessel.v2.nrrd", ".nrrd", "vessel.v2"),
        ("car_0001.PNG", ".png", "car_0001"),
        ("data/sub.dir/t1.NII.GZ", ".nii.gz", "t1"),
        ("notes.txt", "", "notes"),
        ("archive.tar.gz", "", "archive.tar"),
    ],
)
def test_image_endings_are_found_whatever_their_case_and_stripped_whole(name, suffix, stem):
    assert image_suffix(name) == suffix
    assert image_suffix(Path(name)) == suffix
    assert strip_image_suffix(name) == stem
    assert strip_image_suffix(Path(name)) == stem
