"""Image files in the formats unet3d reads and writes: NIfTI (nibabel), MetaImage and NRRD (ITK, an optional extra),
DICOM series (a folder of one series' slices, through ITK) and 2D pictures such as PNG and JPEG (Pillow).

Everything follows the conventions of MONAI's readers, which load the data for training, so that the up-front checks,
the predictions and the metrics see the arrays training sees: volumes indexed (x, y, z) with a RAS affine (ITK's LPS
converted), pictures indexed (column, row) with an identity affine. Label maps are written in the format of the case's
first image (pictures as PNG, which is lossless; DICOM series as NIfTI on the series' grid), with its geometry. A label
map may store its case's grid in another axis order (a NIfTI mask beside a DICOM series often does): `aligned_to`
finds the reordering, and the checks, the loaders and the metrics apply it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

try:  # ISA-L's inflate is twice zlib's on x86 and ARM; a platform without its wheel reads with zlib
    from isal.igzip import decompress as gunzip
except ImportError:  # pragma: no cover
    from gzip import decompress as gunzip

from unet3d.atomic import atomic_save
from unet3d.errors import DataError
from unet3d.formats import (
    AFFINE_TOLERANCE,
    IMAGE_SUFFIXES,
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    PICTURE_SUFFIXES,
    image_suffix,
)

GUNZIP_IN_MEMORY = 512 * 2**20  # bytes of image data up to which a .nii.gz is inflated whole in memory
ITK_MISSING = "reading MetaImage/NRRD files and DICOM series needs ITK: pip install 'unet3d[itk]'"


def image_format(path: Path | str) -> str:
    """'nifti', 'itk' or 'picture', from the file name, or 'dicom' for a folder (one DICOM series); a DataError for
    any other file."""
    if Path(path).is_dir():
        return "dicom"
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if suffix in PICTURE_SUFFIXES:
        return "picture"
    raise DataError(f"{path}: not an image file unet3d reads (known endings: {', '.join(IMAGE_SUFFIXES)})")


def label_map_suffix(reference: Path | str) -> str:
    """The ending of a label map predicted for a case whose first image is `reference`."""
    kind = image_format(reference)
    if kind == "picture":
        return ".png"
    if kind == "itk":
        return ".nrrd" if image_suffix(reference) == ".nhdr" else image_suffix(reference)
    return ".nii.gz"


MONAI_READERS = {"nifti": "NibabelReader", "itk": "ITKReader", "picture": "PILReader", "dicom": "ITKReader"}


def monai_reader(path: Path | str) -> str | None:
    """The MONAI reader for a file, chosen by its format (None for other files: MONAI then chooses). MONAI's own
    choice depends on which packages are installed: with ITK present, ITK would read PNG and JPEG (in another axis
    convention) and fail on GIF."""
    if not image_suffix(path) and not Path(path).is_dir():
        return None
    return MONAI_READERS[image_format(path)]


@dataclass(frozen=True)
class Header:
    """An image's geometry: its array shape (spatial axes first, then any channel axis), its (D+1)² affine in
    millimetres, and its voxel spacing."""

    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, ...]


def _require_itk(path: Path) -> None:
    if image_format(path) in ("itk", "dicom") and importlib.util.find_spec("itk") is None:
        raise DataError(f"{path}: {ITK_MISSING}")


@contextlib.contextmanager
def quiet_readers() -> Iterator[None]:
    """Around the construction of MONAI's LoadImage, which builds every reader it knows: with pydicom installed
    (the dicom extra) its GPU DICOM decoder says on every run, in a log line and a warning, that there is no GPU
    decoder. unet3d reads DICOM through ITK; those two lines are noise."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        yield


def _monai_load(path: Path) -> Any:
    from monai.transforms import LoadImage

    _require_itk(path)
    try:
        with quiet_readers():
            loader = LoadImage(reader=monai_reader(path), image_only=True)
        return loader(str(path))
    except Exception as error:  # readers raise many types for corrupt or foreign files
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise DataError(f"{path}: cannot read as an image ({type(error).__name__}: {first_line})") from None


def _exists(path: Path) -> Path:
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise DataError(f"{path}: file does not exist")
    return path


