"""Small synthetic BraTS-like multi-modal MRI cases, written as NIfTI files on the fly.

Tests, examples and benchmarks need data that exercises the whole pipeline (loading, reorientation, resampling,
intensity normalization, training, inference) without downloading the real BraTS data. This module generates it:

* a "brain": an ellipsoid filling most of the volume, with a smooth intensity (0.3-0.5 plus a mild low-frequency
  variation) and exactly 0 outside it in every modality;
* a tumour made of nested, randomly rotated ellipsoids at a random position inside the brain, labelled with the
  BraTS conventions: 2 = peritumoral edema (largest), 1 = necrotic / non-enhancing tumour core (inside the edema),
  4 = enhancing tumour (a smaller blob inside the core). Each region is a subset of the enclosing one, and the stored
  label is the innermost region's label;
* strong, distinct contrasts per modality (flair bright on edema, t1 dark on the core, t1ce bright on enhancing
  tumour, t2 bright on edema and core), Gaussian noise, and a random intensity scale/offset per case and modality
  (applied inside the brain only) so that normalization matters.

The segmentation task is deliberately easy: a tiny CNN reaches a high Dice in a few CPU minutes. Cases come with
anisotropic spacings and varied axis orientations (RAS, LPS, LAS, permuted axes such as PSR), written with the
affine as both qform and sform (code 1). Everything is deterministic for a given seed / random generator.
"""

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from unet3d.data.synthetic_geometry import ORIENTATIONS, random_affine

__all__ = [
    "LABEL_CORE",
    "LABEL_EDEMA",
    "LABEL_ENHANCING",
    "MODALITIES",
    "ORIENTATIONS",
    "SPACINGS",
    "make_case",
    "random_affine",
    "write_case",
    "write_dataset",
]

MODALITIES = ("flair", "t1", "t1ce", "t2")
"""Modality names, in the order used for the image list; ``n_modalities < 4`` uses the first ones."""

LABEL_EDEMA = 2
LABEL_CORE = 1
LABEL_ENHANCING = 4

SPACINGS = (0.8, 1.0, 1.2, 1.5, 2.0)
"""Voxel sizes (mm) drawn independently per axis by :func:`write_dataset`."""

MIN_SIZE = 16
"""Smallest supported size along each axis: every case still contains all three tumour labels."""

_MIN_VOXELS = 5  # each label must cover at least this many voxels
_MAX_ATTEMPTS = 100  # tumour draws before giving up (never reached in practice)
_NOISE_SIGMA = 0.05
# Tissue intensity (before scale/offset) of edema, tumour core and enhancing tumour; healthy brain is 0.3-0.5.
_CONTRASTS = {
    "flair": (0.95, 0.70, 0.75),
    "t1": (0.35, 0.10, 0.25),
    "t1ce": (0.35, 0.15, 1.00),
    "t2": (0.85, 0.95, 0.65),
}


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"shape must have 3 dimensions, got {tuple(shape)}")
    out = (int(shape[0]), int(shape[1]), int(shape[2]))
    if min(out) < MIN_SIZE:
        raise ValueError(f"every axis of shape must be at least {MIN_SIZE}, got {out}")
    return out


def _modalities(n_modalities: int) -> tuple[str, ...]:
    if not 1 <= n_modalities <= len(MODALITIES):
        raise ValueError(f"n_modalities must be between 1 and {len(MODALITIES)}, got {n_modalities}")
    return MODALITIES[:n_modalities]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (from a random unit quaternion)."""
    w, x, y, z = rng.normal(size=4)
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _random_in_unit_ball(rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return direction * rng.uniform() ** (1 / 3)


def _ellipsoid(
    coords: np.ndarray, center: np.ndarray, radii: np.ndarray, rotation: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask of the voxels inside an ellipsoid; ``rotation`` columns are its axes (default: voxel axes)."""
    offset = coords - center[:, None, None, None]
    if rotation is not None:
        offset = np.einsum("ji,j...->i...", rotation, offset)  # coordinates in the ellipsoid's frame
    return np.sum((offset / radii[:, None, None, None]) ** 2, axis=0) <= 1.0


