"""Augmentations on the training device (unet3d/data/device_augmentation.py): the split of the chain, and samples
equal to the loader's for the same seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader

from tests.data.conftest import _chain
from unet3d.config.cases import parse_cases
from unet3d.data.datasets import case_items, make_dataset
from unet3d.data.device_augmentation import DeviceAugmentation, device_start, loader_part
from unet3d.data.seeding import SeededDataset
from unet3d.data.synthetic import write_dataset

RECIPE = Path(__file__).resolve().parents[2] / "examples" / "nnunet_style" / "nnunet_style_config.json"


def _recipe_augmentations(patch: int, num_samples: int) -> dict:
    """The shipped nnU-Net-style augmentations with every probability set to 1, so each one acts on each sample."""
    training = json.loads(RECIPE.read_text())["dataset"]["training"]
    for spec in [*training["spatial_augmentations"], *training["intensity_augmentations"]]:
        if "prob" in spec:
            spec["prob"] = 1.0
        for key in ("spatial_size",):
            if key in spec:
                spec[key] = [patch] * 3
    training["spatial_augmentations"][0]["num_samples"] = num_samples
    return training


def test_the_device_part_starts_at_the_first_random_transform_that_is_not_a_crop_or_pad():
    chain = _chain(**_recipe_augmentations(8, 1))
    names = [type(step).__name__ for step in chain.transforms]
    start = device_start(chain)
    assert names[start] == "RandAffined"
    assert {"NormalizeIntensityd", "RandCropByPosNegLabeld", "SpatialPadd"} <= set(names[:start])  # whole case
    assert [type(s).__name__ for s in loader_part(chain).transforms] == names[:start]
    assert {"RandFlipd", "LabelsToChannelsd", "RandGaussianNoised", "RandAdjustContrastd"} <= set(
        DeviceAugmentation(chain).names
    )
    plain = _chain()  # no augmentation: nothing runs on the device
    assert device_start(plain) == len(plain.transforms)


@pytest.mark.parametrize("num_samples", [1, 2])
def test_samples_augmented_on_the_device_equal_the_loaders_for_the_same_seeds(tmp_path: Path, num_samples: int):
    entries = write_dataset(tmp_path, 3, seed=7, shape_range=(16, 20))
    cases = parse_cases(entries, tmp_path, "training_filenames")
    chain = _chain(**_recipe_augmentations(12, num_samples))
    keys = [(index, seed) for seed in (3, 11, 2024) for index in range(3)]
    loader = SeededDataset(make_dataset(case_items(cases, True), chain, "memory", None))
    expected = [s for key in keys for s in loader[key]]  # a list per case, also of one patch

    head = SeededDataset(make_dataset(case_items(cases, True), loader_part(chain), "memory", None), with_seed=True)
    batches = DataLoader(head, batch_size=2, sampler=keys)  # MONAI's collation, as training uses
    augment = DeviceAugmentation(chain)
    got = [
        {key: out[key][i] for key in ("image", "label")}
        for batch in batches
        for out in [augment(batch, torch.device("cpu"))]
        for i in range(out["image"].shape[0])
    ]
    assert len(got) == len(expected) == len(keys) * num_samples
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert a["image"].shape == b["image"].shape == (4, 12, 12, 12), i
        assert a["label"].shape == b["label"].shape == (3, 12, 12, 12), i
        torch.testing.assert_close(b["image"], a["image"], rtol=0, atol=1e-5, msg=f"sample {i}")
        assert torch.equal(b["label"], a["label"]), f"sample {i}"
    assert not torch.equal(got[0]["image"], got[num_samples]["image"])  # the seeds do change the samples
