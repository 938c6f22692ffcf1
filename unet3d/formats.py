"""The file endings unet3d reads and writes, and the tolerance within which two images share one grid.

One home for what every stage needs to agree on: the config derives case ids from file names, the data checks and
readers pick a format by its ending, predictions are named after it, and evaluation finds label maps by it.
"""

from __future__ import annotations

from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + PICTURE_SUFFIXES
DICOM_SEG_SUFFIX = ".dcm"  # beside a DICOM series' label map: its DICOM Segmentation object (not an image ending)
PROBABILITY_SUFFIX = "_probabilities.nii.gz"  # `--save_probabilities`: always NIfTI, whatever the input format
AFFINE_TOLERANCE = 1e-3  # mm; scanners and converters round the affine differently between modalities


def image_suffix(path: Path | str) -> str:
    """The known image ending of a file name ('.nii.gz', '.mhd', '.png', ...), or '' when it has none."""
    name = Path(path).name.lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if name.endswith(suffix)), "")


def strip_image_suffix(path: Path | str) -> str:
    """A file name without its image ending ('BraTS_001_flair.nii.gz' → 'BraTS_001_flair'), else without its last
    suffix."""
    suffix = image_suffix(path)
    name = Path(path).name
    return name[: -len(suffix)] if suffix else Path(path).stem
