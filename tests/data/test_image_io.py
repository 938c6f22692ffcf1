"""Image files of every supported format: geometry as MONAI reads it, label maps written back in the same format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unet3d.data import image_io
from unet3d.errors import DataError


def test_pictures_are_indexed_column_row_with_an_identity_affine(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 255, size=(20, 30, 3), dtype=np.uint8)  # 20 rows, 30 columns
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 3:8] = 1
    Image.fromarray(rgb).save(tmp_path / "car.jpg")
    Image.fromarray(mask).save(tmp_path / "car_mask.png")
    image, label = image_io.read_header(tmp_path / "car.jpg"), image_io.read_header(tmp_path / "car_mask.png")
    assert image.shape == (30, 20, 3) and label.shape == (30, 20)
    np.testing.assert_array_equal(label.affine, np.eye(4))
    np.testing.assert_array_equal(image_io.read_array(tmp_path / "car_mask.png"), mask.T)
    assert image_io.label_map_suffix(tmp_path / "car.jpg") == ".png"  # lossless, whatever the input


def test_a_png_label_map_round_trips(tmp_path: Path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "car.jpg")
    label_map = np.zeros((30, 20), np.int16)
    label_map[3:8, 5:10], label_map[20:25, 1:4] = 1, 2
    image_io.write_label_map(tmp_path / "out" / "car.png", label_map, tmp_path / "car.jpg")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "car.png")), label_map.T)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["car.png"]
    with pytest.raises(DataError, match="above 255 do not fit a PNG"):
        image_io.write_label_map(tmp_path / "out" / "big.png", label_map * 300, tmp_path / "car.jpg")


def test_unknown_endings_and_missing_files_are_data_errors(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes.txt: not an image file unet3d reads \(known endings: .nii.gz"):
        image_io.read_header(tmp_path / "notes.txt")
    with pytest.raises(DataError, match=r"absent\.png: file does not exist"):
        image_io.read_header(tmp_path / "absent.png")


def test_metaimage_without_itk_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "scan.mhd").write_text("NDims = 3\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "itk" else real(name, *a))
    with pytest.raises(DataError) as raised:
        image_io.read_header(tmp_path / "scan.mhd")
    assert str(raised.value) == f"{tmp_path / 'scan.mhd'}: {image_io.ITK_MISSING}"
    assert "pip install 'unet3d[itk]'" in image_io.ITK_MISSING


itk = pytest.importorskip("itk")


def _itk_volume(path: Path, array: np.ndarray) -> None:
    image = itk.image_from_array(np.ascontiguousarray(array.T))  # ITK arrays are (z, y, x)
    image.SetSpacing([0.7, 0.8, 2.5])
    image.SetOrigin([-12.0, 30.0, 5.5])
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image.SetDirection(itk.matrix_from_array(rotation))
    itk.imwrite(image, str(path))


@pytest.mark.parametrize("suffix", [".mhd", ".nrrd"])
def test_itk_volumes_match_monai_and_label_maps_keep_their_geometry(tmp_path: Path, suffix: str):
    from monai.transforms import LoadImage

    volume = np.random.default_rng(1).random((12, 14, 16)).astype(np.float32)
    _itk_volume(tmp_path / f"scan{suffix}", volume)
    header = image_io.read_header(tmp_path / f"scan{suffix}")
    loaded = LoadImage(image_only=True)(str(tmp_path / f"scan{suffix}"))
    assert header.shape == (12, 14, 16)
    np.testing.assert_allclose(header.affine, loaded.affine.numpy())
    np.testing.assert_allclose(sorted(header.spacing), [0.7, 0.8, 2.5], rtol=1e-6)
    np.testing.assert_allclose(image_io.read_array(tmp_path / f"scan{suffix}"), volume)

    label_map = torch.zeros(12, 14, 16, dtype=torch.int16)
    label_map[2:6, 3:9, 4:7] = 1
    out = tmp_path / "predictions" / f"scan{suffix}"
    image_io.write_label_map(out, label_map.numpy(), tmp_path / f"scan{suffix}")
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == (["scan.mhd", "scan.raw"] if suffix == ".mhd" else ["scan.nrrd"])  # no temporaries left
    written, source = itk.imread(str(out)), itk.imread(str(tmp_path / f"scan{suffix}"))
    np.testing.assert_allclose(np.asarray(written.GetSpacing()), np.asarray(source.GetSpacing()))
    np.testing.assert_allclose(np.asarray(written.GetOrigin()), np.asarray(source.GetOrigin()))
    np.testing.assert_allclose(
        itk.array_from_matrix(written.GetDirection()), itk.array_from_matrix(source.GetDirection())
    )
    np.testing.assert_array_equal(image_io.read_array(out), label_map.numpy())
    np.testing.assert_allclose(image_io.read_header(out).affine, header.affine)


def test_itk_headers_are_read_without_the_data_and_corrupt_ones_are_named(tmp_path: Path):
    _itk_volume(tmp_path / "scan.mhd", np.zeros((12, 14, 16), np.float32))
    (tmp_path / "scan.raw").unlink()  # the header alone gives the geometry
    header = image_io.read_header(tmp_path / "scan.mhd")
    assert header.shape == (12, 14, 16)
    np.testing.assert_allclose(sorted(header.spacing), [0.7, 0.8, 2.5], rtol=1e-6)
    (tmp_path / "garbage.nrrd").write_bytes(b"\x00\x01 not an image")
    with pytest.raises(DataError, match=r"garbage\.nrrd: cannot read as an image"):
        image_io.read_header(tmp_path / "garbage.nrrd")


def _same_grid_in_another_order(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """An LPS-stored image and its label map stored in LAS order (y flipped): one grid, two axis orders."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    image = rng.normal(size=(6, 7, 5)).astype(np.float32)
    label = (rng.random((6, 7, 5)) > 0.7).astype(np.uint8) * 3
    affine = np.array([[-1.0, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])
    flipped = affine.copy()
    flipped[:, 1] *= -1
    flipped[1, 3] = affine[1, 3] + affine[1, 1] * 6  # origin at the other end of y
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "image.nii.gz"))
    nib.save(nib.Nifti1Image(label[:, ::-1].copy(), flipped), str(tmp_path / "label.nii.gz"))
    return tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", label


