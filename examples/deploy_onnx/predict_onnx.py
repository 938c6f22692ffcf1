"""A label map from an ONNX model exported by `unet3d-export --format onnx`, with onnxruntime, nibabel and numpy only.

    python examples/deploy_onnx/predict_onnx.py --model model.onnx --images flair.nii.gz t1.nii.gz ... \
        --output label_map.nii.gz

Everything it does is read from the model's sidecar (`model.onnx.json`): the channels' order, the reorientation,
the voxel spacing, the crop to the foreground, the resize or pad, the normalization of each channel, the inferer
(whole volume or a Gaussian-weighted sliding window), the activation and how channels become label values (nested
regions stay nested). The probabilities go back to the first image's grid (the spatial steps undone in reverse, with
linear interpolation) before they are decoded, as `unet3d-predict` does, so the label map lies on that image's grid.
Neither torch nor unet3d is imported: copy this file next to the model and its sidecar, and it runs.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import onnxruntime

AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
Volume = np.ndarray  # (channels, *spatial), float32


class Grid:
    """A volume's voxel grid in world space: its spatial shape and 4x4 affine."""

    def __init__(self, shape: Sequence[int], affine: np.ndarray) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.affine = np.asarray(affine, dtype=np.float64)


# --- loading ---


def load_channels(paths: Sequence[Path]) -> tuple[Volume, Grid]:
    """Every image's channels stacked in order (a 4D file gives its channels), on the first image's grid."""
    channels, grid = [], None
    for path in paths:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
        if grid is None:
            grid = Grid(data.shape[:3], image.affine)
        elif data.shape[:3] != grid.shape or not np.allclose(image.affine, grid.affine, atol=1e-4):
            raise SystemExit(f"{path}: not on the grid of {paths[0]} ({data.shape[:3]} vs {grid.shape})")
        channels.extend(np.moveaxis(data, -1, 0) if data.ndim == 4 else [data])
    assert grid is not None
    return np.stack(channels).astype(np.float32), grid


# --- spatial steps: each returns the new volume and the step's inverse ------------------------------------------------

Inverse = Callable[[Volume], Volume]


def reorient(volume: Volume, grid: Grid, codes: str) -> tuple[Volume, Grid, Inverse]:
    """Flip and permute the axes so that they run along `codes` (e.g. 'RAS'), as nibabel orients them."""
    current = nib.orientations.io_orientation(grid.affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(codes, AXIS_LABELS))
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(codes, AXIS_LABELS), current)
    out = np.stack([nib.orientations.apply_orientation(c, transform) for c in volume])
    affine = grid.affine @ nib.orientations.inv_ornt_aff(transform, grid.shape)
    return (
        out,
        Grid(out.shape[1:], affine),
        lambda v: np.stack([nib.orientations.apply_orientation(c, back) for c in v]),
    )


def _linear_axis(volume: Volume, axis: int, positions: np.ndarray) -> Volume:
    """Linear interpolation along one axis at fractional voxel positions; neighbours outside the volume are 0."""
    size = volume.shape[axis]
    low = np.floor(positions).astype(np.int64)
    weight = (positions - low).astype(np.float32)
    shape = [1] * volume.ndim
    shape[axis] = len(positions)
    weight = weight.reshape(shape)

    def take(index: np.ndarray) -> Volume:
        inside = ((index >= 0) & (index < size)).reshape(shape)
        return np.take(volume, np.clip(index, 0, size - 1), axis=axis) * inside

    return take(low) * (1 - weight) + take(low + 1) * weight


def resample_linear(volume: Volume, shape: Sequence[int], positions: Sequence[np.ndarray]) -> Volume:
    """Trilinear resampling, one axis after another (the weights are separable), at per-axis voxel positions."""
    for axis, where in enumerate(positions):
        volume = _linear_axis(volume, axis + 1, where)
    assert volume.shape[1:] == tuple(shape)
    return volume


