"""Per-sample augmentation seeds, drawn in the training process.

Loader workers hold their own copies of the transforms: re-seeding the training process's copy every epoch does not
reach them, and what each worker draws depends on how the samples are dealt among the workers. So the sampler hands
out `(index, seed)` pairs, with the seeds drawn from the epoch's seed in the training process, and the dataset
re-seeds the random transforms before each sample. A sample's augmentation then depends only on (run seed, epoch,
position in the epoch): the same with 0, 2 or 8 workers, and the same after a resume.

The samples leave as plain tensors: a worker hands a batch over by pickling it, which costs ten times more with
MONAI's metadata attached (measured in `benchmarks/run.py`), and training does not use that metadata.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch.utils.data import Dataset, Sampler


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields `(index, seed)` for each index of `sampler`; the seeds follow from the seed given to `set_epoch`."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.seed = 0

    def set_epoch(self, epoch: int, seed: int, shuffle_seed: int) -> None:
        """Seed the coming epoch. A sampler with its own generator shuffles from `seed` (not from the global random
        state, which a loader without workers draws from at every epoch's start and one with persistent workers does
        not); a DistributedSampler inside shuffles from (`shuffle_seed`, `epoch`), the same on all ranks."""
        self.seed = seed
        generator = getattr(self.sampler, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)
        if isinstance(self.sampler, torch.utils.data.DistributedSampler):
            self.sampler.seed = shuffle_seed
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(self.seed)
        for index in self.sampler:
            yield int(index), int(rng.integers(2**31))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


_THREAD_VIEWS = threading.local()  # per thread: SeededDataset → that thread's view of its dataset


class SeededDataset(Dataset):
    """A MONAI dataset indexed by `(index, seed)`: its transform chain is re-seeded with `seed` before each sample,
    and the sample (or the list of samples of a multi-patch crop) comes back without metadata.

    Each thread works on its own copy of the transform chain (the data and its cache are shared), so thread workers
    transform in parallel without drawing from each other's random states."""

    def __init__(self, dataset: Any, with_seed: bool = False) -> None:
        self.dataset = dataset
        self.with_seed = with_seed  # each sample also carries its `seed` and `part` (its place in a multi-patch crop)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        dataset = self._own()
        dataset.transform.set_random_state(seed=seed)
        sample = dataset[index]
        samples = [plain(s) for s in sample] if isinstance(sample, list) else [plain(sample)]
        if self.with_seed:  # for the part of the chain that runs on the device (`unet3d.data.device_augmentation`)
            samples = [{**s, "seed": seed, "part": part} for part, s in enumerate(samples)]
        return samples if isinstance(sample, list) else samples[0]

    def _own(self) -> Any:
        """This thread's view of the dataset: the same data and cache, its own transform chain."""
        views = _THREAD_VIEWS.__dict__.setdefault("views", weakref.WeakKeyDictionary())
        dataset = views.get(self)
        if dataset is None:
            dataset = copy.copy(self.dataset)
            dataset.transform = copy.deepcopy(self.dataset.transform)
            views[self] = dataset
        return dataset


def plain(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample with its MetaTensors as plain tensors (sharing their memory)."""
    return {key: value.as_tensor() if isinstance(value, MetaTensor) else value for key, value in sample.items()}
