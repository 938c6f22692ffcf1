"""Label maps ↔ network channels: `encode` makes training targets, `decode` makes label maps of network outputs.

A config's `labels` says which label values make each output channel: `[2, 1, 4]` gives one channel per value,
`[[1, 2], 4]` makes a channel of the values 1 and 2, and `setup_label_hierarchy` makes channel i the union of
`labels[i:]` (BraTS: [2, 1, 4] → whole tumour {2,1,4}, tumour core {1,4}, enhancing {4}). With a softmax activation
the channels must be mutually exclusive and a background channel is put first.

Decoding is the one place where channels become regions: every label map, every Dice (the training log's, the
full-volume validation's, the evaluation's) and the postprocessing go through it, so that they all agree. Nested
regions stay nested: a voxel gets an inner region only where its enclosing regions are predicted too.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from unet3d.config.regions import LabelSpec, label_regions
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


def enclosing(groups: Sequence[Sequence[int]]) -> list[int | None]:
    """For each channel, the channel that directly encloses its region (the smallest group that holds all of its
    values and more), or None. Under `setup_label_hierarchy` channel i is enclosed by channel i - 1."""
    sets = [frozenset(group) for group in groups]
    parents: list[int | None] = []
    for inner in sets:
        outer = [j for j, candidate in enumerate(sets) if inner < candidate]
        parents.append(min(outer, key=lambda j: len(sets[j])) if outer else None)
    return parents


def activate(logits: torch.Tensor, activation: str, dim: int = 1) -> torch.Tensor:
    """Network outputs → probabilities: a sigmoid per channel, or a softmax over the channel axis `dim`."""
    logits = logits.float()
    return torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=dim)


def decode(
    probabilities: torch.Tensor, groups: Sequence[Sequence[int]], activation: str, threshold: float = 0.5
) -> torch.Tensor:
    """(C, *spatial) probabilities → (*spatial) int16 label map with the config's label values.

    A channel stands for its group's first value (BraTS hierarchy: whole tumour 2, core 1, enhancing 4).
    softmax: channel 0 is the background, the most probable channel wins. sigmoid: a voxel's region is chosen from
    the outside in. Among the outermost regions (those no other channel encloses), the most probable one above
    `threshold` wins (ties: the first channel); inside it, the most probable of the regions it directly encloses that
    is above the threshold, and so on. An inner channel above the threshold where its enclosing region is not
    predicted is ignored, so the decoded regions are always nested as the label groups are.
    """
    values = torch.tensor([0] + [group[0] for group in groups], dtype=torch.int16)
    if activation == "softmax":
        return values[probabilities.argmax(0)]
    parents = enclosing(groups)
    chosen = torch.full(probabilities.shape[1:], -1, dtype=torch.int64)  # -1: background, else a channel index
    level = [i for i, parent in enumerate(parents) if parent is None]
    while level:
        index = torch.tensor(level)
        candidates = probabilities[index]
        parent = torch.tensor([-1 if parents[i] is None else parents[i] for i in level])
        view = (len(level),) + (1,) * (probabilities.ndim - 1)
        eligible = (candidates > threshold) & (chosen[None] == parent.view(view))
        scores = torch.where(eligible, candidates, torch.full_like(candidates, -1.0))
        winner = index[scores.argmax(0)]
        chosen = torch.where(eligible.any(0), winner, chosen)
        level = [i for i, p in enumerate(parents) if p is not None and p in level]
    return values[chosen + 1]


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
