"""A label map of a DICOM series as a DICOM Segmentation object (highdicom), written beside the label map.

Viewers that hospitals and labs run read DICOM; a SEG object references the series it was made from, so it opens on
top of the scan. One segment per region of the config, named as the config names it (for exclusive classes, one per
label value; for nested regions, each region as a whole, overlapping as the regions do), made by the algorithm
'unet3d' at its version. Frames follow the source slices: each slice's position and orientation in the file decide
which plane of the label map it is, so the axis order the series was read in does not matter.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet3d.atomic import atomic_save
from unet3d.errors import DataError
from unet3d.version import __version__

log = logging.getLogger("unet3d")
EXTRA = "pip install 'unet3d[dicom]'"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def available() -> bool:
    """Whether highdicom (the `dicom` extra) is installed."""
    return importlib.util.find_spec("highdicom") is not None


def _series(folder: Path) -> list:
    import pydicom

    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(str(path))
        except Exception:  # a folder's other files (DICOMDIR, notes) are not slices
            continue
        if "ImagePositionPatient" in dataset and "PixelData" in dataset:
            datasets.append(dataset)
    if not datasets:
        raise DataError(f"{folder}: no DICOM image slices to reference")
    return _identified(datasets, folder)


def _identified(datasets: list, folder: Path) -> list:
    """The slices with the identifiers a reference needs. An anonymizer may have emptied them (TotalSegmentator's
    example series has no SOP, study or series UID in its data sets): SOP class and instance are taken from each
    file's meta header; a missing study or series UID is derived from the frame of reference (the same every time),
    and said, since no archive will link the segmentation to the scan by it."""
    from pydicom.uid import generate_uid

    seed = str(datasets[0].get("FrameOfReferenceUID") or folder.name)
    derived = []
    for dataset in datasets:
        meta = getattr(dataset, "file_meta", None)
        if not dataset.get("SOPClassUID") and meta is not None:
            dataset.SOPClassUID = meta.MediaStorageSOPClassUID
        if not dataset.get("SOPInstanceUID") and meta is not None:
            dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        for key in ("StudyInstanceUID", "SeriesInstanceUID"):
            if not dataset.get(key):
                setattr(dataset, key, generate_uid(entropy_srcs=[seed, key]))
                derived.append(key)
    if derived:
        log.warning(
            "%s has no %s (anonymized?): the segmentation references UIDs derived from its frame of reference",
            folder,
            " or ".join(sorted(set(derived))),
        )
    return datasets


def _frame_indices(
    dataset, inverse_affine: np.ndarray, shape: Sequence[int]
) -> tuple[int, int, int, int, int, np.ndarray]:
    """For one slice: which label-map axis runs along its rows and columns (with direction), the remaining axis, and
    the voxel of its first pixel; from its position, orientation and pixel spacing."""
    position = np.asarray(dataset.ImagePositionPatient, dtype=np.float64)
    along_row, along_column = np.asarray(dataset.ImageOrientationPatient, dtype=np.float64).reshape(2, 3)
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)

    def voxel(point: np.ndarray) -> np.ndarray:
        return (inverse_affine @ np.append(LPS_TO_RAS @ point, 1.0))[:3]

    origin = voxel(position)
    step_column = voxel(position + along_row * column_spacing) - origin  # next column
    step_row = voxel(position + along_column * row_spacing) - origin  # next row
    axes = []
    for step in (step_row, step_column):
        axis = int(np.argmax(np.abs(step)))
        if not np.allclose(np.abs(step), np.eye(3)[axis], atol=1e-3):
            raise DataError(f"{dataset.filename}: its slice is not a plane of the label map's grid")
        axes.append((axis, int(np.sign(step[axis]))))
    (row_axis, row_sign), (column_axis, column_sign) = axes
    slice_axis = ({0, 1, 2} - {row_axis, column_axis}).pop()
    index = np.round(origin).astype(int)
    if not np.allclose(origin, index, atol=1e-2) or not 0 <= index[slice_axis] < shape[slice_axis]:
        raise DataError(f"{dataset.filename}: its slice is not a plane of the label map's grid")
    return row_axis, row_sign, column_axis, column_sign, slice_axis, index


def frames(label_map: np.ndarray, affine: np.ndarray, datasets: Sequence) -> np.ndarray:
    """The label map as one (rows, columns) frame per source slice, in the order of `datasets`."""
    inverse = np.linalg.inv(affine)
    out = []
    for dataset in datasets:
        row_axis, row_sign, column_axis, column_sign, slice_axis, first = _frame_indices(
            dataset, inverse, label_map.shape
        )
        rows = first[row_axis] + row_sign * np.arange(int(dataset.Rows))
        columns = first[column_axis] + column_sign * np.arange(int(dataset.Columns))
        for axis, where in ((row_axis, rows), (column_axis, columns)):
            if where.min() < 0 or where.max() >= label_map.shape[axis]:
                raise DataError(f"{dataset.filename}: its pixels reach beyond the label map's grid")
        plane = np.take(label_map, first[slice_axis], axis=slice_axis)  # the other two axes, in their order
        if row_axis > column_axis:
            plane = plane.T
        out.append(plane[np.ix_(rows, columns)])
    return np.stack(out)


def write_dicom_seg(
    path: Path,
    label_map: np.ndarray,
    affine: np.ndarray,
    series: Path,
    regions: Sequence[Sequence[int]],
    names: Sequence[str],
) -> None:
    """Write `label_map` (on the grid of the DICOM series in folder `series`, RAS `affine`) as a DICOM SEG at `path`:
    one binary segment per region (the voxels whose value is one of the region's), named `names`."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    datasets = _series(Path(series))
    planes = frames(np.asarray(label_map), np.asarray(affine, dtype=np.float64), datasets)
    masks = np.stack([np.isin(planes, list(region)) for region in regions], axis=-1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="unet3d", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(names, start=1)
    ]
    segmentation = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="unet3d",
        manufacturer_model_name="unet3d",
        software_versions=__version__,
        device_serial_number="0",
        series_description="unet3d segmentation",
    )
    atomic_save(path, lambda tmp: segmentation.save_as(tmp))
