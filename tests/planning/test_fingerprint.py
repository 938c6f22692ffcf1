"""The data set's fingerprint (unet3d/planning/fingerprint.py)."""

import nibabel as nib
import numpy as np
import pytest

from unet3d.config.cases import Case
from unet3d.planning.fingerprint import fingerprint_case, fingerprint_cases, summarize


def write(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture
def permuted_case(tmp_path):
    """Voxel axes stored (S, R, A) with 5 mm along S: shape (10, 20, 30) on disk is (20, 30, 10) in RAS order."""
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 5.0, 0.8, 0.9, 1.0
    image = np.full((10, 20, 30), -1000.0, dtype=np.float32)
    label = np.zeros((10, 20, 30), dtype=np.uint8)
    image[2:4, 5:10, 5:10], label[2:4, 5:10, 5:10] = 40.0, 1
    image[5, 5:7, 5:7], label[5, 5:7, 5:7] = 100.0, 2
    return Case([write(tmp_path / "ct.nii.gz", image, affine)], write(tmp_path / "seg.nii.gz", label, affine), "c")


def test_geometry_is_given_in_ras_order(permuted_case):
    fingerprint = fingerprint_case(permuted_case)
    assert fingerprint.shape == [20, 30, 10]
    assert fingerprint.spacing == pytest.approx([0.8, 0.9, 5.0])
    assert fingerprint.orientation == "SRA"


def test_intensities_are_those_of_the_foreground(permuted_case):
    fingerprint = fingerprint_case(permuted_case)
    assert fingerprint.label_voxels == {"1": 50, "2": 4}
    channel = fingerprint.channels[0]
    assert channel.mean == pytest.approx((50 * 40 + 4 * 100) / 54)
    assert channel.p00_5 == pytest.approx(40.0) and channel.p99_5 == pytest.approx(100.0)
    assert channel.image_p00_5 == -1000.0  # the air, seen in the whole image
    assert channel.zero_fraction == 0.0


def test_a_4d_image_gives_one_statistics_entry_per_channel(tmp_path):
    data = np.stack([np.full((8, 8, 8), v, dtype=np.float32) for v in (1.0, 2.0, 3.0)], axis=-1)
    label = np.ones((8, 8, 8), dtype=np.uint8)
    case = Case([write(tmp_path / "i.nii.gz", data, np.eye(4))], write(tmp_path / "l.nii.gz", label, np.eye(4)), "x")
    assert [c.mean for c in fingerprint_case(case).channels] == [1.0, 2.0, 3.0]


def test_summary_pools_the_cases(permuted_case, tmp_path):
    grid = nib.load(permuted_case.images[0])  # an empty label map on its images' grid
    empty = Case(
        permuted_case.images, write(tmp_path / "empty.nii.gz", np.zeros(grid.shape, np.uint8), grid.affine), "e"
    )
    cases = fingerprint_cases([permuted_case, empty], n_threads=2, progress=False)
    summary = summarize(cases)
    assert summary["n_cases"] == 2
    assert summary["empty_label_cases"] == ["e"]
    assert summary["labels"]["2"] == {"cases": 1, "median_voxels": 2.0}
    assert summary["foreground_intensities"][0]["p99_5"] == pytest.approx(100.0)  # the empty case adds no voxel


def _exact_equal_weight(values_per_case, q):
    """The q-th percentile of the mixture in which every case weighs the same (each voxel 1 / its case's count)."""
    values = np.concatenate(values_per_case)
    weights = np.concatenate([np.full(len(v), 1.0 / len(v)) for v in values_per_case])
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][np.searchsorted(cumulative, q / 100)])


