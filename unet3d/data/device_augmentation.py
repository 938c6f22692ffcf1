"""Random augmentations on the training device instead of in the loader workers.

nnU-Net asks for many CPU cores per GPU because its augmentations run in loader workers; a cluster node with 4 cores
per GPU starves the GPU at 128³ patches. With `training.augment_on: "device"` the workers run the chain only up to the
patch (loading, the cached preprocessing, crops and pads), and the training process runs the rest, from the first
random transform that is not a crop or pad (affine, flips, noise, contrast, ..., the label encoding, normalization)
on each sample once its batch is on the device; MONAI's transforms take device tensors.

The seeding is the loader's (`unet3d.data.seeding`): a sample's seed re-seeds a full copy of the chain before the
part on the device runs, so each transform draws what it would have drawn in a worker. A sample's augmentations are
therefore the same either way: equal on the CPU, within float tolerance on an accelerator.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from monai.transforms import Compose, RandomizableTrait

from unet3d.data.seeding import plain

CROP_PAD_MODULE = "monai.transforms.croppad"  # crops and pads pick the patch: they stay in the workers


def device_start(chain: Compose) -> int:
    """The index of the first transform of `chain` that runs on the device: the first random one that is not a crop
    or pad (len(chain.transforms) when there is none)."""
    for index, step in enumerate(chain.transforms):
        if isinstance(step, RandomizableTrait) and not type(step).__module__.startswith(CROP_PAD_MODULE):
            return index
    return len(chain.transforms)


def loader_part(chain: Compose) -> Compose:
    """The part of `chain` the loader workers run (seeded like the whole chain: its random transforms come first)."""
    return Compose(chain.transforms[: device_start(chain)])


class DeviceAugmentation:
    """Runs the device part of a training chain on a batch, sample by sample, each seeded as in the loader."""

    def __init__(self, chain: Compose) -> None:
        self.chain = copy.deepcopy(chain)
        self.part = Compose(self.chain.transforms[device_start(self.chain) :])
        self.names = [type(step).__name__ for step in self.part.transforms]

    def __call__(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """`batch` as the loader collated it (with each sample's `seed` and `part`), its images and labels moved to
        `device` and augmented there; the samples of one case (a multi-patch crop) follow each other, as in the
        loader's chain."""
        images, labels = [], []
        for index in range(len(batch["seed"])):
            if int(batch["part"][index]) == 0:
                self.chain.set_random_state(seed=int(batch["seed"][index]))
            sample = {
                key: torch.as_tensor(batch[key][index]).to(device, non_blocking=True) for key in ("image", "label")
            }
            sample = plain(self.part(sample))
            images.append(sample["image"])
            labels.append(sample["label"])
        return {"image": torch.stack(images), "label": torch.stack(labels)}
