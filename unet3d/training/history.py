"""The per-epoch training log (`training_log.csv`).

The rows live in the checkpoint, and the CSV is rewritten from them after each checkpoint is safely on disk. So the
log can never run ahead of or behind the weights: after a crash, resuming rewrites it from the last checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from unet3d.atomic import atomic_write_text
from unet3d.errors import DataError

LOG_FILENAME = "training_log.csv"
COLUMNS = ("epoch", "loss", "lr", "val_loss", "val_dice", "epoch_time", "train_time", "samples_per_s")


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically (re)write the CSV log from its rows; standard columns first, then any extra ones."""
    frame = pd.DataFrame(rows)
    ordered = [c for c in COLUMNS if c in frame.columns] + [c for c in frame.columns if c not in COLUMNS]
    atomic_write_text(
        path, frame[ordered].to_csv(index=False, float_format="%.6g") if rows else ",".join(COLUMNS) + "\n"
    )


def read_log(path: Path) -> pd.DataFrame:
    """The log as a DataFrame (empty if the file does not exist); a DataError naming the file when it cannot be read
    or has no whole-number epoch on every row (edited by hand: the next resume rewrites it from the checkpoint)."""
    if not Path(path).exists():
        return pd.DataFrame(columns=list(COLUMNS))
    fix = "rerun unet3d-train on the work dir: the log is rewritten from model.pth"
    try:
        frame = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, OSError) as error:  # pandas' parser errors are ValueErrors
        raise DataError(f"{path}: cannot read the training log ({error}); {fix}") from None
    epochs = pd.to_numeric(frame["epoch"], errors="coerce") if "epoch" in frame else None
    if epochs is None or epochs.isna().any() or (epochs % 1 != 0).any():
        problem = "no 'epoch' column" if epochs is None else "an epoch that is not a whole number"
        raise DataError(f"{path}: {problem}; {fix}")
    return frame
