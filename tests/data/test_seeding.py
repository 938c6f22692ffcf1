"""Per-sample augmentation seeds (unet3d/data/seeding.py): seeded samples and the seeded sampler."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.data.conftest import PATCHES, _chain
from unet3d.config.cases import parse_cases
from unet3d.data.datasets import case_items, make_dataset
from unet3d.data.seeding import SeededDataset, SeededSampler
from unet3d.data.synthetic import write_dataset


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
