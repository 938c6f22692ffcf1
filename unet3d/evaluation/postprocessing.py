"""Postprocessing decided on data: keep only the largest connected component of a region when that improves the
cross-validated Dice.

After every fold is predicted, each region is tried in turn on the held-out predictions of all folds (on top of the
regions already accepted); it is kept when the mean Dice over regions and cases rises. The decision is written to
`<cv work dir>/postprocessing.json` and `unet3d-predict` applies it to predictions made with that work dir's models.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from unet3d.atomic import atomic_write_json
from unet3d.data.decoding import enclosing
from unet3d.errors import ConfigError
from unet3d.evaluation.metrics import case_metrics, read_labels

log = logging.getLogger("unet3d")
POSTPROCESSING_FILENAME = "postprocessing.json"


def keep_largest_component(
    label_map: np.ndarray, groups: Sequence[tuple[int, ...]], regions: Sequence[int]
) -> np.ndarray:
    """Remove every voxel of the chosen regions (indices into `groups`) outside the region's largest connected
    component (face, edge and corner neighbours count as connected). A removed voxel of a nested region falls back to
    the region that encloses it (BraTS: a stray core voxel becomes whole tumour), else to background, so nested
    regions stay nested."""
    result = np.array(label_map, copy=True)
    structure = ndimage.generate_binary_structure(result.ndim, result.ndim)
    parents = enclosing(groups)
    for index in regions:
        mask = np.isin(result, groups[index])
        components, count = ndimage.label(mask, structure=structure)
        if count < 2:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        parent = parents[index]
        result[mask & (components != sizes.argmax())] = 0 if parent is None else groups[parent][0]
    return result


@dataclass
class Decision:
    """Which regions get the largest-component filter, and the cross-validated mean Dice without and with it."""

    regions: list[str]
    dice_before: float
    dice_after: float


def _mean_dice(
    pairs: Sequence[tuple[np.ndarray, np.ndarray, tuple[float, ...]]],
    groups: Sequence[tuple[int, ...]],
    names: Sequence[str],
    regions: Sequence[int],
) -> float:
    scores = []
    for prediction, truth, spacing in pairs:
        processed = keep_largest_component(prediction, groups, regions) if regions else prediction
        metrics = case_metrics(processed, truth, groups, names, spacing, hd95=False)
        scores.extend(metrics.values())
    return float(np.mean(scores))


def decide(pairs: Sequence[tuple[Path, Path]], groups: Sequence[tuple[int, ...]], names: Sequence[str]) -> Decision:
    """Greedy choice over regions, on (prediction file, ground-truth file) pairs of held-out cases."""
    loaded = []
    for prediction, truth in pairs:
        truth_map, spacing = read_labels(truth, "ground truth")
        loaded.append((read_labels(prediction, "prediction")[0], truth_map, spacing))
    chosen: list[int] = []
    before = best = _mean_dice(loaded, groups, names, chosen)
    for index in range(len(groups)):
        score = _mean_dice(loaded, groups, names, [*chosen, index])
        if score > best:
            chosen.append(index)
            best = score
    return Decision([names[i] for i in chosen], before, best)


def write_decision(work_dir: Path, decision: Decision, sources: dict[str, object]) -> Path:
    """Record the decision (and what it was computed from) in the CV work dir."""
    path = work_dir / POSTPROCESSING_FILENAME
    atomic_write_json(
        path,
        {
            "keep_largest_component": decision.regions,
            "mean_dice_before": decision.dice_before,
            "mean_dice_after": decision.dice_after,
            "decided_on": sources,
        },
    )
    return path


def read_decision(path: Path, names: Sequence[str]) -> list[int]:
    """The region indices a recorded decision applies the filter to."""
    data = json.loads(Path(path).read_text())
    regions = data.get("keep_largest_component", [])
    unknown = [r for r in regions if r not in names]
    if unknown:
        raise ConfigError(f"{path}: regions {unknown} are not among this config's regions {list(names)}")
    return [list(names).index(r) for r in regions]