def respace(volume: Volume, grid: Grid, spacing: Sequence[float]) -> tuple[Volume, Grid, Inverse]:
    """A grid of `spacing` along the volume's own axes, sharing its first voxel centre (MONAI's Spacing): each
    axis keeps round((n - 1) x old / new) + 1 voxels."""
    old = np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0))
    ratio = np.asarray(spacing, dtype=np.float64) / old
    shape = [int(np.round((n - 1) / r + 1)) for n, r in zip(grid.shape, ratio, strict=True)]
    out = resample_linear(volume, shape, [np.arange(m) * r for m, r in zip(shape, ratio, strict=True)])
    affine = grid.affine.copy()
    affine[:3, :3] = grid.affine[:3, :3] @ np.diag(ratio)
    original = grid.shape
    positions = [np.arange(n) / r for n, r in zip(original, ratio, strict=True)]
    return out, Grid(shape, affine), lambda v: resample_linear(v, original, positions)


def crop_foreground(volume: Volume, percentile: float, tolerance: float) -> tuple[Volume, Inverse]:
    """The bounding box of the voxels above their channel's `percentile` quantile by more than `tolerance` of the
    channel's range, in any channel (the whole volume when none is); undone by padding with zeros."""
    flat = volume.reshape(len(volume), -1)
    thresholds = np.quantile(flat, percentile, axis=1) + tolerance * (flat.max(1) - flat.min(1))
    mask = (volume > thresholds.reshape(-1, *([1] * (volume.ndim - 1)))).any(0)
    if not mask.any():
        return volume, lambda v: v
    box = [np.flatnonzero(mask.any(tuple(a for a in range(mask.ndim) if a != axis))) for axis in range(mask.ndim)]
    starts, ends = [int(b[0]) for b in box], [int(b[-1]) + 1 for b in box]
    shape = volume.shape[1:]

    def pad_back(v: Volume) -> Volume:
        out = np.zeros((len(v), *shape), dtype=v.dtype)
        out[(slice(None), *(slice(s, e) for s, e in zip(starts, ends, strict=True)))] = v
        return out

    return volume[(slice(None), *(slice(s, e) for s, e in zip(starts, ends, strict=True)))], pad_back


def resize(volume: Volume, shape: Sequence[int]) -> tuple[Volume, Inverse]:
    """Trilinear resize to `shape` with voxel centres aligned at half-voxel offsets (torch's interpolate,
    align_corners false); undone by resizing back."""
    original = volume.shape[1:]

    def positions(source: Sequence[int], target: Sequence[int]) -> list[np.ndarray]:
        return [np.maximum((np.arange(t) + 0.5) * s / t - 0.5, 0) for s, t in zip(source, target, strict=True)]

    def linear(v: Volume, source: Sequence[int], target: Sequence[int]) -> Volume:
        # at the last voxel, the interpolation clamps to the edge rather than fading to 0
        for axis, where in enumerate(positions(source, target)):
            low = np.minimum(np.floor(where).astype(np.int64), source[axis] - 1)
            high = np.minimum(low + 1, source[axis] - 1)
            weight = (where - low).astype(np.float32).reshape([-1 if a == axis + 1 else 1 for a in range(v.ndim)])
            v = np.take(v, low, axis=axis + 1) * (1 - weight) + np.take(v, high, axis=axis + 1) * weight
        return v

    return linear(volume, original, shape), lambda v: linear(v, shape, original)


