"""`progress.png`: the training curves of a run, redrawn after every epoch (needs matplotlib: `unet3d[plots]`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from unet3d.atomic import atomic_write

log = logging.getLogger("unet3d")
PLOT_FILENAME = "progress.png"
_warned = False


def write_progress_plot(path: Path, rows: list[dict[str, Any]]) -> bool:
    """Draw losses, Dice, learning rate and epoch time against the epoch; False (with one note) without matplotlib."""
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        if not _warned:
            log.info("progress.png is skipped: matplotlib is not installed (pip install 'unet3d[plots]')")
            _warned = True
        return False
    epochs = [row["epoch"] for row in rows]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = (
        (axes[0, 0], ("loss", "val_loss"), "loss"),
        (axes[0, 1], ("val_dice", "full_dice"), "Dice"),
        (axes[1, 0], ("lr",), "learning rate"),
        (axes[1, 1], ("epoch_time",), "epoch time (s)"),
    )
    for axis, columns, title in panels:
        for column in columns:
            points = [(e, row[column]) for e, row in zip(epochs, rows, strict=True) if row.get(column) is not None]
            points = [(e, v) for e, v in points if v == v]  # NaN: epochs without that measurement
            if points:
                axis.plot(*zip(*points, strict=True), marker="." if len(points) < 50 else None, label=column)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(loc="best", fontsize="small")
    if all(row.get("lr", 0) > 0 for row in rows):
        axes[1, 0].set_yscale("log")
    for axis in axes[1]:
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=80))
    plt.close(figure)
    return True


def fold_curves_figure(logs: dict[str, Any]) -> Any:
    """The training logs of several runs (fold name → log DataFrame) on shared axes, one colour per fold: losses
    (validation dashed), the validation Dice of each region, the full-volume Dice, and the learning rate. Needs
    matplotlib (the caller checks)."""
    from matplotlib import pyplot as plt

    columns = sorted({c for log in logs.values() for c in log.columns if c.startswith("val_dice_")})
    panels = [("loss", ("loss", "val_loss")), *((c.removeprefix("val_"), (c,)) for c in columns)]
    panels += [("full-volume Dice", ("full_dice",)), ("learning rate", ("lr",))]
    n_columns = 3
    n_rows = -(-len(panels) // n_columns)
    figure, axes = plt.subplots(n_rows, n_columns, figsize=(4 * n_columns, 2.8 * n_rows), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (title, names) in zip(axes.flat, panels, strict=False):
        for index, (fold, log) in enumerate(logs.items()):
            for name, style in zip(names, ("solid", "dashed"), strict=False):
                points = log[["epoch", name]].dropna() if name in log else None  # NaN: not measured that epoch
                if points is not None and len(points):
                    label = fold if name == names[0] else None
                    marker = "." if len(points) < len(log) else None
                    colour = colours[index % len(colours)]
                    axis.plot(points["epoch"], points[name], color=colour, linestyle=style, marker=marker, label=label)
        # region names come from the config and may hold "$": text, not math
        axis.set_title(title + (" (validation dashed)" if len(names) > 1 else ""), fontsize=9, parse_math=False)
        axis.grid(alpha=0.3)
        if title == "learning rate" and axis.lines and all((line.get_ydata() > 0).all() for line in axis.lines):
            axis.set_yscale("log")
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    for axis in axes[-1]:
        axis.set_xlabel("epoch")
    figure.tight_layout()
    return figure
