"""Tests for the synthetic BraTS-like data generator."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from unet3d.data.synthetic import MODALITIES, ORIENTATIONS, SPACINGS, make_case, write_case, write_dataset

N_CASES = 4


def _load(path: Path) -> nib.Nifti1Image:
    return nib.load(str(path))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    directory = tmp_path_factory.mktemp("synthetic")
    return directory, write_dataset(directory, N_CASES, seed=3, shape_range=(20, 28))


def _case_files(directory: Path, entry: dict) -> list[Path]:
    return [directory / p for p in entry["image"]] + [directory / entry["label"]]


def test_files_exist_at_relative_paths(dataset):
    directory, entries = dataset
    assert len(entries) == N_CASES
    for i, entry in enumerate(entries):
        case_id = f"case_{i:03d}"
        assert entry["image"] == [f"{case_id}/{case_id}_{m}.nii.gz" for m in MODALITIES]
        assert entry["label"] == f"{case_id}/{case_id}_seg.nii.gz"
        for path in entry["image"] + [entry["label"]]:
            assert isinstance(path, str)
            assert not Path(path).is_absolute()
            assert (directory / path).is_file()


def test_shapes_dtypes_and_headers(dataset):
    directory, entries = dataset
    shapes = set()
    for entry in entries:
        images = [_load(p) for p in _case_files(directory, entry)]
        shape = images[0].shape
        assert all(img.shape == shape for img in images)
        assert len(shape) == 3 and all(20 <= s <= 28 for s in shape)
        shapes.add(shape)
        for img in images[:-1]:
            assert img.get_data_dtype() == np.float32
        assert images[-1].get_data_dtype() == np.uint8
        for img in images:
            assert int(img.header["qform_code"]) == 1
            assert int(img.header["sform_code"]) == 1
            np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-4)
    assert len(shapes) > 1  # varied shapes


def test_affines_spacing_and_orientation(dataset):
    directory, entries = dataset
    orientations = []
    for entry in entries:
        affines = [_load(p).affine for p in _case_files(directory, entry)]
        for affine in affines[1:]:
            np.testing.assert_array_equal(affine, affines[0])
        spacing = np.linalg.norm(affines[0][:3, :3], axis=0)
        assert all(np.isclose(s, SPACINGS, atol=1e-5).any() for s in spacing)
        orientations.append("".join(nib.aff2axcodes(affines[0])))
    assert orientations == list(ORIENTATIONS[:N_CASES])


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAS", "PSR", "ILA", "ras"])
def test_write_case_requested_spacing_and_orientation(tmp_path, orientation):
    spacing = (0.8, 1.5, 2.0)
    entry = write_case(tmp_path, "one", (16, 18, 20), spacing, np.random.default_rng(0), orientation=orientation)
    for path in entry["image"] + [entry["label"]]:
        img = _load(tmp_path / path)
        assert img.shape == (16, 18, 20)
        np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), spacing, atol=1e-5)
        assert "".join(nib.aff2axcodes(img.affine)) == orientation.upper()


def test_labels_present_and_valid(dataset):
    directory, entries = dataset
    for entry in entries:
        label = np.asarray(_load(directory / entry["label"]).dataobj)
        assert set(np.unique(label)) == {0, 1, 2, 4}


@pytest.mark.parametrize("shape", [(16, 16, 16), (16, 24, 32)])
def test_small_shapes_have_all_labels(shape):
    for seed in range(10):
        images, label = make_case(shape, np.random.default_rng(seed))
        assert label.dtype == np.uint8 and label.shape == shape
        assert len(images) == 4 and all(img.shape == shape and img.dtype == np.float32 for img in images)
        for value in (1, 2, 4):
            assert np.count_nonzero(label == value) >= 3
        assert set(np.unique(label)) <= {0, 1, 2, 4}


def test_nesting():
    for seed in range(5):
        images, label = make_case((24, 28, 20), np.random.default_rng(seed))
        tumour = label > 0
        # Tumour core and enhancing voxels lie within the bounding box of the whole tumour's edema region.
        edema_idx = np.argwhere(label == 2)
        inner_idx = np.argwhere((label == 1) | (label == 4))
        assert (inner_idx.min(axis=0) >= edema_idx.min(axis=0)).all()
        assert (inner_idx.max(axis=0) <= edema_idx.max(axis=0)).all()
        # The tumour lies inside the brain (nonzero in every modality).
        for image in images:
            assert (image[tumour] > 0).all()
    ndimage = pytest.importorskip("scipy.ndimage")
    for seed in range(5):
        _, label = make_case((24, 28, 20), np.random.default_rng(seed))
        for region in (label > 0, (label == 1) | (label == 4)):
            _, n_components = ndimage.label(region, structure=np.ones((3, 3, 3)))
            assert n_components == 1


def test_background_zero_and_flair_contrast(dataset):
    directory, entries = dataset
    for entry in entries:
        images = [np.asarray(_load(directory / p).dataobj) for p in entry["image"]]
        label = np.asarray(_load(directory / entry["label"]).dataobj)
        brain = images[0] > 0
        for image in images:
            np.testing.assert_array_equal(image > 0, brain)
        assert 0.25 < brain.mean() < 0.55  # the brain ellipsoid fills most of the volume
        flair = images[MODALITIES.index("flair")]
        healthy = flair[brain & (label == 0)]
        assert flair[label == 2].mean() > healthy.mean() + 3 * healthy.std()


def test_deterministic_for_seed(tmp_path):
    first = write_dataset(tmp_path / "a", 2, seed=7)
    second = write_dataset(tmp_path / "b", 2, seed=7)
    assert first == second
    for entry in first:
        for path in entry["image"] + [entry["label"]]:
            img_a, img_b = _load(tmp_path / "a" / path), _load(tmp_path / "b" / path)
            np.testing.assert_array_equal(np.asarray(img_a.dataobj), np.asarray(img_b.dataobj))
            np.testing.assert_array_equal(img_a.affine, img_b.affine)
    images_a, label_a = make_case((16, 16, 16), np.random.default_rng(1))
    images_b, label_b = make_case((16, 16, 16), np.random.default_rng(1))
    np.testing.assert_array_equal(label_a, label_b)
    for a, b in zip(images_a, images_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_seeds_differ(tmp_path):
    first = write_dataset(tmp_path / "a", 1, seed=0, shape_range=(20, 20))
    write_dataset(tmp_path / "b", 1, seed=1, shape_range=(20, 20))
    for path in first[0]["image"] + [first[0]["label"]]:
        a = np.asarray(_load(tmp_path / "a" / path).dataobj)
        b = np.asarray(_load(tmp_path / "b" / path).dataobj)
        assert not np.array_equal(a, b)


def test_without_labels_and_fewer_modalities(tmp_path):
    entries = write_dataset(tmp_path / "x", 2, seed=5, with_labels=False, prefix="sub", n_modalities=2)
    assert [sorted(e) for e in entries] == [["image"], ["image"]]
    assert entries[0]["image"] == ["sub_000/sub_000_flair.nii.gz", "sub_000/sub_000_t1.nii.gz"]
    assert not list((tmp_path / "x").rglob("*_seg.nii.gz"))
    # Images do not depend on whether labels are written.
    labelled = write_dataset(tmp_path / "y", 2, seed=5, prefix="sub", n_modalities=2)
    for entry, other in zip(entries, labelled, strict=True):
        assert entry["image"] == other["image"]
        for path in entry["image"]:
            np.testing.assert_array_equal(
                np.asarray(_load(tmp_path / "x" / path).dataobj), np.asarray(_load(tmp_path / "y" / path).dataobj)
            )
    with pytest.raises(ValueError):
        make_case((16, 16, 16), np.random.default_rng(0), n_modalities=5)
    with pytest.raises(ValueError):
        make_case((16, 15, 16), np.random.default_rng(0))


def test_dataset_prefix_is_stable(tmp_path):
    small = write_dataset(tmp_path / "small", 1, seed=2, shape_range=(16, 18))
    large = write_dataset(tmp_path / "large", 3, seed=2, shape_range=(16, 18))
    assert large[0] == small[0]
    path = small[0]["label"]
    np.testing.assert_array_equal(
        np.asarray(_load(tmp_path / "small" / path).dataobj), np.asarray(_load(tmp_path / "large" / path).dataobj)
    )


def test_harder_data_thick_slices_oblique_axes_and_non_zero_backgrounds(tmp_path):
    easy = write_dataset(tmp_path / "easy", 2, seed=4, shape_range=(16, 18))
    hard = write_dataset(
        tmp_path / "hard",
        2,
        seed=4,
        shape_range=(16, 18),
        spacing=(0.8, 0.8, 5.0),
        background_range=(-1000.0, -900.0),
        oblique_degrees=20.0,
    )
    for easy_entry, entry in zip(easy, hard, strict=True):
        label = np.asarray(_load(tmp_path / "hard" / entry["label"]).dataobj)
        # the same tumour as without the options: they only change the images and the affine
        np.testing.assert_array_equal(label, np.asarray(_load(tmp_path / "easy" / easy_entry["label"]).dataobj))
        affine = _load(tmp_path / "hard" / entry["image"][0]).affine
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.8, 0.8, 5.0), atol=1e-5)
        assert np.count_nonzero(np.abs(affine[:3, :3]) > 1e-3) > 3  # oblique: not a permuted diagonal
        for path in entry["image"]:
            image = np.asarray(_load(tmp_path / "hard" / path).dataobj)
            background = image[0, 0, 0]
            assert -1100 < background < -800 and np.all(image != 0)
            assert image[label > 0].mean() > background + 20  # the head stands out from a CT-like background
