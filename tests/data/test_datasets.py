"""Datasets built by `unet3d.data.datasets`: what the caches hold."""

from __future__ import annotations

from pathlib import Path

from unet3d.config.load import parse_cases
from unet3d.config.schema import DatasetConfig, parse_section
from unet3d.data.datasets import case_items, make_dataset
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
