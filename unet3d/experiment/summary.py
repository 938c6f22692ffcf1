"""The cross-validation summary: one row per fold, then the mean and standard deviation.

Per fold: the best epoch (by the fold's `training.select_by`) and its validation loss and Dice in the preprocessed
space (from the training log), the training time and throughput (`samples_per_s`, the median over the fold's epochs:
training samples per second, as published images-per-second figures count them), and, once the fold's held-out cases
are predicted and scored, the mean full-volume Dice and HD95 per region in each case's original space (`dice_*`,
`hd95_*`, `mean_dice`): the numbers to report. `self_check` names the regions whose full-volume Dice on the
validation cases is more than 0.05 below the log's (see `experiment.steps.dice_gaps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from unet3d.atomic import atomic_write_text
from unet3d.config.jsonfile import read_json
from unet3d.errors import ConfigError
from unet3d.evaluation.metrics import read_metrics
from unet3d.experiment.steps import dice_gaps
from unet3d.training.history import read_log
from unet3d.training.selection import best_row, selection_for
from unet3d.workdir import CrossValidationDir, RunDir


def fold_row(fold: int, fold_dir: Path) -> dict[str, float | int | str] | None:
    """The best epoch of one fold's log, by the rule its training followed (`training.select_by`; the training loss
    without validation), or None if the fold has no epoch yet."""
    run = RunDir(fold_dir)
    log = read_log(run.log)
    if log.empty:
        return None
    rows = log.replace([np.inf, -np.inf], np.nan).to_dict("records")
    select_by = _select_by(run)
    best = best_row(rows, selection_for(select_by, "val_loss" in log)) or best_row(
        rows, selection_for(select_by, False)
    )
    row: dict[str, float | int | str] = {"fold": fold, "best_epoch": math.nan, "epochs": int(log["epoch"].max())}
    if best is not None:  # a log of only NaN losses (written before unet3d refused them) has no best epoch
        row["best_epoch"] = int(best["epoch"])
        for column in log.columns:
            if column == "val_loss" or column.startswith("val_dice"):
                row[column] = float(best[column])

    row["training_time_s"] = float(log["epoch_time"].sum())
    if "samples_per_s" in log and log["samples_per_s"].notna().any():  # logs written before unet3d 15 lack it
        row["samples_per_s"] = float(log["samples_per_s"].median())
    scored = run.scored_held_out_group()
    if scored is not None:
        row.update(full_volume_means(run.metrics(scored)))
    row["self_check"] = "; ".join(str(gap) for gap in dice_gaps(fold_dir))
    return row


def _select_by(run: RunDir) -> str:
    """The fold's `training.select_by` as its config.json records it (val_loss for a run written before it)."""
    try:
        return str((read_json(run.config).get("training") or {}).get("select_by", "val_loss"))
    except (ConfigError, AttributeError):
        return "val_loss"


def full_volume_means(metrics_csv: Path) -> dict[str, float]:
    """The mean Dice and HD95 per region over a fold's held-out cases, in their original space (if scored)."""
    values = read_metrics(metrics_csv).region_means()
    dice = [v for k, v in values.items() if k.startswith("dice_")]
    return {"mean_dice": sum(dice) / len(dice), **values} if dice else values


def summarize(work_dir: Path, folds: Sequence[int]) -> tuple[pd.DataFrame, list[int]]:
    """The summary table of the folds that have a log, plus mean and sd rows; and the folds still missing."""
    rows, missing = [], []
    for fold in folds:
        row = fold_row(fold, CrossValidationDir(work_dir).fold(fold).path)
        if row is None:
            missing.append(fold)
        else:
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(rows) > 0:
        numeric = table.drop(columns=["fold"]).select_dtypes("number")
        stats = pd.DataFrame([numeric.mean(), numeric.std(ddof=1) if len(rows) > 1 else numeric.std(ddof=0)])
        stats.insert(0, "fold", ["mean", "sd"])
        table = pd.concat([table.astype({"fold": object}), stats], ignore_index=True)
    return table, missing


def write_summary(work_dir: Path, table: pd.DataFrame) -> Path:
    """Atomically write `cv_summary.csv` in the CV work dir."""
    path = CrossValidationDir(work_dir).summary
    atomic_write_text(path, table.to_csv(index=False, float_format="%.4f"))
    return path


def format_table(table: pd.DataFrame) -> str:
    """The summary as an aligned text table for the terminal (counts as integers on the fold rows), with the
    self-check notes below it."""
    notes = [
        f"fold {fold}: self-check: {note}"
        for fold, note in zip(table["fold"], table.get("self_check", pd.Series(dtype=object)), strict=False)
        if isinstance(note, str) and note
    ]
    shown = table.drop(columns=["self_check"], errors="ignore").astype(object)
    for column in ("best_epoch", "epochs"):
        if column in shown:
            shown[column] = [
                f"{v:.0f}" if isinstance(fold, int) else f"{v:.1f}"
                for fold, v in zip(table["fold"], table[column], strict=True)
            ]
    return "\n".join([shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"), *notes])
