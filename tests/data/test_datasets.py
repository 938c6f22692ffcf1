"""Datasets (unet3d/data/datasets.py): case items, the memory and disk caches, their fingerprint folders and the
automatic choice between them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai import transforms as mt

from tests.conftest import config
from tests.data.conftest import _chain
from unet3d.config.cases import Case, parse_cases
from unet3d.config.fields import parse_section
from unet3d.config.schema import DatasetConfig
from unet3d.data.datasets import (
    MEMORY_SHARE,
    automatic_cache,
    case_items,
    file_state_hash,
    fingerprint_dir,
    make_dataset,
    preprocessed_bytes,
)
from unet3d.data.synthetic import write_dataset
from unet3d.data.transforms import build_transforms, preprocessing_fingerprint

BRATS = [2, 1, 4]


@pytest.fixture
def cached(tmp_path):
    """Three cases, a validation-style transform chain, and its fingerprint folder."""
    entries = write_dataset(tmp_path / "data", 3, seed=2, shape_range=(16, 18))
    parsed = config(tmp_path / "data", entries, labels=BRATS, desired_shape=[12, 12, 12], resample=True)
    transform = build_transforms(parsed.dataset, with_label=True, softmax=False, augment=False)
    folder = fingerprint_dir(tmp_path / "cache", preprocessing_fingerprint(parsed.dataset, softmax=False))
    items = case_items(parsed.groups["training"], with_label=True)
    return parsed, items, transform, folder


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("**/*.pt"))


class LoadCounter:
    """Counts LoadImaged calls (or forbids them)."""

    def __init__(self, monkeypatch, forbid=False):
        self.calls = []
        original = mt.LoadImaged.__call__
        counter = self

        def patched(self, data, *args, **kwargs):
            counter.calls.append(data["image"][0])
            if forbid:
                raise AssertionError(f"NIfTI read for {data['image'][0]}")
            return original(self, data, *args, **kwargs)

        monkeypatch.setattr(mt.LoadImaged, "__call__", patched)


def test_case_items(tmp_path):
    cases = [Case(images=[tmp_path / "a1", tmp_path / "a2"], label=tmp_path / "s", case_id="a")]
    assert case_items(cases, with_label=True) == [
        {"image": [str(tmp_path / "a1"), str(tmp_path / "a2")], "case_id": "a", "label": str(tmp_path / "s")}
    ]
    assert case_items(cases, with_label=False) == [
        {"image": [str(tmp_path / "a1"), str(tmp_path / "a2")], "case_id": "a"}
    ]


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_uncached_and_memory_datasets_match_the_transform(cached, cache):
    _, items, transform, _ = cached
    dataset = make_dataset(items, transform, cache, None)
    assert len(dataset) == 3
    for i, item in enumerate(items):
        torch.testing.assert_close(dataset[i]["image"].as_tensor(), transform(dict(item))["image"].as_tensor())


def test_disk_cache_one_file_per_case(cached):
    _, items, transform, folder = cached
    dataset = make_dataset(items, transform, "disk", folder)
    assert cache_files(folder) == []
    first = [dataset[i] for i in range(len(dataset))]
    assert len(cache_files(folder)) == 3
    assert (folder / "preprocessing.json").is_file()
    for out in first:
        assert out["image"].shape == (4, 12, 12, 12)
        assert out["label"].shape == (3, 12, 12, 12)


def test_disk_cache_second_pass_reads_no_nifti(cached, monkeypatch):
    _, items, transform, folder = cached
    first = [make_dataset(items, transform, "disk", folder)[i] for i in range(3)]
    counter = LoadCounter(monkeypatch, forbid=True)
    monkeypatch.setattr(nib, "load", lambda *a, **k: pytest.fail("nibabel.load called"))
    again = make_dataset(items, build_transforms(cached[0].dataset, True, False, False), "disk", folder)
    second = [again[i] for i in range(3)]
    assert counter.calls == []
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
        torch.testing.assert_close(torch.as_tensor(a["label"]), torch.as_tensor(b["label"]))
        assert b["case_id"] == a["case_id"]
    assert len(cache_files(folder)) == 3


def test_touching_a_file_recomputes_that_case_only(cached, monkeypatch):
    _, items, transform, folder = cached
    dataset = make_dataset(items, transform, "disk", folder)
    for i in range(3):
        dataset[i]
    before = set(cache_files(folder))
    label = Path(items[1]["label"])
    stat = label.stat()
    old_keys = [file_state_hash(item) for item in items]
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    new_keys = [file_state_hash(item) for item in items]
    assert new_keys[1] != old_keys[1]
    assert (new_keys[0], new_keys[2]) == (old_keys[0], old_keys[2])
    counter = LoadCounter(monkeypatch)
    for i in range(3):
        dataset[i]
    assert counter.calls == [items[1]["image"][0]]
    after = set(cache_files(folder))
    assert before < after and len(after - before) == 1
    assert (after - before).pop().stem == file_state_hash(items[1]).decode()


def test_disk_cache_runs_random_transforms_after_the_cache(tmp_path, monkeypatch):
    entries = write_dataset(tmp_path / "data", 1, seed=4, shape_range=(16, 16))
    parsed = config(tmp_path / "data", entries, labels=BRATS, desired_shape=[8, 8, 8], random_crop=True)
    transform = build_transforms(parsed.dataset, with_label=True, softmax=False, augment=True)
    transform.set_random_state(seed=0)
    folder = fingerprint_dir(tmp_path / "cache", preprocessing_fingerprint(parsed.dataset, softmax=False))
    dataset = make_dataset(case_items(parsed.groups["training"], True), transform, "disk", folder)
    dataset[0]
    LoadCounter(monkeypatch, forbid=True)
    patches = [dataset[0]["image"] for _ in range(6)]
    assert all(p.shape == (4, 8, 8, 8) for p in patches)
    assert any(not torch.equal(torch.as_tensor(patches[0]), torch.as_tensor(p)) for p in patches[1:])


def test_fingerprint_dir_writes_preprocessing_json(tmp_path):
    fingerprint = preprocessing_fingerprint(DatasetConfig(labels=BRATS, desired_shape=[16, 16, 16]), softmax=True)
    folder = fingerprint_dir(tmp_path / "cache", fingerprint)
    assert folder.parent == tmp_path / "cache"
    saved = json.loads((folder / "preprocessing.json").read_text())
    assert saved == json.loads(json.dumps(fingerprint))
    assert saved["desired_shape"] == [16, 16, 16]
    assert saved["softmax"] is True
    assert fingerprint_dir(tmp_path / "cache", fingerprint) == folder  # stable
    assert [p.name for p in folder.iterdir()] == ["preprocessing.json"]


def test_normalization_change_does_not_reuse_the_cache(tmp_path):
    entries = write_dataset(tmp_path / "data", 1, seed=1, shape_range=(16, 16))
    root = tmp_path / "cache"
    outputs = []
    for normalization in ("zero_mean", None):
        parsed = config(tmp_path / "data", entries, labels=BRATS, normalization=normalization)
        transform = build_transforms(parsed.dataset, with_label=True, softmax=False, augment=False)
        folder = fingerprint_dir(root, preprocessing_fingerprint(parsed.dataset, softmax=False))
        item = case_items(parsed.groups["training"], True)[0]
        outputs.append((make_dataset([item], transform, "disk", folder)[0], transform(dict(item))))
    for cached_item, fresh in outputs:
        torch.testing.assert_close(torch.as_tensor(cached_item["image"]), fresh["image"].as_tensor())


def test_training_and_validation_caches_do_not_mix(tmp_path):
    entries = write_dataset(tmp_path / "data", 1, seed=1, shape_range=(16, 16))
    flip = {"name": "RandFlipd", "prob": 0.5}
    parsed = config(tmp_path / "data", entries, labels=BRATS, training={"spatial_augmentations": [flip]})
    training = parsed.dataset_for("training")
    validation = parsed.dataset_for("validation")
    root = tmp_path / "cache"
    item = case_items(parsed.groups["training"], True)[0]
    train_set = make_dataset(
        [item],
        build_transforms(training, True, False, True),
        "disk",
        fingerprint_dir(root, preprocessing_fingerprint(training, False)),
    )
    val_transform = build_transforms(validation, True, False, False)
    val_set = make_dataset(
        [item], val_transform, "disk", fingerprint_dir(root, preprocessing_fingerprint(validation, False))
    )
    train_set[0]  # a training epoch fills the cache first (fold k trains on a case that fold k+1 validates on)
    image = torch.as_tensor(val_set[0]["image"])
    torch.testing.assert_close(image, val_transform(dict(item))["image"].as_tensor())
    assert abs(float(image.mean())) < 1e-4  # normalized


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


def test_memory_when_the_cases_fit_in_a_quarter_of_the_available_memory():
    assert MEMORY_SHARE == 0.25
    assert automatic_cache(250, 1000) == "memory"
    assert automatic_cache(251, 1000) == "disk"
    assert automatic_cache(10, 0) == "disk", "unknown available memory: the disk is the safe choice"


def test_size_estimate_from_the_desired_shape_or_the_image_headers(tmp_path: Path):
    entries = write_dataset(tmp_path, 2, seed=1, shape_range=(16, 20))
    cases = parse_cases(entries, tmp_path, "training_filenames")
    assert preprocessed_bytes(cases, [16, 16, 16], 3) == 2 * 16**3 * (4 + 3) * 4
    import nibabel as nib

    voxels = sum(int(np.prod(nib.load(str(case.images[0])).shape)) for case in cases)
    assert preprocessed_bytes(cases, None, 3) == voxels * 7 * 4


@pytest.mark.parametrize("mode", ["disk", "memory"])
def test_a_cropped_case_is_cached_without_the_scan_it_was_cropped_from(tmp_path: Path, mode: str):
    # A 48³ scan whose foreground is a 12³ block: the crop is a view of the whole scan, and caching the view would
    # keep (and write) all 48³ voxels.
    image = np.zeros((48, 48, 48), np.float32)
    image[18:30, 18:30, 18:30] = 1.0 + np.random.default_rng(0).random((12, 12, 12), dtype=np.float32)
    label = (image > 1.5).astype(np.uint8)
    for name, data in (("image", image), ("label", label)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"{name}.nii.gz")
    case = Case(images=[tmp_path / "image.nii.gz"], label=tmp_path / "label.nii.gz", case_id="c")
    planned = {  # as unet3d-plan writes it: the case normalized whole, then the patches augmented
        "labels": [1],
        "crop_foreground": True,
        "normalization": "NormalizeIntensityd",
        "normalization_kwargs": {"nonzero": True, "channel_wise": True},
        "training": {"spatial_augmentations": [{"name": "RandFlipd", "prob": 0.5, "spatial_axis": 0}]},
    }
    dataset_config = parse_section(DatasetConfig, planned, "dataset")
    transform = build_transforms(dataset_config, with_label=True, softmax=False, augment=True)
    dataset = make_dataset(case_items([case], True), transform, mode, tmp_path / "cache" if mode == "disk" else None)
    item = dataset[0]
    assert tuple(item["image"].shape[1:]) == (12, 12, 12)  # the foreground block
    if mode == "disk":
        (entry,) = cache_files(tmp_path / "cache")
        assert entry.stat().st_size < 3 * 12**3 * 4 * 2  # image and label of the crop (48³ would be 885 kB)
        stored = torch.load(entry, weights_only=True)
    else:
        stored = dataset._cache[0]
    for key in ("image", "label"):
        tensor = stored[key]
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size(), key


LOADER_FAULTS = r"""
import platform, resource, sys
import torch
from unet3d.data.datasets import make_loader

class Cases(torch.utils.data.Dataset):
    # each item: five cases of three 18 MB arrays, made and dropped; the page faults of the last four
    def __len__(self):
        return 1

    def __getitem__(self, index):
        faults = []
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            arrays = [bytearray(18 * 2**20) for _ in range(3)]
            del arrays
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return max(faults[1:])

for workers in (1, 0):  # a worker first: forked from this process before it sets anything itself
    print(int(next(iter(make_loader(Cases(), batch_size=1, n_workers=workers, pin_memory=False)))))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's")
def test_loader_workers_keep_freed_memory_and_the_main_process_does_not():
    # in a fresh interpreter: a forked worker inherits what this test process has set
    run = subprocess.run([sys.executable, "-c", LOADER_FAULTS], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    in_worker, in_this_process = (int(n) for n in run.stdout.split()[-2:])
    pages = 18 * 2**20 // 4096  # glibc's default faults in about 9,000 pages a case (test_allocator.py)
    assert in_worker < pages // 20
    assert in_this_process > pages  # not the main process, which predicts too: kept memory raised its peak
