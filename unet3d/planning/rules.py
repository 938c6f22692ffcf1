"""The planner's rules: from a data set's fingerprint to the numbers of a config, each with the reason it was chosen.

Every function here is pure (fingerprint in, values and a sentence out), so each rule is tested on its own and the
planned config says why it holds what it holds (its `planned.rules` section). The rules follow nnU-Net's published
heuristics where they exist (median spacing, anisotropy handling, patch and network from a memory budget, the
normalization scheme per modality), stated here in our own terms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ANISOTROPY = 3.0  # an axis this many times coarser than the finest is kept coarse
MIN_FEATURE_MAP = 4  # voxels per axis at the deepest level
MAX_LEVELS = 6
# Values held per (filter x voxel) for a training step (forward activations kept for the backward pass, their
# gradients, normalization and the decoder): calibrated so that nnU-Net's default 3D plan (128³ patch, batch 2,
# 32-320 filters, fp16) comes to its 8 GB target.
VALUES_PER_ACTIVATION = 22
# nnU-Net's channel names that choose a scheme other than CT and z-score (any other name is z-scored, as there).
NNUNET_SCHEMES = {"nonorm": "none", "rescale_to_0_1": "rescale_to_0_1", "rgb_to_0_1": "rgb_to_0_1"}
AIR_HU = -500  # a scan whose darkest 0.5% of voxels lie below this holds air in Hounsfield units: CT
CT_NAME = re.compile(r"(?<![a-z])cta?(?![a-z])", re.IGNORECASE)  # CT, ct_venous, CTA; not ACTIVE


@dataclass(frozen=True)
class Profile:
    """What the plan aims at: an accelerator, a GPU (mixed precision, nnU-Net's widths and schedule), or a CPU
    (narrower, shorter)."""

    device: Literal["accelerator", "cpu"]
    memory_gb: float
    base_filters: int
    max_filters: int
    bytes_per_value: int
    max_patch_voxels: int
    batch_size: int
    n_epochs: int
    iterations_per_epoch: int


def profile_for(device: str, memory_gb: float) -> Profile:
    """The accelerator profile (fp16, 32-320 filters, 1000 epochs x 250 iterations) or the CPU one (fp32, 16-128
    filters, patches of at most 64³ voxels, 100 epochs x 50 iterations: hours, not weeks, on a workstation CPU)."""
    if device == "cpu":
        return Profile("cpu", memory_gb, 16, 128, 4, 64**3, 2, 100, 50)
    return Profile("accelerator", memory_gb, 32, 320, 2, 256**3, 2, 1000, 250)


def target_spacing(spacings: np.ndarray) -> tuple[list[float], str]:
    """The median spacing per axis; an axis more than ANISOTROPY times coarser than the finest stays coarse (the
    10th percentile of its spacings, never finer than the other axes) instead of being resampled to isotropic."""
    median = np.median(spacings, axis=0)
    coarse = int(np.argmax(median))
    others = np.delete(median, coarse)
    ratio = float(median[coarse] / others.min())
    if ratio <= ANISOTROPY:
        return [round(float(v), 4) for v in median], "median voxel spacing of the cases, per axis (mm)"
    target = median.copy()
    target[coarse] = max(float(np.percentile(spacings[:, coarse], 10)), float(others.max()))
    return (
        [round(float(v), 4) for v in target],
        f"median spacing per axis, except axis {coarse}, {ratio:.1f}x coarser than the finest (anisotropic, over "
        f"{ANISOTROPY:g}x): kept coarse at the 10th percentile of its spacings, not resampled to isotropic",
    )


def topology(patch: Sequence[int], spacing: Sequence[float]) -> tuple[list[list[int]], list[list[int]]]:
    """DynUNet kernels and strides for a patch: an axis is halved at a level while its spacing there is within 2x of
    the finest and its feature map stays at least MIN_FEATURE_MAP voxels; its kernel is 1 while its spacing is more
    than 2x the finest (a thick-slice axis is not convolved across before it is fine enough), and 3 from the level
    where it first is, for good (as nnU-Net: an axis that stopped pooling early never turns the others' kernels to 1,
    which would leave a stride-2 convolution that skips positions unfiltered)."""
    spacing = [float(s) for s in spacing]
    size = [int(s) for s in patch]
    convolved = [False] * len(size)

    def kernel(current: list[float]) -> list[int]:
        for axis, s in enumerate(current):
            convolved[axis] = convolved[axis] or s <= 2 * min(current)
        return [3 if done else 1 for done in convolved]

    kernels, strides = [kernel(spacing)], [[1] * len(size)]
    while len(strides) < MAX_LEVELS:
        stride = [
            2 if s <= 2 * min(spacing) and n >= 2 * MIN_FEATURE_MAP else 1 for s, n in zip(spacing, size, strict=True)
        ]
        if max(stride) == 1:
            break
        size = [n // k for n, k in zip(size, stride, strict=True)]
        spacing = [s * k for s, k in zip(spacing, stride, strict=True)]
        strides.append(stride)
        kernels.append(kernel(spacing))
    return kernels, strides


def total_strides(strides: Sequence[Sequence[int]]) -> list[int]:
    """The product of the strides per axis: the patch must be a multiple of it."""
    return [math.prod(level[axis] for level in strides) for axis in range(len(strides[0]))]


def filters_for(levels: int, profile: Profile) -> list[int]:
    """Filters per level: doubling from the profile's base, capped at its maximum."""
    return [min(profile.base_filters * 2**level, profile.max_filters) for level in range(levels)]


def memory_bytes(
    patch: Sequence[int], strides: Sequence[Sequence[int]], filters: Sequence[int], batch: int, profile: Profile
) -> int:
    """Estimated memory of a training step: the activations of every level (filters x voxels) times
    VALUES_PER_ACTIVATION, in the profile's precision."""
    size = [float(n) for n in patch]
    total = 0.0
    for stride, width in zip(strides, filters, strict=True):
        size = [n / k for n, k in zip(size, stride, strict=True)]
        total += width * math.prod(size)
    return int(batch * total * VALUES_PER_ACTIVATION * profile.bytes_per_value)


@dataclass(frozen=True)
class Network:
    """A planned patch size and the DynUNet that fits it."""

    patch: list[int]
    kernels: list[list[int]]
    strides: list[list[int]]
    filters: list[int]
    memory_gb: float
    rule: str


def plan_network(median_shape: Sequence[float], spacing: Sequence[float], profile: Profile) -> Network:
    """Start from the median shape at the target spacing (the whole case in one patch) and shrink the axis that spans
    the most millimetres until a training step fits the memory budget and the profile's patch limit."""
    patch = [max(2 * MIN_FEATURE_MAP, round(n)) for n in median_shape]
    while True:
        kernels, strides = topology(patch, spacing)
        multiple = total_strides(strides)
        patch = [max(m, n // m * m) for n, m in zip(patch, multiple, strict=True)]
        filters = filters_for(len(strides), profile)
        needed = memory_bytes(patch, strides, filters, profile.batch_size, profile)
        if needed <= profile.memory_gb * 2**30 and math.prod(patch) <= profile.max_patch_voxels:
            break
        extent = [n * s if n > 2 * MIN_FEATURE_MAP else 0 for n, s in zip(patch, spacing, strict=True)]
        if max(extent) == 0:
            raise ValueError(f"no patch fits {profile.memory_gb:g} GB; raise the memory budget")
        axis = int(np.argmax(extent))
        patch[axis] = max(2 * MIN_FEATURE_MAP, patch[axis] - max(multiple[axis], patch[axis] // 10))
    rule = (
        f"median case shape at the target spacing ({[round(float(n)) for n in median_shape]}), shrunk along the axis "
        f"spanning the most mm until a step fits {profile.memory_gb:g} GB (estimated {needed / 2**30:.2f} GB) "
        f"and {round(profile.max_patch_voxels ** (1 / 3))}³ voxels; a multiple of the network's total stride "
        f"{multiple}"
    )
    return Network(patch, kernels, strides, filters, needed / 2**30, rule)


def is_ct(name: str | None, stats: dict[str, Any]) -> tuple[bool, str]:
    """Whether a channel holds CT: named so (e.g. 'CT' in the data set's channel names), or, unnamed, with the darkest
    0.5% of every case's voxels below AIR_HU (air in Hounsfield units). Unnamed, each case decides for itself: where
    some cases have air and others not (CT beside MR), the channel is not CT, and the reason names both groups."""
    if name:
        if CT_NAME.search(name):
            return True, f"channel named {name!r}"
        return False, f"channel named {name!r}, not CT"
    air, other = stats.get("air_cases", []), stats.get("other_cases", [])
    if air and other:
        return False, (
            f"WARNING: unnamed channel mixing scans with Hounsfield-unit air ({_some(air)}) and scans without "
            f"({_some(other)}): not planned as CT, so no scan is clipped with another kind's numbers; name the "
            "channels, or plan CT and MR apart"
        )
    if air or (not other and stats["image_p00_5"] < AIR_HU):
        return True, f"unnamed channel whose darkest voxels ({stats['image_p00_5']:.0f}) are air in Hounsfield units"
    return False, "unnamed channel without Hounsfield-unit air"


def _some(case_ids: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(case_ids) - shown} more" if len(case_ids) > shown else ""
    return ", ".join(case_ids[:shown]) + more


def normalization_schemes(
    names: Sequence[str | None], channels: Sequence[dict[str, Any]], pooled: Sequence[dict[str, float]]
) -> tuple[str, dict[str, Any], str]:
    """`dataset.normalization` and its kwargs: CT channels clipped to the data set's foreground 0.5-99.5 percentiles
    and z-scored with its foreground mean and sd; other channels z-scored per case, over their non-zero voxels when
    the background is zeroed. All-MR data uses MONAI's NormalizeIntensityd."""
    schemes, reasons = [], []
    for index, (name, stats, foreground) in enumerate(zip(names, channels, pooled, strict=True)):
        ct, why = is_ct(name, stats)
        named = NNUNET_SCHEMES.get((name or "").casefold())
        if named is not None:
            schemes.append({"scheme": named})
            reasons.append(f"channel {index}: {named} (channel named {name!r}, nnU-Net's scheme of that name)")
        elif ct:
            schemes.append(
                {
                    "scheme": "ct",
                    "lower": round(foreground["p00_5"], 3),
                    "upper": round(foreground["p99_5"], 3),
                    "mean": round(foreground["mean"], 3),
                    "std": round(max(foreground["std"], 1e-3), 3),
                }
            )
            reasons.append(f"channel {index}: CT scheme ({why})")
        else:
            nonzero = stats["zero_fraction"] > 0.2
            schemes.append({"scheme": "zscore", "nonzero": nonzero})
            where = " over non-zero voxels: zeroed background" if nonzero else ""
            reasons.append(f"channel {index}: per-case z-score ({why}){where}")
    rule = "; ".join(reasons)
    if all(s["scheme"] == "zscore" for s in schemes) and len({s["nonzero"] for s in schemes}) == 1:
        return "NormalizeIntensityd", {"channel_wise": True, "nonzero": schemes[0]["nonzero"]}, rule
    if len(schemes) == 1 or all(s == schemes[0] for s in schemes):
        if schemes[0]["scheme"] == "ct":
            return "CTNormalized", {k: v for k, v in schemes[0].items() if k != "scheme"}, rule
    return "ChannelNormalized", {"schemes": schemes}, rule
