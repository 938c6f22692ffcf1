"""The data set's fingerprint: per case geometry, intensities inside the foreground and label volumes.

This is what the planner's rules read (`unet3d.planning.rules`) and what the data report compares cases on. Shapes
and spacings are given in the RAS axis order the planned config reorients to, so they compare across orientations.
Intensities are a function of the data only (no random sample): each case's foreground (label > 0) statistics are
exact, and the data set's pooled statistics weight every case equally, as nnU-Net's do (a case with a small
foreground counts as much as a large one): each case contributes its foreground at SAMPLE_SIZE evenly spaced
quantiles, and the pooled mean and sd are those of the equal-weight mixture of the cases.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from unet3d.config.cases import Case
from unet3d.data.image_io import read_aligned, read_array, read_header

SAMPLE_SIZE = 10_000  # quantiles per case and channel that the pooled percentiles are taken over
PERCENTILES = (0.5, 99.5)


@dataclass
class ChannelStats:
    """Intensity statistics of one channel: inside the foreground, and of the whole image (exact)."""

    mean: float
    std: float
    p00_5: float
    p99_5: float
    image_p00_5: float  # of all voxels: CT air is about -1000
    zero_fraction: float  # share of voxels exactly 0: a zeroed background (skull-stripped MR)


@dataclass
class CaseFingerprint:
    """One case as the planner sees it."""

    case_id: str
    shape: list[int]  # in RAS axis order
    spacing: list[float]  # mm, in RAS axis order
    orientation: str  # the file's axis codes, e.g. 'LPS'
    channels: list[ChannelStats]
    label_voxels: dict[str, int] = field(default_factory=dict)  # label value → voxels (0 omitted)
    foreground_samples: list[list[float]] = field(default_factory=list, repr=False)  # per channel quantiles; not saved
    nonzero_shape: list[int] = field(default_factory=list)  # RAS order: the box of voxels non-zero in any channel

    def shape_after_crop(self) -> list[int]:
        """The shape once cropped to the non-zero box (nnU-Net's shapes_after_crop; the whole shape if unknown)."""
        return self.nonzero_shape or self.shape

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("foreground_samples")
        return data


def _ras_order(affine: np.ndarray, values: Sequence[float]) -> list[float]:
    """Per-voxel-axis values (shape, spacing) rearranged into the order of the R, A, S world axes."""
    axes = nib.io_orientation(affine)[:, 0].astype(int)
    out = [0.0] * len(axes)
    for voxel_axis, world_axis in enumerate(axes):
        out[world_axis] = values[voxel_axis]
    return out


def _channels(case: Case) -> list[np.ndarray]:
    arrays = []
    for path in case.images:
        data = np.asarray(read_array(path), dtype=np.float32)
        arrays.extend(np.moveaxis(data, -1, 0) if data.ndim == 4 else [data])
    return arrays


def _nonzero_box(channels: Sequence[np.ndarray]) -> list[int]:
    """The extent per voxel axis of the voxels non-zero in any channel (the box nnU-Net crops every case to)."""
    mask = np.logical_or.reduce([channel != 0 for channel in channels])
    if not mask.any():
        return list(mask.shape)
    others = [tuple(o for o in range(mask.ndim) if o != axis) for axis in range(mask.ndim)]
    return [int(np.ptp(np.flatnonzero(mask.any(axis=other)))) + 1 for other in others]


def fingerprint_case(case: Case) -> CaseFingerprint:
    """Read one case (images and label) and summarize it."""
    header = read_header(case.images[0])
    spatial = 3 if len(header.shape) >= 3 else len(header.shape)
    affine = np.asarray(header.affine)
    shape = [int(s) for s in header.shape[:spatial]]
    spacing = [float(s) for s in header.spacing[:spatial]]
    if spatial == 3 and affine.shape == (4, 4):
        shape, spacing = [int(s) for s in _ras_order(affine, shape)], _ras_order(affine, spacing)
        orientation = "".join(nib.aff2axcodes(affine))
    else:
        orientation = ""
    # on the image's grid: a label map may store it in another axis order (a NIfTI mask beside a DICOM series)
    label = np.asarray(read_aligned(case.label, header)) if case.label is not None else None
    values, counts = (np.unique(label, return_counts=True)) if label is not None else ([], [])
    voxels = {str(int(v)): int(c) for v, c in zip(values, counts, strict=True) if int(v) != 0}
    stats, samples = [], []
    channels = _channels(case)
    box = _nonzero_box(channels)
    # Statistics do not depend on the voxel order: the arrays are read as stored (NIfTI: Fortran order), and a C-order
    # reshape of each copied it (0.1 s of a BraTS-size case's 0.5 s)
    inside = label > 0 if label is not None else None
    for channel in channels:
        flat = channel.ravel(order="K")
        foreground = (channel[inside] if inside is not None else flat).astype(np.float64)
        low, high = np.percentile(foreground, PERCENTILES) if foreground.size else (0.0, 0.0)
        stats.append(
            ChannelStats(
                float(foreground.mean()) if foreground.size else 0.0,
                float(foreground.std()) if foreground.size else 0.0,
                float(low),
                float(high),
                float(np.percentile(flat, PERCENTILES[0])),
                float(np.mean(flat == 0)),
            )
        )
        quantiles = np.quantile(foreground, np.linspace(0, 1, SAMPLE_SIZE)) if foreground.size else np.array([])
        samples.append(quantiles.tolist())
    if spatial == 3 and affine.shape == (4, 4):
        box = [int(n) for n in _ras_order(affine, box[:spatial])]
    return CaseFingerprint(case.case_id, shape, spacing, orientation, stats, voxels, samples, box[:spatial])


def fingerprint_cases(
    cases: Sequence[Case], n_threads: int | None = None, progress: bool = True
) -> list[CaseFingerprint]:
    """Every case's fingerprint, read in parallel threads (reading and decompressing dominate), with a progress bar."""
    threads = n_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        jobs = pool.map(fingerprint_case, cases)
        return list(tqdm(jobs, total=len(cases), desc="fingerprint", unit="case", disable=not progress))


def pooled_foreground(cases: Sequence[CaseFingerprint], channel: int) -> dict[str, float]:
    """A channel's foreground statistics over the whole data set, every case weighted equally (as nnU-Net does): the
    percentiles of the cases' quantiles pooled, and the mean and sd of the equal-weight mixture of the cases."""
    kept = [c for c in cases if c.foreground_samples[channel]]
    if not kept:
        return {"mean": 0.0, "std": 1.0, "p00_5": 0.0, "p99_5": 0.0}
    pooled = np.concatenate([np.asarray(c.foreground_samples[channel], dtype=np.float64) for c in kept])
    low, high = np.percentile(pooled, PERCENTILES)
    means = np.array([c.channels[channel].mean for c in kept])
    variances = np.array([c.channels[channel].std for c in kept]) ** 2
    mean = float(means.mean())
    std = float(np.sqrt(np.mean(variances + (means - mean) ** 2)))
    return {"mean": mean, "std": std, "p00_5": float(low), "p99_5": float(high)}


def summarize(cases: Sequence[CaseFingerprint]) -> dict[str, Any]:
    """Data-set medians and spreads: spacing and shape per axis, each label's presence and size, pooled intensities."""
    spacings = np.array([c.spacing for c in cases], dtype=np.float64)
    shapes = np.array([c.shape for c in cases], dtype=np.float64)
    labels = sorted({int(v) for c in cases for v in c.label_voxels})
    return {
        "n_cases": len(cases),
        "spacing_median": np.median(spacings, axis=0).tolist(),
        "spacing_min": spacings.min(axis=0).tolist(),
        "spacing_max": spacings.max(axis=0).tolist(),
        "shape_median": np.median(shapes, axis=0).tolist(),
        "shape_min": shapes.min(axis=0).astype(int).tolist(),
        "shape_max": shapes.max(axis=0).astype(int).tolist(),
        "labels": {
            str(v): {
                "cases": sum(str(v) in c.label_voxels for c in cases),
                "median_voxels": float(np.median([c.label_voxels.get(str(v), 0) for c in cases])),
            }
            for v in labels
        },
        "empty_label_cases": [c.case_id for c in cases if not c.label_voxels],
        "foreground_intensities": [pooled_foreground(cases, i) for i in range(len(cases[0].channels))],
    }
