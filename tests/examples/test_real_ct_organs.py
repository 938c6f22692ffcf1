"""Smoke test of the real-data recipe (examples/real_ct_organs): real CT scans from the package registry, one of them a
DICOM series whose label map stores its grid in another axis order, planned by unet3d-plan and trained for an
epoch (the fold that holds the series out); its label map comes back on the series' own grid."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from recipes import ROOT

pytest.importorskip("itk")  # the DICOM series is read through ITK


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("real_ct")
    cache = Path(os.environ.get("UNET3D_CACHE", Path.home() / ".cache" / "unet3d"))
    script = ROOT / "examples" / "real_ct_organs" / "make_data.py"
    result = subprocess.run(
        [sys.executable, str(script), "--output", str(output), "--cache", str(cache)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode == 3:  # make_data.NO_DOWNLOAD
        pytest.skip(f"the TotalSegmentator archive cannot be downloaded here: {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    return output


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_real_ct_recipe_plans_trains_and_writes_label_maps_on_each_scans_grid(real_data: Path) -> None:
    from unet3d.data.image_io import read_header

    cases = json.loads((real_data / "cases.json").read_text())
    assert [c["case_id"] for c in cases] == ["abdomen_ct", "dicom_ct"]
    assert (real_data / "raw" / "example_ct_dicom").is_dir()
    run(
        "unet3d.cli.plan",
        "--dataset",
        "cases.json",
        "--config_filename",
        "plan/ct.json",
        "--device",
        "cpu",
        "--spacing",
        "6",
        "6",
        "6",
        cwd=real_data,
    )
    config = json.loads((real_data / "plan" / "ct.json").read_text())
    assert config["dataset"]["normalization"] == "CTNormalized"  # recognized by its Hounsfield-unit air
    assert config["dataset"]["labels"] == [1, 2, 3, 4] and config["loss"]["softmax"] is True
    run(
        "unet3d.cli.train",
        "--config_filename",
        "plan/ct.json",
        "--set",
        "training.n_epochs=1",
        "--set",
        "training.iterations_per_epoch=2",
        "--set",
        "inference.sw_batch_size=4",
        "--fold",
        "1",  # the fold that holds out the DICOM series (the planner's split seed is fixed)
        cwd=real_data,
    )
    work_dir = real_data / "plan" / "ct"
    series = read_header(real_data / "raw" / "example_ct_dicom")
    assert json.loads((work_dir / "splits.json").read_text())["folds"][0]["validation"] == ["dicom_ct"]
    written = work_dir / "fold1" / "validation" / "dicom_ct.nii.gz"
    label_map = nib.load(str(written))
    assert label_map.shape == series.shape[:3] == (512, 512, 20)
    np.testing.assert_allclose(label_map.affine, series.affine, atol=1e-3)  # the series' grid, not the mask's order
    with open(written.parent / "metrics.csv") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    assert 0.0 <= float(rows["dicom_ct"]["dice_2"]) <= 1.0  # scored against the mask in its other axis order
    check_dicom_seg(written.with_suffix("").with_suffix(".dcm"), label_map, real_data / "raw" / "example_ct_dicom")
    check_bundle(work_dir / "fold1" / "model_best.pth", real_data / "raw" / "example_ct_dicom", label_map, real_data)


def check_bundle(model: Path, series: Path, label_map: nib.Nifti1Image, folder: Path) -> None:
    """The model as a MONAI bundle: MONAI's runner reads the DICOM series and writes the label map unet3d wrote. The
    bundle batches windows as the config says (4); unet3d-predict takes them one at a time on the CPU, which moved one
    voxel of 5.2 M (a float tie between two classes): the same setting gives the same label map."""
    pytest.importorskip("ignite", reason="the bundle's evaluator needs pytorch-ignite (the test extra installs it)")
    from tests.deployment.test_bundle import run_bundle
    from unet3d.deployment.bundle import export_bundle

    export_bundle(model, folder / "bundle")
    run_bundle(folder / "bundle", [[series]], folder / "bundle_out", folder, "--inferer#sw_batch_size", "1")
    got = nib.load(str(folder / "bundle_out" / f"{series.name}_seg.nii.gz"))
    assert got.shape == label_map.shape
    np.testing.assert_allclose(got.affine, label_map.affine, atol=1e-3)
    expected = np.asarray(label_map.dataobj)
    assert np.array_equal(np.asarray(got.dataobj), expected), np.mean(np.asarray(got.dataobj) == expected)


def check_dicom_seg(path: Path, label_map: nib.Nifti1Image, series: Path) -> None:
    """The series' DICOM SEG reads back (highdicom) equal to the NIfTI label map, slice by slice, one segment per
    organ, and dciodvfy finds no error in it."""
    hd = pytest.importorskip("highdicom", reason="the dicom extra (highdicom) is not installed")
    from unet3d.inference.dicom_seg import _series, frames

    seg = hd.seg.segread(str(path))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["1", "2", "3", "4"]
    source = _series(series)
    planes = frames(np.asarray(label_map.dataobj), label_map.affine, source)
    pixels = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in source], segment_numbers=[1, 2, 3, 4])
    for number in range(4):
        np.testing.assert_array_equal(pixels[..., number], planes == number + 1)
    assert (planes > 0).sum() == (np.asarray(label_map.dataobj) > 0).sum()  # every labelled voxel is on a slice
    if shutil.which("dciodvfy") is not None:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert not errors, errors