def pad_or_crop(volume: Volume, shape: Sequence[int]) -> tuple[Volume, Inverse]:
    """Centre padding with zeros (half before, rounded down) or centre cropping to `shape`; undone in reverse."""
    original = volume.shape[1:]
    pads = [(max(t - n, 0) // 2, max(t - n, 0) - max(t - n, 0) // 2) for n, t in zip(original, shape, strict=True)]
    padded = np.pad(volume, [(0, 0), *pads])
    starts = [max(n - t, 0) // 2 for n, t in zip(padded.shape[1:], shape, strict=True)]
    window = tuple(slice(s, s + t) for s, t in zip(starts, shape, strict=True))
    out = padded[(slice(None), *window)]

    def back(v: Volume) -> Volume:
        full = np.zeros((len(v), *padded.shape[1:]), dtype=v.dtype)
        full[(slice(None), *window)] = v
        inner = tuple(slice(before, before + n) for (before, _), n in zip(pads, original, strict=True))
        return full[(slice(None), *inner)]

    return out, back


# --- intensities ---


def _zscore(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    chosen = values if mask is None else values[mask]
    if chosen.size == 0:
        return values
    std = float(chosen.std())
    std = std if std > 0 else 1.0
    if mask is None:
        return (values - chosen.mean()) / std
    out = np.zeros_like(values)
    out[mask] = (chosen - chosen.mean()) / std
    return out


def normalize(volume: Volume, schemes: Sequence[dict[str, Any]]) -> Volume:
    """Each channel by its scheme (the sidecar's `channel_schemes`)."""
    if schemes and schemes[0].get("joint"):
        nonzero = schemes[0].get("nonzero", False)
        return _zscore(volume, volume != 0 if nonzero else None).astype(np.float32)
    out = []
    for channel, scheme in zip(volume, schemes, strict=True):
        kind = scheme["scheme"]
        if kind == "ct":
            clipped = np.clip(channel, scheme["lower"], scheme["upper"])
            out.append((clipped - scheme["mean"]) / max(scheme["std"], 1e-8))
        elif kind == "zscore":
            out.append(_zscore(channel, channel != 0 if scheme.get("nonzero") else None))
        elif kind == "rescale_to_0_1":
            out.append((channel - channel.min()) / max(float(channel.max() - channel.min()), 1e-8))
        elif kind == "rgb_to_0_1":
            out.append(channel / 255.0)
        elif kind == "none":
            out.append(channel)
        else:
            raise SystemExit(f"the sidecar's normalization scheme {kind!r} is not one this script knows")
    return np.stack(out).astype(np.float32)


# --- the network ---


def gaussian_weights(size: Sequence[int], sigma_scale: float) -> np.ndarray:
    """MONAI's Gaussian importance map for a window of `size`."""
    weights = np.ones((), dtype=np.float32)
    for n in size:
        x = np.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=np.float32)
        axis = np.exp(x**2 / (-2 * (n * sigma_scale) ** 2)).astype(np.float32)
        weights = weights[..., None] * axis
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """MONAI's window positions along one axis (the last window ends at the volume's edge)."""
    step = window if window == size else max(int(window * (1 - overlap)), 1)
    count = next((d + 1 for d in range(math.ceil(size / step)) if d * step + window >= size), 1)
    return [i * step - max(i * step + window - size, 0) for i in range(count)]


def sliding_window(volume: Volume, run: Callable[[Volume], Volume], inferer: dict[str, Any]) -> Volume:
    """The weighted mean of the network's outputs over overlapping windows (MONAI's sliding window)."""
    roi = inferer["roi_size"]
    original = volume.shape[1:]
    pads = [(max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(original, roi, strict=True)]
    volume = np.pad(volume, [(0, 0), *pads])
    if inferer.get("mode", "gaussian") == "gaussian":
        weights = gaussian_weights(roi, inferer.get("sigma_scale", 0.125))
    else:
        weights = np.ones(roi, dtype=np.float32)
    total, count = None, np.zeros(volume.shape[1:], dtype=np.float32)
    starts = [window_starts(n, r, inferer["overlap"]) for n, r in zip(volume.shape[1:], roi, strict=True)]
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(roi)):
        window = tuple(slice(int(s), int(s) + r) for s, r in zip(corner, roi, strict=True))
        output = run(volume[(slice(None), *window)])
        if total is None:
            total = np.zeros((len(output), *volume.shape[1:]), dtype=np.float32)
        total[(slice(None), *window)] += output * weights
        count[window] += weights
    assert total is not None
    inner = tuple(slice(before, before + n) for (before, _), n in zip(pads, original, strict=True))
    return (total / count)[(slice(None), *inner)]


def activate(logits: Volume, activation: str) -> Volume:
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(0, keepdims=True))
        return shifted / shifted.sum(0, keepdims=True)
    return logits


# --- decoding ---


def decode(probabilities: Volume, output: dict[str, Any], threshold: float = 0.5) -> np.ndarray:
    """Channels to label values, as the sidecar's `output.decoding` says: softmax, the most probable channel;
    sigmoid, from the outside in, the most probable region above the threshold among those directly inside the
    region chosen so far (ties: the first channel), so the regions stay nested."""
    channels = output["channels"]
    values = np.array([c["writes"] for c in channels])
    if output["activation"] == "softmax":
        return values[np.argmax(probabilities, axis=0)]
    parents = [c.get("inside_channel") for c in channels]
    chosen = np.full(probabilities.shape[1:], -1)  # -1: background, else a channel index
    level = [i for i, parent in enumerate(parents) if parent is None]
    while level:
        candidates = probabilities[level]
        required = np.array([-1 if parents[i] is None else parents[i] for i in level])
        eligible = (candidates > threshold) & (chosen[None] == required.reshape(-1, *([1] * chosen.ndim)))
        winner = np.asarray(level)[np.argmax(np.where(eligible, candidates, -1.0), axis=0)]
        chosen = np.where(eligible.any(0), winner, chosen)
        level = [i for i, parent in enumerate(parents) if parent is not None and parent in level]
    return np.where(chosen >= 0, values[np.maximum(chosen, 0)], 0)


# --- the whole ---


def predict(model: Path, images: Sequence[Path], sidecar: dict[str, Any]) -> tuple[np.ndarray, Grid]:
    """The label map of one case, on the first image's grid."""
    pre = sidecar["preprocessing"]
    if pre.get("channel_schemes") is None:
        raise SystemExit(f"the sidecar describes no per-channel normalization for {pre['normalization']['name']}")
    volume, grid = load_channels(images)
    if len(volume) != sidecar["input"]["channels"]:
        raise SystemExit(f"{len(volume)} channels given; the model takes {sidecar['input']['channels']}")
    original = grid
    undo: list[Inverse] = []
    if pre.get("orientation"):
        volume, grid, back = reorient(volume, grid, pre["orientation"])
        undo.append(back)
    if pre.get("spacing_mm"):
        volume, grid, back = respace(volume, grid, pre["spacing_mm"])
        undo.append(back)
    if pre.get("crop_foreground"):
        volume, back = crop_foreground(volume, pre["foreground_percentile"], pre["foreground_tolerance"])
        undo.append(back)
    shape = pre.get("desired_shape")
    if shape and pre.get("random_crop"):
        volume, back = pad_or_crop(volume, [max(n, t) for n, t in zip(volume.shape[1:], shape, strict=True)])
        undo.append(back)
    elif shape and pre.get("resample_to_desired_shape"):
        volume, back = resize(volume, shape)
        undo.append(back)
    elif shape:
        volume, back = pad_or_crop(volume, shape)
        undo.append(back)
    volume = normalize(volume, pre["channel_schemes"])
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def run(window: Volume) -> Volume:
        return session.run(None, {"image": window[None].astype(np.float32)})[0][0]

    inferer = sidecar["inferer"]
    if inferer["name"] == "sliding_window":
        logits = sliding_window(volume, run, inferer)
    elif inferer["name"] == "whole_volume":
        logits = run(volume)
    else:
        raise SystemExit(f"the sidecar's inferer {inferer['name']!r} is not one this script knows")
    probabilities = activate(logits, sidecar["output"]["activation"]).astype(np.float32)
    for back in reversed(undo):
        probabilities = back(probabilities)
    if sidecar["output"]["activation"] == "softmax":  # what the crop and resampling left out is background
        probabilities[0] += np.clip(1.0 - probabilities.sum(0), 0.0, None)
    return decode(probabilities, sidecar["output"]), original


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the .onnx file; its sidecar is <model>.json")
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="the case's images, in channel order")
    parser.add_argument("--output", type=Path, required=True, help="the label map to write (.nii.gz)")
    args = parser.parse_args(argv)
    sidecar = json.loads(Path(f"{args.model}.json").read_text())
    label, grid = predict(args.model, args.images, sidecar)
    values = [c["writes"] for c in sidecar["output"]["channels"]]
    dtype = np.uint8 if 0 <= min(values) and max(values) <= 255 else np.int16
    image = nib.Nifti1Image(label.astype(dtype), grid.affine)
    image.set_qform(grid.affine, code=1)
    image.set_sform(grid.affine, code=1)
    nib.save(image, str(args.output))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