def read_header(path: Path | str) -> Header:
    """The geometry of an image file; NIfTI headers are read without the data."""
    path = _exists(Path(path))
    if image_format(path) == "nifti":
        try:
            image = nib.load(str(path))
        except Exception as error:  # nibabel raises many types for corrupt or foreign files
            raise DataError(f"{path}: cannot read as an image ({type(error).__name__}: {error})") from None
        shape = tuple(int(s) for s in image.shape)
        return Header(shape, np.asarray(image.affine), tuple(float(z) for z in image.header.get_zooms()[:3]))
    if image_format(path) == "itk":
        return _itk_header(path)
    image = _monai_load(path)
    affine = np.asarray(image.affine, dtype=np.float64)
    spatial = len(image.meta.get("spatial_shape", image.shape))
    spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(min(spatial, 3)))
    return Header(tuple(int(s) for s in image.shape), affine, spacing)


def _itk_geometry(path: Path) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray, int]:
    """From a MetaImage/NRRD header alone (a CT series is hundreds of MB): ITK's size, spacing, origin, direction
    matrix (LPS) and number of components."""
    _require_itk(path)
    import itk

    try:
        io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
        io.SetFileName(str(path))
        io.ReadImageInformation()
    except Exception as error:  # ITK raises RuntimeError, or returns None for files it cannot parse
        raise DataError(f"{path}: cannot read as an image ({type(error).__name__}: {error})") from None
    n = io.GetNumberOfDimensions()
    size = tuple(int(io.GetDimensions(i)) for i in range(n))
    spacing = np.array([io.GetSpacing(i) for i in range(n)], dtype=np.float64)
    origin = np.array([io.GetOrigin(i) for i in range(n)], dtype=np.float64)
    direction = np.stack([np.asarray(io.GetDirection(i), dtype=np.float64) for i in range(n)], axis=1)
    return size, spacing, origin, direction, int(io.GetNumberOfComponents())


def _itk_header(path: Path) -> Header:
    """The geometry in MONAI's convention: ITK's LPS affine (direction columns scaled by the spacing, origin last)
    turned to RAS."""
    size, spacing, origin, direction, components = _itk_geometry(path)
    n = len(size)
    affine = np.eye(n + 1)
    affine[:n, :n], affine[:n, n] = direction * spacing, origin
    affine[: min(n, 2)] *= -1  # LPS → RAS: x and y change sign
    return Header(size + ((components,) if components > 1 else ()), affine, tuple(float(s) for s in spacing[:3]))


def read_array(path: Path | str) -> np.ndarray:
    """An image file's data as MONAI's readers index it; possibly read-only (copy it to write)."""
    path = _exists(Path(path))
    if image_format(path) == "nifti":
        try:
            return _nifti_data(path)
        except Exception as error:  # a truncated or corrupt file after a readable header
            raise DataError(f"{path}: cannot read the image data ({type(error).__name__}: {error})") from None
    return np.asarray(_monai_load(path))


def _nifti_data(path: Path) -> np.ndarray:
    """A NIfTI file's data as nibabel returns it. A gzipped file up to GUNZIP_IN_MEMORY is inflated in one call (ISA-L's
    inflate where installed, else zlib's) instead of nibabel's stream of 8 KiB reads, and an unscaled array is a
    read-only view of the inflated bytes: a BraTS-size int16 channel (18 MB) took 0.031 s through nibabel, 0.010 s so
    (2-core EPYC), and the inflate lets other threads run."""
    image = nib.load(str(path))  # the header only: nibabel streams no further
    proxy = image.dataobj
    size = int(np.prod(image.shape, dtype=np.int64)) * proxy.dtype.itemsize
    if not path.name.lower().endswith(".gz") or size > GUNZIP_IN_MEMORY:
        return np.asanyarray(proxy)
    inflated = gunzip(path.read_bytes())
    if proxy.slope == 1 and proxy.inter == 0 and len(inflated) >= proxy.offset + size:
        return np.ndarray(image.shape, proxy.dtype, buffer=inflated, offset=proxy.offset, order=proxy.order)
    return np.asanyarray(type(image).from_bytes(inflated).dataobj)  # scaled, or short (nibabel names the damage)


