"""Full-volume segmentation metrics: Dice and HD95 per region, per case, in each case's original space.

A region is a set of label values (one output channel: see `unet3d.config.regions`), named by its values
joined with '+' (BraTS: '2+1+4' whole tumour, '1+4' tumour core, '4' enhancing), as in the training log's
`val_dice_<region>` columns.

Conventions for empty masks (a region absent from the prediction, the ground truth, or both):

- Dice: both empty → 1.0 (a correct "nothing here"); exactly one empty → 0.0.
- HD95: both empty → 0.0; exactly one empty → NaN (a distance to nothing is undefined). NaN values are left out of
  the summary statistics and counted in its `n_nan` row.

HD95 is MONAI's: the larger of the two directed 95th-percentile distances between the masks' surface voxels, in
millimetres (voxel spacing from the ground truth's header, so anisotropic voxels are measured correctly).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from unet3d.atomic import atomic_write_text
from unet3d.config.cases import Case, find_label_map
from unet3d.data.image_io import Header, aligned_to, read_array, read_header
from unet3d.data.labels import encode
from unet3d.errors import DataError
from unet3d.formats import AFFINE_TOLERANCE

METRICS_FILENAME = "metrics.csv"
SUMMARY_ROWS = ("mean", "median", "sd", "n_nan")
MAX_NAMED = 5


@contextmanager
def _quiet_monai() -> Iterator[None]:
    """Hide MONAI's deprecation notices from its surface-distance helpers (noise for a user)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def _label_tensor(array: np.ndarray) -> torch.Tensor:
    """An integer label map as a (1, *spatial) int64 tensor (float maps are rounded to the nearest value)."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer):
        array = np.rint(array)
    return torch.from_numpy(array.astype(np.int64, copy=False))[None]


def case_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    groups: Sequence[tuple[int, ...]],
    names: Sequence[str],
    spacing: Sequence[float],
    hd95: bool = True,
) -> dict[str, float]:
    """Dice and HD95 (mm) of each region between two label maps of the same shape and space (`hd95=False`: Dice
    only, much cheaper: used for the full-volume validation during training).

    Region i is the voxels whose value is in `groups[i]`; `spacing` is the voxel size in mm per axis. Returns
    {'dice_<name>': ..., 'hd95_<name>': ...}, Dice columns first, in region order. Empty masks: Dice is 1.0 when
    both are empty and 0.0 when one is; HD95 is 0.0 when both are empty and NaN (undefined) when exactly one is.
    """
    if len(groups) != len(names):
        raise ValueError(f"{len(groups)} region groups but {len(names)} names")
    if np.shape(prediction) != np.shape(truth):
        raise ValueError(f"prediction shape {np.shape(prediction)} differs from the truth shape {np.shape(truth)}")
    if len(spacing) != np.ndim(truth):
        raise ValueError(f"spacing {tuple(spacing)} does not have one value per axis of shape {np.shape(truth)}")
    groups = [tuple(group) for group in groups]
    # (1, C, *spatial) boolean masks: a quarter of float32's memory, and MONAI counts their voxels exactly
    predicted = encode(_label_tensor(prediction), groups, background=False).bool()[None]
    true = encode(_label_tensor(truth), groups, background=False).bool()[None]
    dice = compute_dice(predicted, true, include_background=True, ignore_empty=False)[0]
    result = {f"dice_{name}": float(dice[i]) for i, name in enumerate(names)}
    if not hd95:
        return result
    predicted_any = predicted.flatten(2).any(-1)[0]
    true_any = true.flatten(2).any(-1)[0]
    distance = torch.where(predicted_any | true_any, torch.nan, 0.0).to(torch.float64)
    both = torch.nonzero(predicted_any & true_any).flatten()
    if len(both) > 0:
        with _quiet_monai():
            distances = compute_hausdorff_distance(
                predicted[:, both],
                true[:, both],
                include_background=True,
                percentile=95,
                spacing=[float(s) for s in spacing],
            )
        distance[both] = distances[0].to(torch.float64)
    result.update({f"hd95_{name}": float(distance[i]) for i, name in enumerate(names)})
    return result


def _squeezed_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """A shape without trailing singleton axes beyond the third ((X, Y, Z, 1) → (X, Y, Z))."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _load(path: Path, role: str) -> Header:
    if not Path(path).is_file():
        raise DataError(f"{path}: {role} file does not exist")
    return read_header(path)


def _check_pair(prediction_path: Path, truth_path: Path) -> None:
    """Same grid in both files' headers (shape and affine within 1e-3, in any axis order); a DataError naming both
    files otherwise."""
    prediction, truth = _load(prediction_path, "prediction"), _load(truth_path, "ground truth")
    if len(_squeezed_shape(truth.shape)) == 3 and aligned_to(truth, prediction) is not None:
        return  # the same grid, possibly stored in another axis order
    prediction_shape, truth_shape = _squeezed_shape(prediction.shape), _squeezed_shape(truth.shape)
    if prediction_shape != truth_shape:
        raise DataError(
            f"{prediction_path}: shape {prediction_shape} differs from the ground truth {truth_path} "
            f"shape {truth_shape}"
        )
    size = min(len(prediction.affine), len(truth.affine))
    difference = float(np.abs(prediction.affine[:size, :size] - truth.affine[:size, :size]).max())
    if difference > AFFINE_TOLERANCE:
        raise DataError(
            f"{prediction_path}: affine differs from the ground truth {truth_path} by up to {difference:.4g} "
            f"(tolerance {AFFINE_TOLERANCE}); the prediction must be in the ground truth's space"
        )


def read_labels(path: Path, role: str = "label map", on: Header | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """A label map's data (without trailing singleton axes) and its voxel spacing; with `on`, reordered onto that
    grid when it stores it in another axis order."""
    header = _load(path, role)
    shape = _squeezed_shape(header.shape)
    try:
        data = read_array(path).reshape(shape)
        transform = aligned_to(header, on) if on is not None and len(shape) == 3 else None
        if transform is not None:
            data = np.asarray(nib.orientations.apply_orientation(data, transform))
    except DataError:
        raise
    except Exception as error:  # truncated or corrupt data after a readable header
        raise DataError(f"{path}: cannot read {role} data ({error})") from None
    return data, header.spacing[: len(shape)]


def _pair_metrics(
    case_id: str, prediction_path: Path, truth_path: Path, groups: Sequence[tuple[int, ...]], names: Sequence[str]
) -> dict[str, str | float]:
    prediction, spacing = read_labels(prediction_path, "prediction")
    truth, _ = read_labels(truth_path, "ground truth", on=_load(prediction_path, "prediction"))
    return {"case_id": case_id, **case_metrics(prediction, truth, groups, names, spacing)}


def evaluate_cases(
    pairs: Sequence[tuple[str, Path, Path]],
    groups: Sequence[tuple[int, ...]],
    names: Sequence[str],
    n_threads: int = 2,
) -> pd.DataFrame:
    """Metrics of (case_id, prediction file, ground-truth file) pairs: one row per case, in the given order.

    Every pair's headers are checked first (one grid: shapes and affines equal within 1e-3, in any axis order), so a
    mismatch stops the run before any metric is computed. The ground truth is read onto the prediction's grid, whose
    header gives the spacing. Columns: case_id, dice_<name>..., hd95_<name>...
    """
    pairs = [(case_id, Path(prediction), Path(truth)) for case_id, prediction, truth in pairs]
    for _, prediction, truth in pairs:
        _check_pair(prediction, truth)
    columns = ["case_id", *(f"dice_{n}" for n in names), *(f"hd95_{n}" for n in names)]
    with _quiet_monai():
        if n_threads <= 1 or len(pairs) <= 1:
            rows = [_pair_metrics(*pair, groups, names) for pair in pairs]
        else:
            with ThreadPoolExecutor(max_workers=n_threads) as executor:
                futures = [executor.submit(_pair_metrics, *pair, groups, names) for pair in pairs]
                try:
                    rows = [future.result() for future in futures]
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    return pd.DataFrame(rows, columns=columns)


def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows 'mean', 'median', 'sd' and 'n_nan' (in `case_id`) over the numeric columns, skipping NaN values.

    sd uses ddof=1, and is 0 for a column with a single value; n_nan counts the NaN values (undefined HD95).
    """
    numeric = table.select_dtypes("number")
    counts = numeric.notna().sum()
    sd = numeric.std(ddof=1)
    sd[counts == 1] = 0.0
    stats = pd.DataFrame(
        [numeric.mean(), numeric.median(), sd, numeric.isna().sum().astype(float)], columns=numeric.columns
    )
    stats.insert(0, "case_id", list(SUMMARY_ROWS))
    return stats.reset_index(drop=True)


def write_metrics(path: Path, table: pd.DataFrame) -> Path:
    """Atomically write the per-case rows followed by the summary rows as CSV (floats as %.6g, NaN as 'nan')."""
    path = Path(path)
    summary = summary_rows(table)
    combined = summary if table.empty else pd.concat([table.astype({"case_id": object}), summary], ignore_index=True)
    atomic_write_text(path, combined.to_csv(index=False, float_format="%.6g", na_rep="nan"))
    return path


@dataclass(frozen=True)
class MetricsTable:
    """A metrics.csv read back: the per-case rows, and the means over the cases (NaN skipped) per metric."""

    cases: pd.DataFrame
    means: dict[str, float]

    def region_means(self) -> dict[str, float]:
        """The mean Dice and HD95 per region (`dice_<region>`, `hd95_<region>`)."""
        return {k: v for k, v in self.means.items() if k.startswith(("dice_", "hd95_"))}


def read_metrics(path: Path) -> MetricsTable:
    """Read a metrics.csv written by `write_metrics` (empty when the file does not exist)."""
    if not Path(path).exists():
        return MetricsTable(pd.DataFrame(columns=["case_id"]), {})
    table = pd.read_csv(path, dtype={"case_id": str})
    summary = table["case_id"].isin(SUMMARY_ROWS)
    mean = table[table["case_id"] == "mean"].drop(columns="case_id")
    means = {c: float(mean[c].iloc[0]) for c in mean.columns} if not mean.empty else {}
    return MetricsTable(table[~summary].reset_index(drop=True), means)


def _named(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:MAX_NAMED])
    return shown + (f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else "")


def evaluate_directory(
    predictions_dir: Path,
    cases: Sequence[Case],
    groups: Sequence[tuple[int, ...]],
    names: Sequence[str],
    output: Path | None = None,
    n_threads: int = 2,
) -> pd.DataFrame:
    """Score `<predictions_dir>/<case_id>.nii.gz` (or .png, .mhd, ...) against each case's label; write
    metrics.csv; return the table.

    Every case needs a prediction and a ground-truth label file: otherwise one DataError names the cases (up to
    five). The CSV goes to `output`, by default `<predictions_dir>/metrics.csv` (see `write_metrics`).
    """
    predictions_dir = Path(predictions_dir)
    if not predictions_dir.is_dir():
        raise DataError(f"{predictions_dir}: predictions folder does not exist")
    if not cases:
        raise DataError(f"{predictions_dir}: no cases to evaluate")
    pairs, no_prediction, no_label = [], [], []
    for case in cases:
        prediction = find_label_map(predictions_dir, case.case_id)
        if prediction is None:
            no_prediction.append(case.case_id)
        if case.label is None or not Path(case.label).is_file():
            no_label.append(case)
        pairs.append((case.case_id, prediction, case.label))
    problems = []
    if no_prediction:
        problems.append(
            f"{predictions_dir}: no prediction <case_id>.nii.gz (or .png, .mhd, ...) for {len(no_prediction)} case(s): "
            f"{_named(no_prediction)}"
        )
    if no_label:
        absent = [c.label for c in no_label if c.label is not None]
        example = f" ({absent[0]} does not exist)" if absent else ""
        problems.append(
            f"no ground-truth label file for {len(no_label)} case(s): {_named([c.case_id for c in no_label])}{example}"
        )
    if problems:
        raise DataError("\n".join(problems))
    table = evaluate_cases(pairs, groups, names, n_threads=n_threads)
    write_metrics(Path(output) if output is not None else predictions_dir / METRICS_FILENAME, table)
    return table


def format_summary(table: pd.DataFrame) -> str:
    """One line per metric with its mean, median and sd (and its count of NaN values when there are any)."""
    summary = summary_rows(table).set_index("case_id").T
    if not summary["n_nan"].any():
        summary = summary.drop(columns="n_nan")
    else:
        summary["n_nan"] = summary["n_nan"].astype(int)
    summary.index.name = "metric"
    return summary.reset_index().to_string(index=False, float_format=lambda v: f"{v:.4f}")
