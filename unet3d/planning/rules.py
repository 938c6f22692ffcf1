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
# nnU-Net's calibration of its feature-value count (`feature_values`) to memory: this many values per sample
# filled 8 GB at batch 2 in mixed precision (its planner's reference for 3D U-Nets).
REFERENCE_VALUES = 560_000_000
REFERENCE_GB = 8
REFERENCE_BATCH = 2
# nnU-Net's channel names that choose a scheme other than CT and z-score (any other name is z-scored, as there).
NNUNET_SCHEMES = {"nonorm": "none", "rescale_to_0_1": "rescale_to_0_1", "rgb_to_0_1": "rgb_to_0_1"}
AIR_HU = -500  # a scan whose darkest 0.5% of voxels lie below this holds air in Hounsfield units: CT
CT_NAME = re.compile(r"(?<![a-z])cta?(?![a-z])", re.IGNORECASE)  # CT, ct_venous, CTA; not ACTIVE


MAX_RESAMPLED_VOXELS = 2**31  # 8 GiB per float32 channel: far beyond any scan, a spacing typed in the wrong unit


class PlanError(ValueError):
    """No plan exists for these numbers; `option` names the setting to change."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True)
class Profile:
    """What the plan aims at: an accelerator, a GPU (mixed precision, nnU-Net's widths and schedule), or a CPU
    (narrower, shorter, with a hard limit on the patch)."""

    device: Literal["accelerator", "cpu"]
    memory_gb: float
    base_filters: int
    max_filters: int
    bytes_per_value: int
    patch_voxels: int  # the volume of the first patch tried (nnU-Net: 256³); on the CPU also a limit
    batch_size: int  # the smallest batch (nnU-Net: 2); spare memory on an accelerator raises it
    n_epochs: int
    iterations_per_epoch: int


def profile_for(device: str, memory_gb: float) -> Profile:
    """The accelerator profile (fp16, 32-320 filters, 1000 epochs x 250 iterations) or the CPU one (fp32, 16-128
    filters, patches of at most 64³ voxels, 100 epochs x 50 iterations: hours, not weeks, on a workstation CPU)."""
    if device == "cpu":
        return Profile("cpu", memory_gb, 16, 128, 4, 64**3, 2, 100, 50)
    return Profile("accelerator", memory_gb, 32, 320, 2, 256**3, 2, 1000, 250)


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """The median spacing per axis, except for thick slices (nnU-Net's rule): when the coarsest axis is over
    ANISOTROPY times coarser than every other axis and has under 1/ANISOTROPY of their median voxels, it takes the
    10th percentile of its spacings (never finer than the other axes) instead of being resampled to the median."""
    median = np.median(spacings, axis=0)
    sizes = np.median(shapes, axis=0)
    coarse = int(np.argmax(median))
    others = np.delete(median, coarse)
    thick = median[coarse] > ANISOTROPY * others.max()
    few = sizes[coarse] * ANISOTROPY < np.delete(sizes, coarse).min()
    if not (thick and few):
        why = "median voxel spacing of the cases, per axis (mm)"
        if thick:
            why += f"; axis {coarse} is over {ANISOTROPY:g}x coarser but not thin in voxels, so it takes the median too"
        return [round(float(v), 4) for v in median], why
    target = median.copy()
    target[coarse] = max(float(np.percentile(spacings[:, coarse], 10)), float(others.max()))
    return (
        [round(float(v), 4) for v in target],
        f"median spacing per axis, except axis {coarse}: over {ANISOTROPY:g}x coarser than the others and under "
        f"1/{ANISOTROPY:g} of their voxels (thick slices), it takes the 10th percentile of its spacings",
    )


def topology(patch: Sequence[int], spacing: Sequence[float]) -> tuple[list[list[int]], list[list[int]]]:
    """DynUNet kernels and strides for a patch, by nnU-Net's rule. At each level the axes that can still be halved
    (at least 2 x MIN_FEATURE_MAP voxels) and whose spacing is under 2x the finest of those are halved; a single such
    axis only while it has 3 x MIN_FEATURE_MAP voxels. An axis's kernel is 1 while its spacing is 2x the finest or
    more (no convolution across thick slices) and 3 from the level where it is not, for good; the bottleneck's kernel
    is 3 along every axis."""
    spacing = [float(s) for s in spacing]
    size = [float(n) for n in patch]
    kernel = [1] * len(size)
    kernels, strides = [], [[1] * len(size)]
    while True:
        poolable = [axis for axis, n in enumerate(size) if n >= 2 * MIN_FEATURE_MAP]
        if not poolable:
            break
        finest = min(spacing[axis] for axis in poolable)
        poolable = [axis for axis in poolable if spacing[axis] / finest < 2]
        if len(poolable) == 1 and size[poolable[0]] < 3 * MIN_FEATURE_MAP:
            break
        kernel = [3 if k == 3 or s / min(spacing) < 2 else 1 for k, s in zip(kernel, spacing, strict=True)]
        kernels.append(list(kernel))
        strides.append([2 if axis in poolable else 1 for axis in range(len(size))])
        for axis in poolable:
            spacing[axis] *= 2
            size[axis] = math.ceil(size[axis] / 2)
    kernels.append([3] * len(size))
    return kernels, strides


def total_strides(strides: Sequence[Sequence[int]]) -> list[int]:
    """The product of the strides per axis: the patch must be a multiple of it."""
    return [math.prod(level[axis] for level in strides) for axis in range(len(strides[0]))]


def filters_for(levels: int, profile: Profile) -> list[int]:
    """Filters per level: doubling from the profile's base, capped at its maximum."""
    return [min(profile.base_filters * 2**level, profile.max_filters) for level in range(levels)]


def feature_values(patch: Sequence[int], strides: Sequence[Sequence[int]], filters: Sequence[int], classes: int) -> int:
    """Values in the feature maps of one sample's forward pass, counted as nnU-Net counts them for its plans: two
    convolutions per encoder level; per decoder level the upsampled map and two convolutions at its skip's size; the
    output at full resolution."""
    sizes, size = [], [int(n) for n in patch]
    for stride in strides:
        size = [n // k for n, k in zip(size, stride, strict=True)]
        sizes.append(math.prod(size))
    encoder = sum(2 * width * voxels for width, voxels in zip(filters, sizes, strict=True))
    decoder = sum(3 * width * voxels for width, voxels in zip(filters[:-1], sizes[:-1], strict=True))
    return encoder + decoder + classes * sizes[0]


def memory_bytes(
    patch: Sequence[int],
    strides: Sequence[Sequence[int]],
    filters: Sequence[int],
    batch: int,
    profile: Profile,
    classes: int = 2,
) -> int:
    """Estimated memory of a training step: the feature values per sample (`feature_values`) at nnU-Net's
    calibration (REFERENCE_VALUES per sample fill 8 GB at batch 2 in mixed precision), scaled to the profile's
    precision and the batch."""
    per_value = REFERENCE_GB * 2**30 / (REFERENCE_VALUES * REFERENCE_BATCH) * profile.bytes_per_value / 2
    return int(feature_values(patch, strides, filters, classes) * batch * per_value)


@dataclass(frozen=True)
class Network:
    """A planned patch size, batch size and the DynUNet that fits them."""

    patch: list[int]
    kernels: list[list[int]]
    strides: list[list[int]]
    filters: list[int]
    batch_size: int
    memory_gb: float
    rule: str


MAX_SHRINK_STEPS = 10_000
DATASET_COVERED = 0.05  # a batch covers at most this fraction of the data set's voxels (nnU-Net's overfitting cap)
LOWRES_COVERAGE = 0.25  # a patch under this fraction of the median case calls for a low-resolution plan (nnU-Net)
LOWRES_STEP = 1.03  # the low-resolution spacing grows by this factor per try (nnU-Net)


def _rounded_up(patch: Sequence[float], spacing: Sequence[float]) -> tuple[list[int], list[list[int]], list[list[int]]]:
    kernels, strides = topology([int(n) for n in patch], spacing)
    multiple = total_strides(strides)
    return [math.ceil(n / m) * m for n, m in zip(patch, multiple, strict=True)], kernels, strides


def _shrink_steps(
    patch: list[int], strides: list[list[int]], spacing: Sequence[float], median: Sequence[float]
) -> dict[int, int]:
    """Per axis that may still shrink, the step nnU-Net takes off it: the total stride of the patch with one stride
    off that axis. No axis goes below 2 x MIN_FEATURE_MAP voxels (or the median case, if smaller)."""
    steps = {}
    for axis, n in enumerate(patch):
        trial = list(patch)
        trial[axis] -= total_strides(strides)[axis]
        step = total_strides(topology(trial, spacing)[1])[axis]
        if n - step >= min(math.ceil(median[axis]), 2 * MIN_FEATURE_MAP):
            steps[axis] = step
    return steps


def plan_network(
    median_shape: Sequence[float], spacing: Sequence[float], profile: Profile, n_cases: int = 1, classes: int = 2
) -> Network:
    """nnU-Net's rule: start from a patch of the profile's volume shaped like the voxel spacing (isotropic in mm),
    no larger than the median case, rounded up to a multiple of the network's total stride (so it may exceed the
    median case by less than one stride; the case is padded); while a training step of the smallest batch exceeds the
    memory budget (or, on the CPU, the patch exceeds the profile's volume), take one stride off the axis largest
    relative to the median case. Spare memory on an accelerator raises the batch, up to 5% of the data set's voxels."""
    median = [float(n) for n in median_shape]
    inverse = [1.0 / float(s) for s in spacing]
    scale = (profile.patch_voxels / math.prod(inverse)) ** (1 / len(inverse))
    start = [max(1.0, min(round(v * scale), n)) for v, n in zip(inverse, median, strict=True)]
    patch, kernels, strides = _rounded_up(start, spacing)
    budget = profile.memory_gb * 2**30

    def fits(patch: list[int], strides: list[list[int]]) -> bool:
        filters = filters_for(len(strides), profile)
        needed = memory_bytes(patch, strides, filters, profile.batch_size, profile, classes)
        capped = profile.device == "cpu" and math.prod(patch) > profile.patch_voxels
        return needed <= budget and not capped

    for _ in range(MAX_SHRINK_STEPS):
        if fits(patch, strides):
            break
        steps = _shrink_steps(patch, strides, spacing, median)
        if not steps:
            raise PlanError("--gpu_memory_gb", f"no patch fits {profile.memory_gb:g} GB; raise the memory budget")
        # the axis largest relative to the median case; of equals, the first (nnU-Net's last, in z, y, x order)
        axis = max(steps, key=lambda a: (patch[a] / median[a], -a))
        patch[axis] -= steps[axis]
        patch, kernels, strides = _rounded_up(patch, spacing)
    else:
        raise PlanError("--gpu_memory_gb", f"no patch fits {profile.memory_gb:g} GB; raise the memory budget")
    filters = filters_for(len(strides), profile)
    needed = memory_bytes(patch, strides, filters, profile.batch_size, profile, classes)
    batch = profile.batch_size
    why_batch = f"the smallest batch, {batch}"
    if profile.device == "accelerator":
        by_memory = round(budget / needed * profile.batch_size)
        by_data = round(DATASET_COVERED * n_cases * math.prod(median) / math.prod(patch))
        batch = max(profile.batch_size, min(by_memory, by_data))
        why_batch = (
            f"batch {batch}: as many patches as the budget holds ({by_memory}), at most 5% of the data set's voxels "
            f"({by_data}), at least {profile.batch_size}"
        )
    rule = (
        f"nnU-Net's rule: a {round(profile.patch_voxels ** (1 / 3))}³-voxel patch shaped like the spacing, no larger "
        f"than the median case at the target spacing ({[round(n) for n in median]}), rounded up to a multiple of the "
        f"network's total stride {total_strides(strides)}; shrunk one stride at a time along the axis largest "
        f"relative to the median case until a step of {profile.batch_size} fits {profile.memory_gb:g} GB "
        + (f"and {round(profile.patch_voxels ** (1 / 3))}³ voxels " if profile.device == "cpu" else "")
        + f"(estimated {needed / 2**30:.2f} GB); {why_batch}"
    )
    return Network(patch, kernels, strides, filters, batch, needed * batch / profile.batch_size / 2**30, rule)


@dataclass(frozen=True)
class LowResolution:
    """nnU-Net's low-resolution configuration: the spacing at which the patch covers enough of the median case."""

    spacing: list[float]
    median_shape: list[int]
    network: Network
    coverage: float  # of the full-resolution patch, over the median case


def low_resolution(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    network: Network,
    profile: Profile,
    n_cases: int = 1,
    classes: int = 2,
) -> tuple[LowResolution | None, str]:
    """Whether nnU-Net would add a 3d_lowres configuration (the full-resolution patch covers under 25% of the median
    case), at which spacing, and the sentence saying so. The spacing grows by 3% per try, the finer axes first while
    an axis is over twice as coarse, until the patch covers 25% of the median case; a result under half the
    full-resolution voxels is dropped, as there."""
    median = np.asarray(median_shape, dtype=float)
    coverage = math.prod(network.patch) / float(np.prod(median))
    if coverage >= LOWRES_COVERAGE:
        return None, (
            f"the patch covers {min(coverage, 1.0):.0%} of the median case (nnU-Net adds a low-resolution "
            f"configuration under {LOWRES_COVERAGE:.0%}): one resolution"
        )
    full = np.asarray(spacing, dtype=float)
    low = full.copy()
    covered = coverage
    while covered < LOWRES_COVERAGE:
        coarser = low.max() / low > 2
        low[coarser if coarser.any() else slice(None)] *= LOWRES_STEP
        shape = full / low * median
        lowres = plan_network(shape.tolist(), low.tolist(), profile, n_cases, classes)
        covered = math.prod(lowres.patch) / float(np.prod(shape))
    if np.prod(median) / np.prod(shape) < 2:
        return None, (
            f"the patch covers {coverage:.0%} of the median case, but a low-resolution plan would keep over half its "
            "voxels (nnU-Net drops it then): one resolution"
        )
    spacing_low = [round(float(v), 4) for v in low]
    result = LowResolution(spacing_low, [round(float(n)) for n in shape], lowres, coverage)
    return result, (
        f"the patch covers {coverage:.0%} of the median case (under {LOWRES_COVERAGE:.0%}): nnU-Net adds a "
        f"low-resolution configuration, here at spacing {spacing_low} mm (median case {result.median_shape}, patch "
        f"{lowres.patch}), and a cascade. This config is the full-resolution one; plan the low-resolution one with "
        f"`unet3d-plan --spacing {' '.join(f'{v:g}' for v in spacing_low)}`. unet3d trains no cascade (a second "
        "model fed the first one's prediction)"
    )


@dataclass(frozen=True)
class Geometry:
    """Spacing, patch, network and resolution of a plan, each with its reason."""

    spacing: list[float]
    median_shape: list[float]  # at the target spacing
    network: Network
    low_resolution: LowResolution | None
    reasons: dict[str, str]


def plan_geometry(
    spacings: Sequence[Sequence[float]],
    shapes: Sequence[Sequence[int]],
    profile: Profile,
    spacing: Sequence[float] | None = None,
    classes: int = 2,
) -> Geometry:
    """From the cases' spacings and shapes (after cropping, in one axis order) to the target spacing (unless given),
    the median case at it (each case's shape rounded first, as nnU-Net resamples it), the network and whether a
    low-resolution plan is called for. `classes` counts the labels with the background, as nnU-Net's dataset.json
    does (it enters the memory estimate)."""
    spacings_array = np.asarray(spacings, dtype=float)
    reasons = {}
    if spacing is None:
        spacing, reasons["dataset.spacing"] = target_spacing(spacings_array, np.asarray(shapes, dtype=float))
    else:
        spacing, reasons["dataset.spacing"] = [float(v) for v in spacing], "given (--spacing)"
    resampled = np.round(spacings_array / np.asarray(spacing, dtype=float) * np.asarray(shapes, dtype=float))
    largest = float(np.prod(resampled, axis=1).max())
    if largest > MAX_RESAMPLED_VOXELS:
        raise PlanError(
            "--spacing",
            f"{spacing} mm resamples the largest case to {largest:.3g} voxels ({largest * 4 / 2**30:.3g} GiB as "
            "float32 per channel); choose a coarser spacing",
        )
    median = np.median(resampled, axis=0).tolist()
    network = plan_network(median, spacing, profile, len(resampled), classes)
    reasons["patch size"] = network.rule
    lowres, reasons["resolution"] = low_resolution(median, spacing, network, profile, len(resampled), classes)
    return Geometry(list(spacing), median, network, lowres, reasons)


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
