"""Network channels → label maps: the one place where channels become regions.

Every label map, every Dice (through `unet3d.data.labels.region_masks`) and the postprocessing go through `decode`, so
that they all agree. Nested regions stay nested: a voxel gets an inner region only where its enclosing regions are
predicted too. The module needs torch and MONAI only: `unet3d-export --format bundle` ships it in the bundle's
`scripts/`, where `FillBackgroundd` and `DecodeLabelsd` end the bundle's postprocessing as they end `unet3d-predict`'s.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform


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


def fill_background(probabilities: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities back in the original space, with the background (channel 0) holding what the inversion
    left out: outside the cropped or resampled region every channel came back 0 (plus interpolation dust of 1e-16,
    whose arg-max wrote random classes around the crop), and at its border they sum to under 1. This is what padding
    the background channel with 1 before interpolating would give."""
    missing = (1.0 - probabilities.sum(0)).clamp_min(0.0)
    filled = probabilities.clone()
    filled[0] += missing
    return filled


def _keep_meta(source: Any, values: torch.Tensor) -> torch.Tensor:
    if isinstance(source, MetaTensor):
        return MetaTensor(values, meta=source.meta, applied_operations=source.applied_operations)
    return values


class FillBackgroundd(MapTransform):
    """Dictionary transform: `fill_background` on (C, *spatial) softmax probabilities in the original space."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _keep_meta(d[key], fill_background(torch.as_tensor(d[key])))
        return d


class DecodeLabelsd(MapTransform):
    """Dictionary transform: (C, *spatial) probabilities → (1, *spatial) label map (see `decode`), keeping the
    MetaTensor's affine so that a writer puts it on the image's grid."""

    def __init__(
        self,
        keys: KeysCollection,
        groups: Sequence[Sequence[int]],
        activation: str,
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.groups = [tuple(int(v) for v in group) for group in groups]
        self.activation = activation
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label_map = decode(torch.as_tensor(d[key]), self.groups, self.activation, self.threshold)
            d[key] = _keep_meta(d[key], label_map[None])
        return d
