"""Label maps → network channels: `encode` makes training targets (`unet3d.data.decoding` goes the other way).

A config's `labels` says which label values make each output channel: `[2, 1, 4]` gives one channel per value,
`[[1, 2], 4]` makes a channel of the values 1 and 2, and `setup_label_hierarchy` makes channel i the union of
`labels[i:]` (BraTS: [2, 1, 4] → whole tumour {2,1,4}, tumour core {1,4}, enhancing {4}). With a softmax activation
the channels must be mutually exclusive and a background channel is put first.

`region_masks` reads regions back from decoded label maps, so that every Dice (the training log's, the full-volume
validation's, the evaluation's) scores exactly the regions a written label map holds.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from unet3d.config.regions import LabelSpec, label_regions
from unet3d.data.decoding import decode
from unet3d.errors import ConfigError


def check_label_spec(labels: LabelSpec | None, hierarchy: bool, activation: str, where: str = "dataset.labels") -> None:
    """Reject label specs that cannot be trained: none given, repeats, overlap under softmax, background as a label."""
    if not labels:
        raise ConfigError(f"{where}: required for training; list the label values, e.g. [1] or [2, 1, 4]")
    flat = [value for group in label_regions(labels) for value in group]
    repeated = sorted({v for v in flat if flat.count(v) > 1})
    if repeated:
        raise ConfigError(f"{where}: label value(s) {repeated} appear in more than one channel")
    if 0 in flat:
        raise ConfigError(f"{where}: 0 is the background and cannot be a label channel")
    if activation == "softmax" and hierarchy:
        raise ConfigError(
            "dataset.setup_label_hierarchy: nested regions overlap, so they need a sigmoid activation, not softmax"
        )


def n_target_channels(labels: LabelSpec, activation: str) -> int:
    """Output channels the network needs: one per channel group, plus background under softmax."""
    return len(labels) + (1 if activation == "softmax" else 0)


def region_masks(
    probabilities: torch.Tensor, groups: Sequence[tuple[int, ...]], activation: str, threshold: float = 0.5
) -> torch.Tensor:
    """(C, *spatial) probabilities → (R, *spatial) boolean region masks, one per label group, read back from the
    decoded label map (so they are exactly the regions of the label map that is written)."""
    label_map = decode(probabilities, groups, activation, threshold)
    return encode(label_map[None], groups, background=False).bool()


def encode(label_map: torch.Tensor, groups: Sequence[tuple[int, ...]], background: bool) -> torch.Tensor:
    """(1, *spatial) label values → (C, *spatial) float one-hot channels; a background channel first if asked."""
    values = label_map[0] if label_map.shape[0] == 1 else label_map
    values = (values.round() if values.is_floating_point() else values).to(torch.int64)
    members = [v for group in groups for v in group]
    if members and min(members) >= 0:
        # One lookup per voxel in a (value, channel) table, 2-3x faster than a torch.isin per channel (each training
        # sample is encoded: 58 ms of a BraTS-size sample's 485 ms in a loader worker); other values find False.
        top = max(members)
        table = torch.zeros(top + 2, len(groups), dtype=torch.bool, device=values.device)
        for channel, group in enumerate(groups):
            table[list(group), channel] = True
        found = table[torch.where((values >= 0) & (values <= top), values, top + 1)].movedim(-1, 0)
    else:
        found = (
            torch.stack(
                [torch.isin(values, torch.tensor(group, dtype=torch.int64, device=values.device)) for group in groups]
            )
            if groups
            else torch.zeros((0, *values.shape), dtype=torch.bool, device=values.device)
        )
    if background:
        found = torch.cat([~found.any(0, keepdim=True), found])
    return found.to(torch.float32)


class LabelsToChannelsd(MapTransform):
    """Dictionary transform: replace a label map with its channel encoding (see `encode`); keeps MetaTensor meta."""

    def __init__(self, keys: KeysCollection, groups: Sequence[tuple[int, ...]], background: bool = False) -> None:
        super().__init__(keys)
        self.groups = [tuple(g) for g in groups]
        self.background = background

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            encoded = encode(torch.as_tensor(label).round(), self.groups, self.background)
            if isinstance(label, MetaTensor):
                encoded = MetaTensor(encoded, meta=label.meta, applied_operations=label.applied_operations)
            d[key] = encoded
        return d
