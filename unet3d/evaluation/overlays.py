"""Overlay pictures of a held-out case: the image in grey with the ground truth and the prediction outlined.

A volume is shown as three orthogonal slices through the point of largest disagreement (the slice along each axis
holding the most voxels where truth and prediction differ; where they agree everywhere, through the truth's centre),
drawn with the voxel spacing as aspect ratio, in the case's original space. A 2D picture is shown as itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# One colour per label value (in sorted order, cycled); the truth is outlined solid, the prediction dashed.
PALETTE = ("#00c853", "#2962ff", "#ff6d00", "#d500f9", "#00b8d4", "#ffd600", "#c51162", "#64dd17")


def value_colours(*label_maps: np.ndarray) -> dict[int, str]:
    """A colour for each non-zero label value of the maps, the same in every panel of a figure."""
    values = sorted({int(v) for labels in label_maps for v in np.unique(labels) if v != 0})
    return {value: PALETTE[index % len(PALETTE)] for index, value in enumerate(values)}


def disagreement_point(truth: np.ndarray, prediction: np.ndarray) -> tuple[int, ...]:
    """Per axis, the slice index with the most voxels where truth and prediction differ; the truth's centre (or the
    volume's) where they agree everywhere."""
    differ = truth != prediction
    if differ.any():
        return tuple(
            int(np.argmax(differ.sum(axis=tuple(a for a in range(differ.ndim) if a != axis))))
            for axis in range(differ.ndim)
        )
    where = np.argwhere(truth > 0)
    centre = where.mean(axis=0) if len(where) else (np.array(truth.shape) - 1) / 2
    return tuple(int(np.rint(c)) for c in centre)


def _panel(
    axis: Any,
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    aspect: float,
    title: str,
    colours: dict[int, str],
) -> None:
    """One slice: grey image (1-99th percentile window); per label value, its truth outline solid and its prediction
    outline dashed, in the value's colour."""
    low, high = np.percentile(image, (1, 99)) if image.size else (0, 1)
    axis.imshow(image.T, cmap="gray", origin="lower", vmin=low, vmax=max(high, low + 1e-6), aspect=aspect)
    for labels, style in ((truth, "solid"), (prediction, "dashed")):
        for value, colour in colours.items():
            if (labels == value).any() and min(labels.shape) > 1:
                axis.contour((labels == value).T, levels=[0.5], colors=colour, linewidths=1.0, linestyles=style)
    axis.set_title(title, fontsize=8, parse_math=False)
    axis.set_xticks([])
    axis.set_yticks([])


def _legend(figure: Any, colours: dict[int, str]) -> None:
    """Which colour is which label value, and which line is the truth."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour, label=f"label {value}") for value, colour in colours.items()]
    handles += [
        Line2D([], [], color="#444", linestyle="solid", label="truth"),
        Line2D([], [], color="#444", linestyle="dashed", label="prediction"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)


def overlay_figure(
    image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, spacing: tuple[float, ...], title: str
) -> Any:
    """A matplotlib figure of the case (image: spatial axes, first channel only): each label value in its own colour
    (legend below), the truth solid and the prediction dashed."""
    from matplotlib import pyplot as plt

    colours = value_colours(truth, prediction)
    if image.ndim == 2:
        figure, axis = plt.subplots(1, 1, figsize=(3.2, 3.6))
        _panel(axis, image, truth, prediction, 1.0, "picture", colours)
    else:
        point = disagreement_point(truth, prediction)
        figure, axes = plt.subplots(1, 3, figsize=(9, 3.6))
        names = ("x", "y", "z")
        for axis_index, axis in enumerate(axes):
            keep = [a for a in range(3) if a != axis_index]
            index = [slice(None)] * 3
            index[axis_index] = point[axis_index]
            slab = tuple(index)
            aspect = spacing[keep[1]] / spacing[keep[0]] if len(spacing) == 3 else 1.0
            title_of_panel = f"{names[axis_index]} = {point[axis_index]}"
            _panel(axis, image[slab], truth[slab], prediction[slab], aspect, title_of_panel, colours)
    figure.suptitle(title, fontsize=9, parse_math=False)  # a case id may hold "$": text, not math
    _legend(figure, colours)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return figure
