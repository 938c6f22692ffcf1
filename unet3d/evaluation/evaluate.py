"""The library entry point behind `unet3d-evaluate`: score label maps made anywhere against the ground truth.

Predictions are `<case_id>.nii.gz` (or .png, .mhd, ...) label maps in each case's original space. The regions come
from the config's `labels` and `setup_label_hierarchy`; the ground truth from the config's `<group>_filenames`, or
from a folder holding `<case_id>.<any image ending>` for every prediction.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from unet3d.config.cases import Case, cases_from_folders, label_map_files
from unet3d.config.load import load_config
from unet3d.config.schema import Config
from unet3d.errors import ConfigError
from unet3d.evaluation.metrics import METRICS_FILENAME, evaluate_directory
from unet3d.output_guard import Inputs, check_outputs


def config_cases(config: Config, group: str) -> list[Case]:
    """The cases of `<group>_filenames`; a ConfigError naming the groups the config has, and the way on, otherwise."""
    try:
        return config.cases_of(group)
    except ConfigError as error:
        raise ConfigError(f"{error}; choose one with --group, or give --ground_truth") from None


def evaluate(
    predictions: str | Path,
    config_filename: str | Path,
    group: str = "validation",
    ground_truth: str | Path | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Dice and HD95 per region of every case's label map in `predictions`, against `<group>_filenames` of the config
    (or `ground_truth/<case_id>.*`); writes `output` (default `<predictions>/metrics.csv`) and returns the per-case
    table. Raises UserError subclasses for bad input. `output` never replaces an input (the config, its cases, the
    predictions), and an existing file other than an earlier metrics table only with `overwrite`."""
    predictions = Path(predictions)
    config = load_config(config_filename)
    if not config.labels:
        raise ConfigError("dataset.labels: required to know which regions to score, e.g. [1] or [2, 1, 4]")
    regions = config.regions
    cases = cases_from_folders(predictions, Path(ground_truth)) if ground_truth else config_cases(config, group)
    target = Path(output) if output is not None else predictions / METRICS_FILENAME
    source = f"the config {config_filename}"
    inputs = Inputs().add(config_filename, source).add_config(config, source)
    inputs.add_cases(cases, "the cases scored")
    for path in label_map_files(predictions) if predictions.is_dir() else []:
        inputs.add(path, "a prediction being scored")
    check_outputs({target: "the metrics table"}, inputs, replace=overwrite, made_here=_metrics_table)
    return evaluate_directory(predictions, cases, regions, config.region_names, output=target)


def _metrics_table(path: Path) -> bool:
    """Whether `path` is a metrics table unet3d wrote (its header starts with the case id column)."""
    try:
        with open(path) as table:
            return table.readline().startswith("case_id,")
    except (OSError, UnicodeDecodeError):
        return False
