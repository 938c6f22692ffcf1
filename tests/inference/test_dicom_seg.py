"""DICOM SEG beside a DICOM series' label map (unet3d/inference/dicom_seg.py): highdicom reads it back equal to the
label map, each frame on its own slice, and dciodvfy (dicom3tools) finds no error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("itk")  # DICOM series are read through ITK
hd = pytest.importorskip("highdicom", reason="the dicom extra (highdicom) is not installed")
pydicom = pytest.importorskip("pydicom")

from unet3d.data import image_io  # noqa: E402
from unet3d.inference.dicom_seg import _series, frames, write_dicom_seg  # noqa: E402

ROWS, COLUMNS, SLICES = 24, 20, 9


def write_series(folder: Path, uids: bool = True) -> list[np.ndarray]:
    """A CT series of 9 slices of 24 rows x 20 columns (0.8 x 0.7 mm), the rows running towards anterior, stored from
    head to feet in files named in shuffled order. Returns each slice's Hounsfield units, head to feet."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for index, file_number in enumerate(rng.permutation(SLICES)):
        hu = np.full((ROWS, COLUMNS), -1000, dtype=np.int16)
        hu[4 + index % 3 : 15, 3 : 9 + index] = 300  # a block that changes from slice to slice
        hu[2, 17] = 900  # one bright pixel near a corner: catches flipped or swapped axes
        slices.append(hu)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{file_number:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study if uids else ""
        ds.SeriesInstanceUID = series if uids else ""
        ds.FrameOfReferenceUID = frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.StudyID = "CT", "P1", "Test^Patient", "1"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "A1", ""
        ds.PatientBirthDate, ds.PatientSex, ds.SeriesNumber, ds.InstanceNumber = "", "O", 3, index + 1
        ds.Manufacturer, ds.ImageType = "test", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]  # columns along +x, rows along -y (anterior)
        ds.ImagePositionPatient = [-10.0, 12.0, 40.0 - 2.5 * index]  # head to feet
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.7], 2.5
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = ROWS, COLUMNS, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = 0, 1, 120
        ds.PixelData = hu.tobytes()
        ds.save_as(str(folder / f"{file_number:03d}.dcm"), enforce_file_format=True)
    return slices


def label_of(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label map on the series' grid as unet3d reads it (ITK's axis order): 1 where over 200 HU, 2 over 800."""
    image = image_io.read_array(folder)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[image > 200], label[image > 800] = 1, 2
    return label, image_io.read_header(folder).affine


def test_the_segmentation_reads_back_on_each_slice(tmp_path):
    truth = write_series(tmp_path / "series")
    label, affine = label_of(tmp_path / "series")
    write_dicom_seg(tmp_path / "seg.dcm", label, affine, tmp_path / "series", [[1, 2], [2]], ["dense", "very dense"])
    seg = hd.seg.segread(str(tmp_path / "seg.dcm"))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["dense", "very dense"]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "unet3d"
    source = _series(tmp_path / "series")
    by_z = sorted(source, key=lambda d: float(d.ImagePositionPatient[2]), reverse=True)  # head to feet, as written
    pixels = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in by_z], segment_numbers=[1, 2])
    for hu, frame in zip(truth, pixels, strict=True):  # independent of unet3d's axis order: each slice's own pixels
        np.testing.assert_array_equal(frame[..., 0], hu > 200)
        np.testing.assert_array_equal(frame[..., 1], hu > 800)
    np.testing.assert_array_equal(frames(label, affine, by_z) > 0, pixels[..., 0])


def test_an_anonymized_series_gets_derived_uids_and_a_warning(tmp_path, caplog):
    write_series(tmp_path / "series", uids=False)
    label, affine = label_of(tmp_path / "series")
    write_dicom_seg(tmp_path / "seg.dcm", label, affine, tmp_path / "series", [[1, 2]], ["dense"])
    assert "has no SeriesInstanceUID or StudyInstanceUID" in caplog.text
    again = tmp_path / "again.dcm"
    write_dicom_seg(again, label, affine, tmp_path / "series", [[1, 2]], ["dense"])
    first, second = pydicom.dcmread(str(tmp_path / "seg.dcm")), pydicom.dcmread(str(again))
    assert first.StudyInstanceUID == second.StudyInstanceUID != ""  # derived the same way every time


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dciodvfy_finds_no_error(tmp_path):
    write_series(tmp_path / "series")
    label, affine = label_of(tmp_path / "series")
    write_dicom_seg(tmp_path / "seg.dcm", label, affine, tmp_path / "series", [[1, 2], [2]], ["dense", "very dense"])
    report = subprocess.run(["dciodvfy", str(tmp_path / "seg.dcm")], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors
