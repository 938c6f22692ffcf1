"""Predict a list of cases into a folder: one `<case_id>.nii.gz` label map per case in its original space (`.png`
for 2D pictures, the input's own format for MetaImage/NRRD)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unet3d.atomic import remove_stale_temporaries
from unet3d.config.cases import Case
from unet3d.config.schema import Config
from unet3d.data.datasets import case_items
from unet3d.data.decoding import decode, fill_background
from unet3d.data.image_io import image_format, label_map_suffix
from unet3d.data.transforms import build_transforms
from unet3d.errors import CheckpointError, raise_if_terminated
from unet3d.formats import DICOM_SEG_SUFFIX, PROBABILITY_SUFFIX
from unet3d.inference import dicom_seg
from unet3d.inference.original_space import (
    check_geometry,
    to_original_space,
    write_label_map,
    write_probabilities,
)
from unet3d.inference.predictor import Predictor
from unet3d.locking import LOCK_FILENAME
from unet3d.output_guard import Inputs, check_outputs

log = logging.getLogger("unet3d")


def prediction_path(folder: Path, case: Case) -> Path:
    """Where a case's label map goes: `<folder>/<case_id>.nii.gz`, or the ending of the case's image format (case ids
    are unique within a group)."""
    return folder / f"{case.case_id}{label_map_suffix(case.images[0])}"


def output_paths(folder: Path, cases: Sequence[Case], save_probabilities: bool) -> dict[Path, str]:
    """Every label map and probability map a prediction of `cases` into `folder` writes, each with what it is."""
    outputs = {}
    for case in cases:
        outputs[prediction_path(folder, case)] = f"the label map of case {case.case_id!r}"
        if image_format(case.images[0]) == "dicom":
            outputs[folder / f"{case.case_id}{DICOM_SEG_SUFFIX}"] = f"the DICOM SEG of case {case.case_id!r}"
        if save_probabilities:
            outputs[folder / f"{case.case_id}{PROBABILITY_SUFFIX}"] = f"the probabilities of case {case.case_id!r}"
    return outputs


def check_prediction_outputs(
    folder: Path,
    cases: Sequence[Case],
    save_probabilities: bool,
    inputs: Inputs | None = None,
    also_written: Mapping[Path, str] | None = None,
    overwrite: bool = True,
) -> None:
    """Refuse, before anything is written (or a model loaded), an output folder where a label map, probability map
    or one of `also_written` (a metrics file) would replace an input of the run (any image or label of `cases`, and
    `inputs`), a work dir's checkpoint or config, or, without `overwrite`, a file that no unet3d prediction made (a
    folder unet3d wrote into holds its lock file). See `unet3d.output_guard`."""
    inputs = (inputs or Inputs()).add_cases(cases, "the cases to predict")
    outputs = {**output_paths(Path(folder), cases, save_probabilities), **(also_written or {})}
    written_by_unet3d = (Path(folder) / LOCK_FILENAME).exists()
    check_outputs(outputs, inputs, replace=overwrite, made_here=lambda path: written_by_unet3d)


@dataclass
class CasePrediction:
    """One case's prediction in its original space."""

    case: Case
    label_map: torch.Tensor  # (*spatial) label values
    probabilities: torch.Tensor  # (C, *spatial)
    reference: Path  # the case's first image, whose grid and affine the maps share
    affine: np.ndarray  # that grid's affine (RAS), as the inversion restored it


def iter_predictions(
    predictor: Predictor, config: Config, cases: Sequence[Case], threshold: float = 0.5, description: str = "predict"
) -> Iterator[CasePrediction]:
    """Preprocess each case as for validation, predict, invert to its original space and decode, one at a time."""
    dataset = config.dataset_for("validation")
    transform = build_transforms(dataset, with_label=False, softmax=predictor.activation == "softmax", augment=False)
    groups = config.regions
    pairs = list(zip(cases, case_items(cases, with_label=False), strict=True))
    for case, item in tqdm(pairs, desc=description, unit="case", disable=None, leave=False):
        raise_if_terminated()
        image = transform(item)["image"]
        probabilities = predictor.probabilities(image.unsqueeze(0).as_tensor())[0]
        expected = len(groups) + (1 if predictor.activation == "softmax" else 0)
        if probabilities.shape[0] != expected:
            raise CheckpointError(
                f"the model returns {probabilities.shape[0]} channels; the labels and activation need {expected}"
            )
        inverted = to_original_space(probabilities, image, transform)
        check_geometry(inverted.shape[1:], inverted.affine.numpy(), case.images[0])
        original = torch.as_tensor(inverted)
        if predictor.activation == "softmax":
            original = fill_background(original)
        label_map = decode(original, groups, predictor.activation, threshold)
        yield CasePrediction(case, label_map, original, Path(case.images[0]), inverted.affine.numpy())


def write_segmentation(folder: Path, prediction: CasePrediction, label_map: np.ndarray, config: Config) -> None:
    """Beside a DICOM series' label map, the DICOM SEG that references the series (`unet3d[dicom]`)."""
    case = prediction.case
    if not dicom_seg.available():
        if not _warned_missing_dicom:
            log.warning("%s: no DICOM SEG beside the label map: it needs highdicom, %s", case.case_id, dicom_seg.EXTRA)
            _warned_missing_dicom.append(case.case_id)
        return
    path = folder / f"{case.case_id}{DICOM_SEG_SUFFIX}"
    regions, names = config.regions, config.dataset.region_names
    dicom_seg.write_dicom_seg(path, label_map, prediction.affine, prediction.reference, regions, names)


_warned_missing_dicom: list[str] = []  # once per process


def predict_cases(
    predictor: Predictor,
    config: Config,
    cases: Sequence[Case],
    folder: Path,
    save_probabilities: bool = False,
    threshold: float = 0.5,
    description: str = "predict",
    postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Path]:
    """Write `<case_id>.nii.gz` (or .png, .mhd, ...) label maps (and optionally probability maps) for `cases` into
    `folder`; `postprocess` (e.g. the largest-component filter) is applied to each label map before it is written."""
    check_prediction_outputs(folder, cases, save_probabilities)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    written = []
    for prediction in iter_predictions(predictor, config, cases, threshold, description):
        path = prediction_path(folder, prediction.case)
        label_map = prediction.label_map
        if postprocess is not None:
            label_map = torch.from_numpy(postprocess(label_map.numpy()))
        write_label_map(path, label_map, prediction.reference)
        if image_format(prediction.reference) == "dicom":
            write_segmentation(folder, prediction, label_map.numpy(), config)
        if save_probabilities:
            write_probabilities(
                folder / f"{prediction.case.case_id}{PROBABILITY_SUFFIX}",
                prediction.probabilities,
                prediction.reference,
            )
        written.append(path)
    log.info("wrote %d label maps to %s", len(written), folder)
    return written
