"""Synthetic data sets in the two public layouts (see `unet3d.config.layouts`), for tests, examples and benchmarks.

The cases are those of `unet3d.data.synthetic.make_case` (BraTS-like tumours in a brain), with the labels renumbered
the way the public data sets number them: 1 edema, 2 non-enhancing core, 3 enhancing tumour.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from unet3d.data.synthetic import LABEL_CORE, LABEL_EDEMA, LABEL_ENHANCING, MODALITIES, SPACINGS, make_case
from unet3d.data.synthetic_geometry import ORIENTATIONS, random_affine

PUBLIC_LABELS = {LABEL_EDEMA: 1, LABEL_CORE: 2, LABEL_ENHANCING: 3}
REGIONS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": [3]}
CLASSES = {"background": 0, "edema": 1, "non-enhancing core": 2, "enhancing tumour": 3}


def _cases(
    n_cases: int, seed: int, shape_range: tuple[int, int], n_channels: int, **geometry: Any
) -> list[tuple[list[np.ndarray], np.ndarray, np.ndarray]]:
    """(images, label map renumbered 1/2/3, affine) per case; deterministic for a seed."""
    out = []
    orientations = geometry.pop("orientations", ORIENTATIONS)
    spacing = geometry.pop("spacing", None)
    background = geometry.pop("background_range", None)
    for i in range(n_cases):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
        shape = tuple(int(s) for s in rng.integers(shape_range[0], shape_range[1] + 1, size=3))
        drawn = tuple(float(s) for s in rng.choice(SPACINGS, size=3))
        images, label = make_case(shape, rng, n_channels, background)
        renumbered = np.zeros_like(label)
        for old, new in PUBLIC_LABELS.items():
            renumbered[label == old] = new
        affine = random_affine(spacing or drawn, rng, orientations[i % len(orientations)], **geometry)
        out.append((images, renumbered, affine))
    return out


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, path)


def write_msd_dataset(
    root: Path,
    n_cases: int,
    n_test: int = 0,
    seed: int = 0,
    shape_range: tuple[int, int] = (16, 24),
    n_channels: int = 4,
    **geometry: Any,
) -> Path:
    """A Medical Segmentation Decathlon data set: 4D images (channels last) in imagesTr/imagesTs, exclusive labels
    in labelsTr, and `dataset.json`. Returns the path of `dataset.json`. `geometry`: `spacing`, `background_range`,
    `oblique_degrees` as in `unet3d.data.synthetic.write_dataset`, and `orientations` (axis codes, cycled)."""
    root = Path(root)
    cases = _cases(n_cases + n_test, seed, shape_range, n_channels, **geometry)
    training, test = [], []
    for i, (images, label, affine) in enumerate(cases):
        name = f"syn_{i:03d}.nii.gz"
        stacked = np.stack(images, axis=-1) if n_channels > 1 else images[0]
        folder = "imagesTr" if i < n_cases else "imagesTs"
        _save(stacked, affine, root / folder / name)
        if i < n_cases:
            _save(label, affine, root / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    meta = {
        "name": "SyntheticTumour",
        "modality": {str(c): MODALITIES[c].upper() for c in range(n_channels)},
        "labels": {str(v): k for k, v in CLASSES.items()},
        "numTraining": n_cases,
        "numTest": n_test,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root / "dataset.json"


def write_nnunet_dataset(
    root: Path,
    n_cases: int,
    n_test: int = 0,
    seed: int = 0,
    shape_range: tuple[int, int] = (16, 24),
    channel_names: tuple[str, ...] = ("FLAIR", "T1", "T1CE", "T2"),
    regions: bool = True,
    **geometry: Any,
) -> Path:
    """An nnU-Net v2 raw data set: one file per channel (`{case}_{XXXX}.nii.gz`), `labelsTr/{case}.nii.gz`, and a
    `dataset.json` with region-based labels (whole ⊃ core ⊃ enhancing) or, with `regions=False`, the exclusive
    classes. Channel names such as 'CT' tell the planner how to normalize. Returns the data set's folder."""
    root = Path(root)
    cases = _cases(n_cases + n_test, seed, shape_range, len(channel_names), **geometry)
    for i, (images, label, affine) in enumerate(cases):
        case = f"syn_{i:03d}"
        folder = "imagesTr" if i < n_cases else "imagesTs"
        for channel, image in enumerate(images):
            _save(image, affine, root / folder / f"{case}_{channel:04d}.nii.gz")
        if i < n_cases:
            _save(label, affine, root / "labelsTr" / f"{case}.nii.gz")
    meta: dict[str, Any] = {
        "channel_names": {str(c): name for c, name in enumerate(channel_names)},
        "labels": REGIONS if regions else CLASSES,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    if regions:
        meta["regions_class_order"] = [1, 2, 3]
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
