"""The per-epoch training log (`training_log.csv`).

The rows live in the checkpoint, and the CSV is rewritten from them after each checkpoint is safely on disk. So the
log can never run ahead of or behind the weights: after a crash, resuming rewrites it from the last checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from unet3d.atomic import atomic_write_text

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
    """The log as a DataFrame (empty if the file does not exist)."""
    return pd.read_csv(path) if Path(path).exists() else pd.DataFrame(columns=list(COLUMNS))