def test_pooled_ct_statistics_weight_cases_equally_and_depend_on_the_data_only(tmp_path):
    # Issue 24, item 2: samples capped per case made a small foreground count less, and the clip range moved with the
    # seed. Three CT-like cases: a big lung (-800 ± 60), a small soft-tissue one (40 ± 20), a mid-size bone one.
    from unet3d.planning.fingerprint import pooled_foreground

    rng = np.random.default_rng(0)
    cases, foregrounds = [], []
    for name, size, centre, spread in (("lung", 30, -800.0, 60.0), ("soft", 8, 40.0, 20.0), ("bone", 16, 700, 90)):
        image = np.full((32, 32, 32), -1000.0, np.float32)
        label = np.zeros((32, 32, 32), np.uint8)
        label[:size, :size, :size] = 1
        image[label > 0] = rng.normal(centre, spread, label.sum())
        for array, suffix in ((image, "ct"), (label, "seg")):
            nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}_{suffix}.nii.gz")
        cases.append(Case([tmp_path / f"{name}_ct.nii.gz"], tmp_path / f"{name}_seg.nii.gz", name))
        foregrounds.append(image[label > 0].astype(np.float64))
    pooled = pooled_foreground(fingerprint_cases(cases, progress=False), 0)
    for key, q in (("p00_5", 0.5), ("p99_5", 99.5)):
        assert pooled[key] == pytest.approx(_exact_equal_weight(foregrounds, q), abs=2.0)  # HU; the spreads are 20-90
    assert pooled["mean"] == pytest.approx(np.mean([f.mean() for f in foregrounds]), abs=1e-6)
    mixture = np.concatenate([f - np.mean([g.mean() for g in foregrounds]) for f in foregrounds])
    weights = np.concatenate([np.full(len(f), 1 / len(f)) for f in foregrounds])
    assert pooled["std"] == pytest.approx(np.sqrt(np.sum(weights * mixture**2) / weights.sum()), rel=1e-6)
    again = pooled_foreground(fingerprint_cases(list(reversed(cases)), progress=False), 0)
    assert again == pooled  # no seed, no order: the same data give the same numbers


def test_the_nonzero_box_is_what_nnunet_crops_to_in_ras_order(tmp_path):
    # stored (S, R, A): a head of 4 x 12 x 7 voxels inside a zeroed 10 x 20 x 30 volume, two channels that each
    # reach further along one axis
    affine = np.zeros((4, 4))
    affine[2, 0], affine[0, 1], affine[1, 2], affine[3, 3] = 5.0, 0.8, 0.9, 1.0
    first = np.zeros((10, 20, 30), dtype=np.float32)
    second = np.zeros_like(first)
    first[3:7, 4:12, 10:17] = 5.0
    second[3:5, 4:16, 10:12] = -2.0  # negative intensities are not background
    image = np.stack([first, second], axis=-1)
    label = np.zeros((10, 20, 30), dtype=np.uint8)
    label[4, 5, 11] = 1
    case = Case([write(tmp_path / "mr.nii.gz", image, affine)], write(tmp_path / "seg.nii.gz", label, affine), "c")
    fingerprint = fingerprint_case(case)
    assert fingerprint.nonzero_shape == [12, 7, 4]  # (R, A, S) of the (4, 12, 7) box on disk
    assert fingerprint.shape_after_crop() == [12, 7, 4]
    assert fingerprint.to_json()["nonzero_shape"] == [12, 7, 4]


def test_an_image_without_background_is_its_own_box(permuted_case):
    assert fingerprint_case(permuted_case).nonzero_shape == [20, 30, 10]


def test_a_label_map_in_another_axis_order_counts_the_same_voxels(permuted_case, tmp_path):
    # a NIfTI mask beside a DICOM series often stores the grid in another axis order: before, its voxels were paired
    # with the image's in storage order (the wrong ones, silently, when the shapes allowed it)
    canonical = nib.as_closest_canonical(nib.load(permuted_case.label))
    reordered = tmp_path / "seg_ras.nii.gz"
    nib.save(canonical, str(reordered))
    assert canonical.shape != nib.load(permuted_case.label).shape
    on_grid = fingerprint_case(permuted_case)
    other_order = fingerprint_case(Case(permuted_case.images, reordered, "c"))
    assert other_order.label_voxels == on_grid.label_voxels == {"1": 50, "2": 4}
    assert other_order.channels == on_grid.channels
    assert other_order.foreground_samples == on_grid.foreground_samples