def test_a_label_map_in_another_axis_order_is_read_onto_its_images_grid(tmp_path: Path):
    image, label, expected = _same_grid_in_another_order(tmp_path)
    reference = image_io.read_header(image)
    assert image_io.aligned_to(image_io.read_header(label), reference) is not None
    np.testing.assert_array_equal(image_io.read_aligned(label, reference), expected)


def test_another_grid_is_not_aligned(tmp_path: Path):
    import nibabel as nib

    image, _, expected = _same_grid_in_another_order(tmp_path)
    nib.save(nib.Nifti1Image(expected, np.diag([1.0, 1.5, 2.0, 1.0])), str(tmp_path / "other.nii.gz"))
    reference = image_io.read_header(image)
    assert image_io.aligned_to(image_io.read_header(tmp_path / "other.nii.gz"), reference) is None
    with pytest.raises(DataError, match=r"other\.nii\.gz: not on the grid of its image"):
        image_io.read_aligned(tmp_path / "other.nii.gz", reference)


def test_checks_loader_and_metrics_accept_a_label_map_in_another_axis_order(tmp_path: Path):
    from unet3d.config.cases import Case
    from unet3d.data.checks import check_case
    from unet3d.data.transforms import ThreadSafeLoadImaged
    from unet3d.evaluation.metrics import evaluate_cases

    image, label, expected = _same_grid_in_another_order(tmp_path)
    check_case(Case([image], label, "c"), {0, 3}, with_label=True)
    loaded = ThreadSafeLoadImaged(("image", "label"), image_only=True, ensure_channel_first=True)(
        {"image": str(image), "label": str(label)}
    )
    np.testing.assert_array_equal(loaded["label"][0].numpy(), expected)
    np.testing.assert_allclose(loaded["label"].affine.numpy(), loaded["image"].affine.numpy(), atol=1e-6)
    prediction = tmp_path / "prediction.nii.gz"
    image_io.write_label_map(prediction, expected, image)  # a perfect prediction on the image's grid
    table = evaluate_cases([("c", prediction, label)], [(3,)], ["3"], n_threads=1)
    assert table.loc[0, "dice_3"] == 1.0


def _nifti(path: Path, data: np.ndarray, nifti2: bool = False, slope: float | None = None, inter: float = 0.0) -> Path:
    import nibabel as nib

    image = (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(data, np.diag([0.8, 0.8, 5.0, 1.0]))
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, str(path))
    return path


GZIPPED = {
    "int16": dict(dtype=np.int16),
    "float32 CT-like, negative background": dict(dtype=np.float32, offset=-1000.0),
    "uint8 label map": dict(dtype=np.uint8),
    "int16 scaled by slope and intercept": dict(dtype=np.int16, slope=0.5, inter=-1024.0),
    "NIfTI-2": dict(dtype=np.int16, nifti2=True),
}


@pytest.mark.parametrize("in_memory", [True, False], ids=["inflated whole", "nibabel's stream"])
@pytest.mark.parametrize("kind", list(GZIPPED))
def test_a_gzipped_nifti_reads_as_nibabel_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, in_memory: bool
):
    import nibabel as nib

    spec = dict(GZIPPED[kind])
    dtype, offset = spec.pop("dtype"), spec.pop("offset", 0.0)
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 200, size=(13, 11, 7)) + offset).astype(dtype)
    path = _nifti(tmp_path / "image.nii.gz", data, **spec)
    if not in_memory:
        monkeypatch.setattr(image_io, "GUNZIP_IN_MEMORY", 0)
    read = image_io.read_array(path)
    expected = np.asanyarray(nib.load(str(path)).dataobj)
    assert read.dtype == expected.dtype and read.shape == expected.shape == (13, 11, 7)
    np.testing.assert_array_equal(read, expected)
    assert not np.shares_memory(image_io.read_array(path), read)  # a view of its own file's bytes, not a shared one


@pytest.mark.parametrize(
    "damage, in_memory",
    # nibabel's stream stops before gzip's checksum, so a flipped byte that still inflates passes it (files over
    # GUNZIP_IN_MEMORY); the whole inflate checks the checksum
    [("truncated", True), ("truncated", False), ("a flipped byte", True)],
    ids=["truncated, inflated whole", "truncated, nibabel's stream", "a flipped byte, inflated whole"],
)
def test_damaged_gzipped_data_behind_a_readable_header_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, in_memory: bool
):
    rng = np.random.default_rng(1)
    path = _nifti(tmp_path / "image.nii.gz", rng.normal(size=(24, 24, 24)).astype(np.float32))
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert image_io.read_header(path).shape == (24, 24, 24)  # the header still reads
    if not in_memory:
        monkeypatch.setattr(image_io, "GUNZIP_IN_MEMORY", 0)
    with pytest.raises(DataError, match=f"{path}: cannot read the image data"):
        image_io.read_array(path)
