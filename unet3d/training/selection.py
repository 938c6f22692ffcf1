"""Which epoch's model is the best: one rule, `training.select_by`, that `model_best.pth`, early stopping, a
ReduceLROnPlateau scheduler (unless its `monitor` is set apart) and the cross-validation summary's best epoch follow.

- `val_loss` (the default): the lowest validation loss.
- `val_dice`: the highest mean validation Dice (preprocessed space, as the log has it).
- `ema_val_dice`: the highest exponential moving average of it (nnU-Net's pseudo-Dice: 0.9 of the last average plus
  0.1 of this epoch's), which one lucky epoch cannot win; the log gets an `ema_val_dice` column.
- `last`: the latest epoch (nnU-Net keeps its final checkpoint).

Without validation cases every rule but `last` follows the training loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

SELECT_BY = ("val_loss", "val_dice", "ema_val_dice", "last")
EMA_COLUMN = "ema_val_dice"
EMA_WEIGHT = 0.9  # of the average so far; nnU-Net's


@dataclass(frozen=True)
class Selection:
    """The rule as the loop applies it: a log column and whether higher is better."""

    select_by: str
    column: str
    mode: Literal["min", "max"]

    def badness(self, row: dict[str, Any]) -> float:
        """Lower is better, whatever the mode: what `TrainingState.best_metric` holds."""
        value = float(row[self.column])
        return value if self.mode == "min" else -value


def selection_for(select_by: str, has_validation: bool) -> Selection:
    """The column and direction of `select_by` for a run with or without validation cases."""
    if select_by == "last":
        return Selection(select_by, "epoch", "max")
    if not has_validation:
        return Selection(select_by, "loss", "min")
    if select_by == "val_loss":
        return Selection(select_by, "val_loss", "min")
    return Selection(select_by, "val_dice" if select_by == "val_dice" else EMA_COLUMN, "max")


def add_ema(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """Put this epoch's `ema_val_dice` into `row`, continuing the average of the rows before it (recomputed from
    their val_dice where they lack the column: a run that switched rules on resume)."""
    average = math.nan
    for previous in rows:
        if "val_dice" in previous:
            average = _step(average, float(previous["val_dice"]))
    row[EMA_COLUMN] = _step(average, float(row["val_dice"]))


def _step(average: float, value: float) -> float:
    return value if math.isnan(average) else EMA_WEIGHT * average + (1 - EMA_WEIGHT) * value


def best_row(rows: Sequence[dict[str, Any]], selection: Selection) -> dict[str, Any] | None:
    """The row the rule picks (the first of equals, as the loop keeps it), or None without a usable row."""
    if selection.column == EMA_COLUMN:  # one pass, as add_ema continues the average row by row
        average, rows = math.nan, [dict(row) for row in rows]
        for row in rows:
            if "val_dice" in row:
                average = row[EMA_COLUMN] = _step(average, float(row["val_dice"]))
    usable = [row for row in rows if selection.column in row and math.isfinite(float(row[selection.column]))]
    return min(usable, key=selection.badness, default=None)