def _smooth_field(coords: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A low-frequency random field in about [-1, 1]: a sum of a few plane waves of at most 1.5 cycles per volume."""
    n_waves = 3
    unit = (coords - ((np.asarray(shape) - 1) / 2)[:, None, None, None]) / np.asarray(shape)[:, None, None, None]
    freqs = rng.uniform(-1.5, 1.5, size=(n_waves, 3))
    phases = rng.uniform(0, 2 * np.pi, size=n_waves)
    waves = np.cos(2 * np.pi * np.tensordot(freqs, unit, axes=(1, 0)) + phases[:, None, None, None])
    return waves.sum(axis=0) / n_waves


def _make_tumour(
    coords: np.ndarray, brain: np.ndarray, brain_center: np.ndarray, brain_radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Label map with nested edema (2) ⊃ core (1) ⊃ enhancing (4) regions inside ``brain``; redraws if one is tiny."""
    brain_diameter = 2 * float(np.exp(np.mean(np.log(brain_radii))))
    for _ in range(_MAX_ATTEMPTS):
        rotation = _random_rotation(rng)
        edema_radii = np.maximum(brain_diameter * rng.uniform(0.20, 0.35, size=3), 3.5)
        core_radii = np.maximum(edema_radii * rng.uniform(0.5, 0.7, size=3), 2.5)
        enhancing_radii = np.maximum(core_radii * rng.uniform(0.4, 0.6, size=3), 1.5)
        room = np.maximum(brain_radii - edema_radii.max(), 0.0)
        edema_center = brain_center + _random_in_unit_ball(rng) * room
        core_center = edema_center + rotation @ (_random_in_unit_ball(rng) * (edema_radii - core_radii) * 0.5)
        enhancing_center = core_center + rotation @ (
            _random_in_unit_ball(rng) * np.maximum(core_radii - enhancing_radii, 0.0) * 0.5
        )
        # Intersecting with the enclosing region guarantees the nesting even where an ellipsoid pokes out.
        edema = brain & _ellipsoid(coords, edema_center, edema_radii, rotation)
        core = edema & _ellipsoid(coords, core_center, core_radii, rotation)
        enhancing = core & _ellipsoid(coords, enhancing_center, enhancing_radii, rotation)
        label = np.zeros(brain.shape, dtype=np.uint8)
        label[edema] = LABEL_EDEMA
        label[core] = LABEL_CORE
        label[enhancing] = LABEL_ENHANCING
        counts = [np.count_nonzero(label == v) for v in (LABEL_EDEMA, LABEL_CORE, LABEL_ENHANCING)]
        if min(counts) >= _MIN_VOXELS:
            return label
    raise RuntimeError(f"could not place a tumour with all labels in a brain of shape {brain.shape}")


def make_case(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    n_modalities: int = 4,
    background_range: tuple[float, float] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Images (float32, one array per modality) and a label map (uint8 with values 0,2,1,4) in voxel space.

    Every axis of ``shape`` must be at least :data:`MIN_SIZE`; every label then covers at least a few voxels.
    Background (outside the brain) is exactly 0 in every image and values inside are positive, unless
    ``background_range`` is given: then each modality gets a background level drawn from that range (CT air is about
    -1000) with noise on it, and the whole image is shifted by it, as scanners that do not zero the background do.
    """
    shape = _check_shape(shape)
    modalities = _modalities(n_modalities)
    coords = np.indices(shape, dtype=np.float64)
    size = np.asarray(shape, dtype=np.float64)

    max_radii = (size - 1) / 2
    brain_radii = max_radii * rng.uniform(0.85, 0.97, size=3)
    brain_center = (size - 1) / 2 + rng.uniform(-1.0, 1.0, size=3) * (max_radii - brain_radii)
    brain = _ellipsoid(coords, brain_center, brain_radii)
    label = _make_tumour(coords, brain, brain_center, brain_radii, rng)

    regions = [label == v for v in (LABEL_EDEMA, LABEL_CORE, LABEL_ENHANCING)]
    images = []
    for modality in modalities:
        tissue = np.full(shape, rng.uniform(0.3, 0.5))
        tissue += 0.04 * _smooth_field(coords, shape, rng)  # mild anatomical variation
        for region, value in zip(regions, _CONTRASTS[modality], strict=True):
            tissue[region] = value
        bias = 1.0 + 0.08 * _smooth_field(coords, shape, rng)  # smooth multiplicative bias field
        image = tissue * bias + rng.normal(0.0, _NOISE_SIGMA, size=shape)
        scale = float(np.exp(rng.uniform(np.log(100.0), np.log(1000.0))))
        offset = rng.uniform(0.0, 0.25) * scale
        image = np.where(brain, np.clip(image, 0.02, None) * scale + offset, 0.0)
        if background_range is not None:
            level = rng.uniform(*background_range)
            noise = rng.normal(0.0, _NOISE_SIGMA * scale, size=shape)
            image = level + np.where(brain, image, noise)
        images.append(image.astype(np.float32))
    return images, label


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def write_case(
    directory: Path,
    case_id: str,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    orientation: str | None = None,
    with_label: bool = True,
    n_modalities: int = 4,
    background_range: tuple[float, float] | None = None,
    oblique_degrees: float = 0.0,
) -> dict:
    """Writes <directory>/<case_id>/<case_id>_<modality>.nii.gz for each modality and <case_id>_seg.nii.gz.

    Returns ``{"image": [paths], "label": path}`` (label omitted, and not written, when ``with_label`` is False)
    with paths as POSIX-style ``str`` relative to ``directory``. The images do not depend on ``with_label``.
    ``background_range`` and ``oblique_degrees``: see :func:`make_case` and :func:`random_affine`.
    """
    directory = Path(directory)
    images, label = make_case(shape, rng, n_modalities, background_range)
    affine = random_affine(spacing, rng, orientation, oblique_degrees)
    (directory / case_id).mkdir(parents=True, exist_ok=True)
    entry: dict = {"image": []}
    for modality, image in zip(_modalities(n_modalities), images, strict=True):
        relative = f"{case_id}/{case_id}_{modality}.nii.gz"
        _save(image, affine, directory / relative)
        entry["image"].append(relative)
    if with_label:
        relative = f"{case_id}/{case_id}_seg.nii.gz"
        _save(label, affine, directory / relative)
        entry["label"] = relative
    return entry


def write_dataset(
    directory: Path,
    n_cases: int,
    seed: int = 0,
    shape_range: tuple[int, int] = (24, 32),
    with_labels: bool = True,
    prefix: str = "case",
    n_modalities: int = 4,
    spacing: tuple[float, float, float] | None = None,
    background_range: tuple[float, float] | None = None,
    oblique_degrees: float = 0.0,
) -> list[dict]:
    """Writes ``n_cases`` cases ``f"{prefix}_{i:03d}"`` under ``directory`` and returns their entries.

    Shapes are drawn per axis in ``shape_range`` (inclusive), spacings per axis from :data:`SPACINGS`, and
    orientations cycle through :data:`ORIENTATIONS`. Deterministic for a seed; case ``i`` depends only on ``seed``
    and ``i`` (a dataset of ``n`` cases is a prefix of a larger one with the same seed). Paths in the returned
    entries are relative to ``directory`` (see :func:`write_case`).

    Harder data, closer to real scans: a fixed ``spacing`` for every case (e.g. (0.8, 0.8, 5.0) mm, thick slices),
    non-zero backgrounds (``background_range``) and oblique axes (``oblique_degrees``).
    """
    low, high = (int(v) for v in shape_range)
    if not MIN_SIZE <= low <= high:
        raise ValueError(f"shape_range must satisfy {MIN_SIZE} <= low <= high, got {tuple(shape_range)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n_cases):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
        shape = tuple(int(s) for s in rng.integers(low, high + 1, size=3))
        drawn = tuple(float(s) for s in rng.choice(SPACINGS, size=3))
        orientation = ORIENTATIONS[i % len(ORIENTATIONS)]
        entries.append(
            write_case(
                directory,
                f"{prefix}_{i:03d}",
                shape,
                drawn if spacing is None else spacing,
                rng,
                orientation=orientation,
                with_label=with_labels,
                n_modalities=n_modalities,
                background_range=background_range,
                oblique_degrees=oblique_degrees,
            )
        )
    return entries