def aligned_to(header: Header, reference: Header) -> np.ndarray | None:
    """The nibabel orientation transform that puts an image's array on `reference`'s grid when both hold the same
    voxels in another axis order (axes flipped or permuted); the identity when the grids already match; None when
    they are different grids."""
    spatial = min(len(header.shape), 3)
    if tuple(header.shape[:spatial]) == tuple(reference.shape[:spatial]) and np.allclose(
        header.affine, reference.affine, atol=AFFINE_TOLERANCE
    ):
        return np.array([[axis, 1] for axis in range(spatial)], dtype=float)
    if spatial != 3 or header.affine.shape != (4, 4) or reference.affine.shape != (4, 4):
        return None
    transform = nib.orientations.ornt_transform(nib.io_orientation(header.affine), nib.io_orientation(reference.affine))
    shape = [0, 0, 0]
    for axis, (new_axis, _) in enumerate(transform):
        shape[int(new_axis)] = header.shape[axis]
    affine = header.affine @ nib.orientations.inv_ornt_aff(transform, header.shape[:3])
    if tuple(shape) != tuple(reference.shape[:3]) or not np.allclose(affine, reference.affine, atol=AFFINE_TOLERANCE):
        return None
    return transform


def read_aligned(path: Path | str, reference: Header) -> np.ndarray:
    """An image's data on `reference`'s grid (reordered when it stores that grid in another axis order); a DataError
    when it is another grid."""
    transform = aligned_to(read_header(path), reference)
    if transform is None:
        raise DataError(f"{path}: not on the grid of its image (shape {reference.shape[:3]}, affine differs)")
    return nib.orientations.apply_orientation(read_array(path), transform)


def write_label_map(path: Path, label_map: np.ndarray, reference: Path | str) -> None:
    """Write an integer label map (uint8 when the values fit, else int16) atomically, in the format that `path`'s
    ending names, with the geometry of the image `reference` (NIfTI: its affine and header)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(label_map)
    dtype = np.uint8 if array.size == 0 or (array.min() >= 0 and array.max() <= 255) else np.int16
    array = array.astype(dtype)
    kind = image_format(path)
    if kind == "picture":
        if dtype != np.uint8:
            raise DataError(f"{path}: label values above 255 do not fit a PNG; predict into NIfTI instead")
        from PIL import Image

        atomic_save(path, lambda tmp: Image.fromarray(np.ascontiguousarray(array.T)).save(tmp, format="PNG"))
    elif kind == "itk":
        _write_itk(path, array, Path(reference))
    else:
        if image_format(reference) == "nifti":
            source = nib.load(str(reference))
            affine, header = source.affine, source.header.copy()
        else:
            affine, header = nifti_affine(read_header(reference).affine), None
        image = nib.Nifti1Image(array, affine, header)
        image.set_data_dtype(dtype)
        image.header.set_slope_inter(1, 0)
        atomic_save(path, lambda tmp: nib.save(image, tmp))


def nifti_affine(affine: np.ndarray) -> np.ndarray:
    """A 4x4 affine for NIfTI from a 2D image's 3x3 one (a 4x4 one is returned as it is)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    full = np.eye(4)
    n = affine.shape[0] - 1
    full[:n, :n], full[:n, 3] = affine[:n, :n], affine[:n, n]
    return full


def _write_itk(path: Path, array: np.ndarray, reference: Path) -> None:
    """ITK arrays are indexed (z, y, x); the reference's spacing, origin and direction are copied. A MetaImage is
    two files: both are written in a temporary folder, then moved, the header last."""
    _, spacing, origin, direction, _ = _itk_geometry(reference)
    import itk

    image = itk.image_from_array(np.ascontiguousarray(array.T))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(origin.tolist())
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp") as folder:
        written = Path(folder) / path.name
        itk.imwrite(image, str(written), compression=path.suffix != ".mhd")
        for part in sorted(Path(folder).iterdir(), key=lambda p: p.suffix == path.suffix):
            os.replace(part, path.parent / part.name)
