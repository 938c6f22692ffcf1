"""Datasets built by `unet3d.data.datasets`: what the caches hold."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from unet3d.config.fields import parse_section
from unet3d.config.load import parse_cases
from unet3d.config.schema import DatasetConfig
from unet3d.data.datasets import case_items, make_dataset
from unet3d.data.examples import write_examples
from unet3d.data.seeding import SeededDataset, SeededSampler
from unet3d.data.synthetic import write_dataset
from unet3d.data.transforms import build_transforms


def test_a_memory_cache_filled_by_several_threads_keeps_every_modality(tmp_path: Path):
    # MONAI's readers are not thread-safe: without the read lock, about one case in ten came out with 1 channel.
    entries = write_dataset(tmp_path, 12, seed=3, shape_range=(16, 16))
    cases = parse_cases(entries, tmp_path, "training_filenames")
    dataset = parse_section(DatasetConfig, {"labels": [1, 2, 4], "desired_shape": [8, 8, 8]}, "dataset")
    transform = build_transforms(dataset, with_label=True, softmax=False, augment=False)
    for _ in range(3):
        cached = make_dataset(case_items(cases, with_label=True), transform, "memory", None, n_workers=4)
        channels = [cached[i]["image"].shape[0] for i in range(len(cases))]
        assert channels == [4] * len(cases)
        assert [cached[i]["case_id"] for i in range(len(cases))] == [case.case_id for case in cases]


def _chain(**dataset_keys):
    dataset = parse_section(DatasetConfig, {"labels": [1, 2, 4], **dataset_keys}, "dataset")
    return build_transforms(dataset, with_label=True, softmax=False, augment=True)


PATCHES = {
    "name": "RandCropByPosNegLabeld",
    "label_key": "label",
    "spatial_size": [8, 8, 8],
    "pos": 1,
    "neg": 1,
    "num_samples": 2,
}


def test_disk_cache_hits_are_plain_tensors_equal_to_the_fresh_result(tmp_path: Path):
    entries = write_dataset(tmp_path / "data", 2, seed=4, shape_range=(16, 18))
    cases = parse_cases(entries, tmp_path / "data", "training_filenames")
    transform = _chain(desired_shape=[12, 12, 12], normalization=None)
    first = make_dataset(case_items(cases, True), transform, "disk", tmp_path / "cache")
    fresh = [first[i] for i in range(2)]  # fills the cache
    again = make_dataset(case_items(cases, True), transform, "disk", tmp_path / "cache")
    for i in range(2):
        hit = again[i]
        assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2
        assert type(hit["image"]) is torch.Tensor
        torch.testing.assert_close(hit["image"], fresh[i]["image"].as_tensor())  # no random step in this chain
        assert hit["case_id"] == cases[i].case_id


def test_seeded_samples_are_plain_tensors_repeatable_per_seed_and_lists_for_multi_patch_crops(tmp_path: Path):
    entries = write_dataset(tmp_path, 1, seed=5, shape_range=(16, 16))
    cases = parse_cases(entries, tmp_path, "training_filenames")
    transform = _chain(spatial_augmentations=[PATCHES, {"name": "RandFlipd", "prob": 0.5, "spatial_axis": 0}])
    seeded = SeededDataset(make_dataset(case_items(cases, True), transform, "memory", None))
    patches = seeded[(0, 11)]
    assert isinstance(patches, list) and len(patches) == 2
    assert all(type(p["image"]) is torch.Tensor and p["image"].shape == (4, 8, 8, 8) for p in patches)
    repeat, other = seeded[(0, 11)], seeded[(0, 12)]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(patches, repeat, strict=True))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(patches, other, strict=True))


def test_seeded_sampler_seeds_follow_the_epoch_seed_and_its_own_generator_shuffles():
    sampler = SeededSampler(torch.utils.data.RandomSampler(range(6), generator=torch.Generator()))
    sampler.set_epoch(1, seed=3, shuffle_seed=0)
    first = list(sampler)
    sampler.set_epoch(1, seed=3, shuffle_seed=0)
    assert list(sampler) == first
    assert sorted(index for index, _ in first) == list(range(6))
    sampler.set_epoch(2, seed=4, shuffle_seed=0)
    assert list(sampler) != first


def test_examples_keep_the_case_geometry_with_a_filled_cache_and_take_the_first_patch(tmp_path: Path):
    entries = write_dataset(tmp_path / "data", 1, seed=6, shape_range=(16, 16))
    cases = parse_cases(entries, tmp_path / "data", "training_filenames")
    transform = _chain(spatial_augmentations=[PATCHES])
    dataset = make_dataset(case_items(cases, True), transform, "disk", tmp_path / "cache")
    dataset[0]  # the cache now holds the case as plain tensors, without its affine
    write_examples(dataset, tmp_path / "examples", 1)
    image = nib.load(tmp_path / "examples" / "input_test_0.nii.gz")
    target = nib.load(tmp_path / "examples" / "target_test_0.nii.gz")
    assert image.shape == (8, 8, 8, 4) and target.shape == (8, 8, 8, 3)
    original = nib.load(cases[0].images[0])
    np.testing.assert_allclose(np.abs(np.linalg.det(image.affine[:3, :3])), np.prod(original.header.get_zooms()[:3]))
    assert not np.allclose(image.affine, np.eye(4))
