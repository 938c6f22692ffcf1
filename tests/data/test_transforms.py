"""The transform chains (unet3d/data/transforms.py): shapes, label channels, orientation, normalization,
augmentations, the per-split chains, and the preprocessing fingerprint."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai import transforms as mt

from tests.conftest import config
from unet3d.config.schema import DatasetConfig, NamedSpec
from unet3d.data.datasets import case_items, fingerprint_dir
from unet3d.data.synthetic import write_case, write_dataset
from unet3d.data.transforms import build_transforms, interpolates, preprocessing_fingerprint
from unet3d.errors import ConfigError

BRATS = [2, 1, 4]


def item_of(directory: Path, entry: dict) -> dict:
    item = {"image": [str(directory / p) for p in entry["image"]]}
    if "label" in entry:
        item["label"] = str(directory / entry["label"])
    return item


def transformed(directory, entry, softmax=False, augment=False, **dataset):
    dataset_config = config(directory, [entry], **dataset).dataset
    return build_transforms(dataset_config, with_label="label" in entry, softmax=softmax, augment=augment)(
        item_of(directory, entry)
    )


def raw_label(directory: Path, entry: dict) -> np.ndarray:
    return np.asanyarray(nib.load(str(directory / entry["label"])).dataobj)


def assert_binary(tensor):
    assert set(torch.unique(torch.as_tensor(tensor)).tolist()) <= {0.0, 1.0}


# --- shapes, types and label channels ------------------------------------------------------------------------------


@pytest.mark.parametrize("resample", [True, False])
def test_image_and_label_shapes(data, resample):
    directory, entries = data
    out = transformed(
        directory, entries[0], labels=BRATS, setup_label_hierarchy=True, desired_shape=[12, 14, 18], resample=resample
    )
    assert out["image"].shape == (4, 12, 14, 18)
    assert out["image"].dtype == torch.float32
    assert out["label"].shape == (3, 12, 14, 18)
    assert out["label"].dtype == torch.float32
    assert_binary(out["label"])


def test_label_hierarchy_channels_are_nested(data):
    directory, entries = data
    out = transformed(
        directory, entries[1], labels=BRATS, setup_label_hierarchy=True, desired_shape=[16, 16, 16], resample=True
    )
    label = out["label"].bool()
    assert torch.all(label[0] | ~label[1])  # channel 0 ⊇ channel 1
    assert torch.all(label[1] | ~label[2])  # channel 1 ⊇ channel 2
    assert label[2].any() and (label[0] & ~label[1]).any()  # not trivially equal


def test_label_channels_match_the_label_map(data):
    directory, entries = data
    entry = entries[0]
    values = raw_label(directory, entry)
    hierarchy = transformed(directory, entry, labels=BRATS, setup_label_hierarchy=True, normalization=None)
    flat = transformed(directory, entry, labels=BRATS, normalization=None)
    assert hierarchy["label"].shape == (3, *values.shape)
    expected_hierarchy = [np.isin(values, [2, 1, 4]), np.isin(values, [1, 4]), values == 4]
    expected_flat = [values == 2, values == 1, values == 4]
    for channel in range(3):
        np.testing.assert_array_equal(hierarchy["label"][channel].numpy().astype(bool), expected_hierarchy[channel])
        np.testing.assert_array_equal(flat["label"][channel].numpy().astype(bool), expected_flat[channel])


def test_nested_label_group_makes_one_channel(data):
    directory, entries = data
    values = raw_label(directory, entries[0])
    out = transformed(directory, entries[0], labels=[[1, 4], 2], normalization=None)
    assert out["label"].shape == (2, *values.shape)
    np.testing.assert_array_equal(out["label"][0].numpy().astype(bool), np.isin(values, [1, 4]))


def test_without_label(data):
    directory, entries = data
    entry = {"image": entries[0]["image"]}
    out = transformed(directory, entry, labels=BRATS, desired_shape=[16, 16, 16])
    assert "label" not in out
    assert out["image"].shape == (4, 16, 16, 16)


def test_pad_or_crop_keeps_voxel_values(data):
    directory, entries = data
    entry = entries[0]
    values = raw_label(directory, entry)
    shape = [s + 4 for s in values.shape]  # pad only
    out = transformed(directory, entry, labels=[4], desired_shape=shape, resample=False, normalization=None)
    assert out["label"].shape == (1, *shape)
    assert int(out["label"].sum()) == int((values == 4).sum())  # padding does not add or lose label voxels


@pytest.mark.parametrize("augment", [True, False])
def test_random_crop(data, augment):
    directory, entries = data
    entry = entries[0]
    original = raw_label(directory, entry).shape
    desired = [10, 24, 12]  # smaller than the volume on two axes, larger on one
    out = transformed(directory, entry, augment=augment, labels=BRATS, desired_shape=desired, random_crop=True)
    expected = tuple(desired) if augment else tuple(max(d, s) for d, s in zip(desired, original, strict=True))
    assert out["image"].shape == (4, *expected)
    assert out["label"].shape == (3, *expected)


def test_random_crop_patches_vary(data):
    directory, entries = data
    dataset_config = config(directory, entries, labels=BRATS, desired_shape=[8, 8, 8], random_crop=True).dataset
    transform = build_transforms(dataset_config, with_label=True, softmax=False, augment=True)
    transform.set_random_state(seed=0)
    patches = [transform(item_of(directory, entries[0]))["image"] for _ in range(6)]
    assert all(p.shape == (4, 8, 8, 8) for p in patches)
    assert any(not torch.equal(patches[0], p) for p in patches[1:])


def test_softmax_adds_background_channel(data):
    directory, entries = data
    out = transformed(directory, entries[1], softmax=True, labels=BRATS, desired_shape=[14, 14, 14], resample=True)
    label = out["label"]
    assert label.shape == (4, 14, 14, 14)
    assert_binary(label)
    torch.testing.assert_close(label.sum(0), torch.ones(14, 14, 14))
    assert label[0].any() and label[1:].any()


def test_softmax_background_channel_matches_zero_label(data):
    directory, entries = data
    values = raw_label(directory, entries[0])
    out = transformed(directory, entries[0], softmax=True, labels=BRATS, normalization=None)
    np.testing.assert_array_equal(out["label"][0].numpy().astype(bool), values == 0)
    torch.testing.assert_close(out["label"].sum(0), torch.ones(values.shape))


@pytest.mark.parametrize("shape_keys", [{"resample": False}, {"random_crop": True}], ids=["pad_or_crop", "random_crop"])
def test_softmax_channels_sum_to_one_in_padding(data, shape_keys):
    directory, entries = data
    out = transformed(directory, entries[0], softmax=True, labels=BRATS, desired_shape=[24, 24, 24], **shape_keys)
    assert out["label"].shape == (4, 24, 24, 24)
    torch.testing.assert_close(out["label"].sum(0), torch.ones(24, 24, 24))


# --- foreground crop and orientation -------------------------------------------------------------------------------


def test_crop_foreground_reduces_extent(tmp_path):
    entry = write_case(tmp_path, "margin", (16, 16, 16), (1.0, 1.0, 1.0), np.random.default_rng(3), orientation="RAS")
    for path in [*entry["image"], entry["label"]]:
        image = nib.load(str(tmp_path / path))
        padded = np.pad(np.asanyarray(image.dataobj), [(6, 6), (2, 9), (0, 5)])
        nib.save(nib.Nifti1Image(padded, image.affine), str(tmp_path / path))
    images = np.stack([np.asanyarray(nib.load(str(tmp_path / p)).dataobj) for p in entry["image"]])
    nonzero = np.argwhere((images != 0).any(0))
    bounds = nonzero.max(0) - nonzero.min(0) + 1
    assert images.shape[1:] == (28, 27, 21)

    full = transformed(tmp_path, entry, labels=BRATS)
    cropped = transformed(tmp_path, entry, labels=BRATS, crop_foreground=True)
    assert full["image"].shape[1:] == (28, 27, 21)
    expected = tuple(int(b) for b in bounds)  # the bounding box of the nonzero voxels, no margin (as nnU-Net crops)
    assert cropped["image"].shape[1:] == expected
    assert cropped["label"].shape[1:] == expected
    assert all(c < f for c, f in zip(expected, (28, 27, 21), strict=True))
    assert torch.equal(cropped["label"].sum((1, 2, 3)), full["label"].sum((1, 2, 3)))  # no tumour voxel lost


def test_crop_foreground_then_desired_shape(tmp_path):
    entry = write_case(tmp_path, "c", (16, 18, 16), (1.0, 1.0, 1.0), np.random.default_rng(1), orientation="LAS")
    out = transformed(tmp_path, entry, labels=BRATS, crop_foreground=True, desired_shape=[12, 12, 12], resample=True)
    assert out["image"].shape == (4, 12, 12, 12)
    assert out["label"].shape == (3, 12, 12, 12)


def test_orientation_ras_for_lps_input(tmp_path):
    entry = write_case(tmp_path, "lps", (16, 17, 18), (1.0, 1.2, 1.5), np.random.default_rng(0), orientation="LPS")
    assert nib.aff2axcodes(nib.load(str(tmp_path / entry["image"][0])).affine) == ("L", "P", "S")
    unchanged = transformed(tmp_path, entry, labels=BRATS)
    assert nib.aff2axcodes(unchanged["image"].affine.numpy()) == ("L", "P", "S")
    out = transformed(tmp_path, entry, labels=BRATS, orientation="RAS", normalization=None)
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    assert nib.aff2axcodes(out["label"].affine.numpy()) == ("R", "A", "S")
    assert out["image"].shape == (4, 16, 17, 18)
    # L→R and P→A flip the first two axes; the label still lines up with the image.
    values = raw_label(tmp_path, entry)
    np.testing.assert_array_equal(out["label"][2].numpy().astype(bool), (values == 4)[::-1, ::-1, :])


def test_orientation_ras_for_permuted_input(tmp_path):
    entry = write_case(tmp_path, "psr", (16, 17, 18), (1.0, 1.0, 1.0), np.random.default_rng(0), orientation="PSR")
    out = transformed(tmp_path, entry, labels=BRATS, orientation="RAS")
    assert nib.aff2axcodes(out["image"].affine.numpy()) == ("R", "A", "S")
    assert out["image"].shape == (4, 18, 16, 17)  # voxel axis 2 pointed R, axis 0 P, axis 1 S
    assert out["label"].shape == (3, 18, 16, 17)


# --- normalization -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "normalization",
    [
        {"normalization": "zero_mean", "normalization_kwargs": {"channel_wise": True}},
        {"normalization": "NormalizeIntensityD", "normalization_kwargs": {"channel_wise": True}},
        {"normalization": "NormalizeIntensityd", "normalization_kwargs": {"channel_wise": True}},
    ],
)
def test_channel_wise_normalization(data, normalization):
    directory, entries = data
    out = transformed(directory, entries[0], labels=BRATS, desired_shape=[16, 16, 16], resample=True, **normalization)
    image = out["image"].as_tensor().reshape(4, -1)
    torch.testing.assert_close(image.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(image.std(1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_default_normalization_is_zero_mean_unit_std(data):
    directory, entries = data
    out = transformed(directory, entries[0], labels=BRATS)
    image = out["image"].as_tensor()
    assert abs(float(image.mean())) < 1e-4
    assert abs(float(image.std(unbiased=False)) - 1) < 1e-3


def test_no_normalization_keeps_intensities(data):
    directory, entries = data
    out = transformed(directory, entries[0], labels=BRATS, normalization=None)
    first = np.asanyarray(nib.load(str(directory / entries[0]["image"][0])).dataobj)
    np.testing.assert_allclose(out["image"][0].numpy(), first, rtol=1e-6)


def test_unknown_normalization_is_refused(data):
    directory, entries = data
    dataset_config = config(directory, entries, labels=BRATS, normalization="ZeroMean").dataset
    with pytest.raises(ConfigError, match=r"dataset\.normalization"):
        build_transforms(dataset_config, with_label=True, softmax=False, augment=False)


# --- augmentations -------------------------------------------------------------------------------------------------


def augmentation_error(directory, entries, where="dataset", **dataset):
    dataset_config = config(directory, entries, labels=BRATS, **dataset).dataset
    with pytest.raises(ConfigError) as info:
        build_transforms(dataset_config, with_label=True, softmax=False, augment=True, where=where)
    return str(info.value)


def test_unknown_augmentation_name(data):
    directory, entries = data
    message = augmentation_error(directory, entries, spatial_augmentations=[{"name": "RandFlipp", "prob": 0.5}])
    assert "dataset.spatial_augmentations[0]" in message
    assert "RandFlipp" in message
    assert "RandFlipd" in message  # suggestion


def test_unknown_augmentation_kwarg(data):
    directory, entries = data
    message = augmentation_error(
        directory,
        entries,
        spatial_augmentations=[{"name": "RandFlipd", "prob": 0.5}, {"name": "RandRotated", "rang_x": 0.3}],
    )
    assert "dataset.spatial_augmentations[1].rang_x" in message
    assert "range_x" in message


def test_intensity_augmentation_errors_name_the_path(data):
    directory, entries = data
    message = augmentation_error(
        directory,
        entries,
        where="dataset.training",
        intensity_augmentations=[{"name": "RandGaussianNoised", "prob": 0.5}, {"name": "RandScaleIntensityd"}],
    )
    assert "dataset.training.intensity_augmentations[1]" in message
    assert "factors" in message  # the missing required argument
    message = augmentation_error(directory, entries, intensity_augmentations=[{"name": "RandFlipd", "keys": ["x"]}])
    assert "dataset.intensity_augmentations[0].keys" in message


def test_code_running_transforms_are_not_available(data):
    directory, entries = data
    message = augmentation_error(directory, entries, spatial_augmentations=[{"name": "Lambdad", "func": "print"}])
    assert "dataset.spatial_augmentations[0]" in message
    assert "Lambdad" in message


def test_augmentations_are_not_checked_or_applied_without_augment(data):
    directory, entries = data
    dataset_config = config(
        directory, entries, labels=BRATS, spatial_augmentations=[{"name": "RandFlipd", "prob": 1.0, "spatial_axis": 0}]
    ).dataset
    plain = build_transforms(dataset_config, with_label=True, softmax=False, augment=False)
    assert not any(isinstance(t, mt.RandFlipd) for t in plain.transforms)
    augmented = build_transforms(dataset_config, with_label=True, softmax=False, augment=True)
    assert any(isinstance(t, mt.RandFlipd) for t in augmented.transforms)
    item = item_of(directory, entries[0])
    torch.testing.assert_close(augmented(item)["label"].as_tensor(), plain(item)["label"].as_tensor().flip(1))


def test_spatial_augmentation_uses_nearest_for_label(data):
    directory, entries = data
    augmentation = {"name": "RandRotated", "prob": 1.0, "range_x": 0.6, "range_y": 0.6, "range_z": 0.6}
    dataset_config = config(
        directory,
        entries,
        labels=BRATS,
        setup_label_hierarchy=True,
        desired_shape=[16, 16, 16],
        resample=True,
        spatial_augmentations=[augmentation],
    ).dataset
    transform = build_transforms(dataset_config, with_label=True, softmax=False, augment=True)
    transform.set_random_state(seed=1)
    rotate = next(t for t in transform.transforms if isinstance(t, mt.RandRotated))
    modes = dict(zip(rotate.keys, rotate.mode, strict=True))
    assert modes["label"] == "nearest"
    assert modes["image"] != "nearest"
    plain = build_transforms(dataset_config, with_label=True, softmax=False, augment=False)
    item = item_of(directory, entries[0])
    out = transform(item)
    assert out["label"].shape == (3, 16, 16, 16)
    assert_binary(out["label"])
    assert not torch.equal(out["label"].as_tensor(), plain(item)["label"].as_tensor())  # it did rotate
    image_values = torch.unique(out["image"]).numel()
    assert image_values > 100  # the image is interpolated (not nearest)


def test_explicit_mode_is_kept(data):
    directory, entries = data
    augmentation = {"name": "RandRotated", "prob": 1.0, "range_x": 0.5, "mode": "bilinear"}
    dataset_config = config(directory, entries, labels=BRATS, spatial_augmentations=[augmentation]).dataset
    transform = build_transforms(dataset_config, with_label=True, softmax=False, augment=True)
    rotate = next(t for t in transform.transforms if isinstance(t, mt.RandRotated))
    assert set(rotate.mode) == {"bilinear"}


# --- per-split dataset blocks --------------------------------------------------------------------------------------


def test_split_block_overrides_for_that_split_only(data):
    directory, entries = data
    flip = {"name": "RandFlipd", "prob": 0.5}
    parsed = config(
        directory,
        entries,
        labels=BRATS,
        desired_shape=[16, 16, 16],
        normalization=None,
        training={"desired_shape": [8, 8, 8], "spatial_augmentations": [flip]},
    )
    training = parsed.dataset_for("training")
    validation = parsed.dataset_for("validation")
    assert isinstance(training, DatasetConfig)
    assert training.desired_shape == [8, 8, 8]
    assert [spec.to_json() for spec in training.spatial_augmentations] == [flip]
    assert training.labels == BRATS and training.normalization is None  # top-level keys still apply
    assert validation.desired_shape == [16, 16, 16]
    assert validation.spatial_augmentations == []
    assert validation is parsed.dataset  # no block: the dataset section itself
    assert parsed.dataset.desired_shape == [16, 16, 16]  # not modified
    out = build_transforms(training, with_label=True, softmax=False, augment=True)(item_of(directory, entries[0]))
    assert out["image"].shape == (4, 8, 8, 8)


# --- fingerprints --------------------------------------------------------------------------------------------------


def test_fingerprint_depends_on_preprocessing_settings(tmp_path):
    a = DatasetConfig(labels=BRATS, desired_shape=[16, 16, 16])
    b = DatasetConfig(labels=BRATS, desired_shape=[12, 16, 16])
    fa, fb = preprocessing_fingerprint(a, softmax=False), preprocessing_fingerprint(b, softmax=False)
    assert fa != fb
    assert fingerprint_dir(tmp_path, fa) != fingerprint_dir(tmp_path, fb)
    assert fingerprint_dir(tmp_path, fa) != fingerprint_dir(tmp_path, preprocessing_fingerprint(a, softmax=True))
    c = DatasetConfig(labels=BRATS, desired_shape=[16, 16, 16], orientation="RAS")
    assert fingerprint_dir(tmp_path, preprocessing_fingerprint(c, False)) != fingerprint_dir(tmp_path, fa)


def test_fingerprint_follows_normalization_settings_and_deterministic_augmentations():
    base = DatasetConfig(labels=BRATS, normalization_kwargs={"channel_wise": True})
    other = DatasetConfig(labels=BRATS, normalization_kwargs={"channel_wise": False})
    padded = DatasetConfig(labels=BRATS, spatial_augmentations=[NamedSpec("SpatialPadd", {"spatial_size": [20] * 3})])
    fingerprints = [preprocessing_fingerprint(d, softmax=False) for d in (base, other, padded)]
    assert fingerprints[0] != fingerprints[1], "same class names, other kwargs: the validation cache would be stale"
    assert fingerprints[0] != fingerprints[2]
    assert fingerprints[2]["deterministic_augmentations"] == [{"name": "SpatialPadd", "spatial_size": [20, 20, 20]}]


def test_fingerprint_ignores_augmentations(tmp_path):
    a = DatasetConfig(labels=BRATS, desired_shape=[16, 16, 16])
    b = DatasetConfig(
        labels=BRATS,
        desired_shape=[16, 16, 16],
        spatial_augmentations=[NamedSpec("RandFlipd", {"prob": 0.5})],
        intensity_augmentations=[NamedSpec("RandGaussianNoised", {"prob": 0.1})],
    )
    fa, fb = preprocessing_fingerprint(a, softmax=False), preprocessing_fingerprint(b, softmax=False)
    assert fa == fb
    assert fingerprint_dir(tmp_path, fa) == fingerprint_dir(tmp_path, fb)


# --- where normalization runs ----------------------------------------------------------------------------------------


def test_whole_case_normalization_runs_before_the_first_random_step_and_is_cached(tmp_path):
    entries = write_dataset(tmp_path, 1, seed=2, shape_range=(20, 20))
    flip = {"name": "RandFlipd", "prob": 1.0, "spatial_axis": 0}
    names = {}
    for whole in (True, False):
        parsed = config(
            tmp_path,
            entries,
            labels=BRATS,
            desired_shape=[12, 12, 12],
            random_crop=True,
            normalize_whole_case=whole,
            normalization_kwargs={"channel_wise": True},
            spatial_augmentations=[flip],
        )
        transform = build_transforms(parsed.dataset, with_label=True, softmax=False, augment=True)
        names[whole] = [type(step).__name__ for step in transform.transforms]
        transform.set_random_state(seed=0)
        patch = transform(case_items(parsed.groups["training"], True)[0])["image"]
        means = patch.as_tensor().mean(dim=(1, 2, 3))
        if whole:  # the statistics of the whole (padded) case: a 12³ patch of a 20³ case is not exactly centred
            assert means.abs().max() > 1e-3
        else:
            torch.testing.assert_close(means, torch.zeros(4), atol=1e-5, rtol=0)
    assert names[True][2:5] == ["SpatialPadd", "NormalizeIntensityd", "RandSpatialCropd"]
    assert names[False][2:6] == ["SpatialPadd", "RandSpatialCropd", "RandFlipd", "LabelsToChannelsd"]
    assert names[False][6] == "NormalizeIntensityd"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SpatialPadd", False),
        ("BorderPadd", False),
        ("DivisiblePadd", False),
        ("CropForegroundd", False),
        ("ResizeWithPadOrCropd", False),
        ("RandAffined", True),
        ("RandZoomd", True),
        ("Rand3DElasticd", True),
        ("Resized", True),
        ("RandFlipd", False),
    ],
)
def test_only_interpolating_transforms_get_interpolation_modes(name, expected):
    assert interpolates(getattr(mt, name)) is expected


def test_cases_smaller_than_the_patch_pass_pads_whose_mode_is_a_padding_mode(tmp_path):
    # Issue 16: SpatialPadd used to receive mode=("bilinear", "nearest") and failed with "Unsupported option 'bilinear'"
    # on every case smaller than the patch.
    entry = write_case(tmp_path, "small", (16, 18, 16), (1.0, 1.0, 1.0), np.random.default_rng(3))
    patch = [24, 24, 24]
    augmentations = [
        {"name": "RandCropByPosNegLabeld", "label_key": "label", "spatial_size": patch, "allow_smaller": True},
        {"name": "SpatialPadd", "spatial_size": patch},
        {"name": "BorderPadd", "spatial_border": 1},
        {"name": "DivisiblePadd", "k": 4},
        {"name": "RandAffined", "prob": 1.0, "rotate_range": [0.3, 0.3, 0.3], "padding_mode": "zeros"},
        {"name": "RandZoomd", "prob": 1.0, "min_zoom": 1.1, "max_zoom": 1.1},
    ]
    for seed in range(3):
        chain = build_transforms(
            config(tmp_path, [entry], labels=BRATS, spatial_augmentations=augmentations).dataset,
            with_label=True,
            softmax=False,
            augment=True,
        )
        chain.set_random_state(seed)
        out = chain(item_of(tmp_path, entry))
        out = out[0] if isinstance(out, list) else out
        assert out["image"].shape == (4, 28, 28, 28)  # 24 + 2 borders, padded up to a multiple of 4
        assert out["label"].shape == (3, 28, 28, 28)
        assert_binary(out["label"])
        assert out["label"][0].sum() > 0  # nearest-neighbour resampling kept the tumour
