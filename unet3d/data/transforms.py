"""MONAI dictionary-transform chains built from the `dataset` section.

Each case is read by the MONAI reader of its format (`image_io.monai_reader`) unless `dataset.reader` names one.
The order: load and stack modalities → orientation → spacing → foreground crop → resize / pad-or-crop to
`desired_shape` (or a random patch) → spatial augmentations → label map to channels → normalization → intensity
augmentations. With `normalize_whole_case` (the default) normalization moves before the first random step, so it sees
the whole case. Unlike 3DUnetCNN the label map is encoded after the spatial steps (nearest-neighbour interpolation of a
label map gives the same channels as of its encoding, and padding stays background). Everything before the first
random transform is deterministic, which is what the caching datasets store (see `unet3d.data.datasets`).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import asdict
from functools import partial
from typing import Any

import monai.data
import nibabel as nib
import numpy as np
import torch
from monai import transforms as mt
from monai.transforms import RandomizableTrait
from monai.utils import GridSampleMode, InterpolateMode

from unet3d.config.fields import NamedSpec
from unet3d.config.schema import DatasetConfig
from unet3d.data.foreground import FOREGROUND_TOLERANCE, foreground_above_percentile
from unet3d.data.image_io import monai_reader, quiet_readers
from unet3d.data.labels import LabelsToChannelsd
from unet3d.errors import ConfigError
from unet3d.registry import check_kwargs, lookup

IMAGE, LABEL = "image", "label"
NORMALIZATION_ALIASES = {"zero_mean": "NormalizeIntensityd"}
# No margin around the foreground's bounding box, as nnU-Net crops: one voxel on each side made a 127 x 152 x 126 brain
# 129 x 154 x 128, which takes 4 windows of 128³ instead of 2.
CROP_MARGIN = 0
AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # nibabel's axis codes, which MONAI's default labels are too


_READ_LOCK = threading.Lock()


def label_on_image_axes(image: Any, label: Any) -> Any:
    """The label map with its axes in the image's order when it stores the image's grid in another axis order (a
    NIfTI mask beside a DICOM series often does; the up-front checks made sure it is the same grid)."""
    if getattr(image, "ndim", 0) != 4 or not hasattr(image, "affine") or not hasattr(label, "affine"):
        return label
    codes = "".join(nib.aff2axcodes(np.asarray(image.affine)))
    if codes == "".join(nib.aff2axcodes(np.asarray(label.affine))):
        return label
    return mt.Orientation(axcodes=codes, labels=AXIS_LABELS)(label)


class ThreadSafeLoadImaged(mt.LoadImaged):
    """`LoadImaged` that two threads can call at once.

    MONAI's image readers keep the files being read on the reader object, so concurrent reads (a CacheDataset filled
    by several threads, a thread-based loader) can mix up cases: a 4-modality case came out with 1 channel. Reads are
    serialized; the rest of the chain still runs in parallel. The label map comes out in the image's axis order.
    """

    def __init__(self, keys: Any, reader: str | None = None, **kwargs: Any) -> None:
        with quiet_readers():
            super().__init__(keys, reader=reader, **kwargs)
        self.choose_reader = reader is None
        self.readers: dict[str, Any] = {}

    def __call__(self, data: Any, reader: Any = None) -> Any:
        with _READ_LOCK:
            if reader is None and self.choose_reader:
                reader = self._reader_for(data[self.keys[0]])
            loaded = super().__call__(data, reader)
        if IMAGE in loaded and LABEL in loaded:
            loaded[LABEL] = label_on_image_axes(loaded[IMAGE], loaded[LABEL])
        return loaded

    def _reader_for(self, files: Any) -> Any:
        """The reader of the case's format (see `image_io.monai_reader`), one instance per format."""
        name = monai_reader(files[0] if isinstance(files, (list, tuple)) else files)
        if name is None:
            return None
        if name not in self.readers:
            self.readers[name] = getattr(monai.data, name)()
        return self.readers[name]


INTERPOLATION_MODES = frozenset(m.value for m in (*GridSampleMode, *InterpolateMode))


def interpolates(cls: type) -> bool:
    """Whether the transform's `mode` is an interpolation mode. For pads and crops (`SpatialPadd`, `BorderPadd`,
    `DivisiblePadd`, `CropForegroundd`, `ResizeWithPadOrCropd`) `mode` is the padding mode, which must not be given
    'bilinear' or 'nearest'; the parameter's default tells the two meanings apart."""
    mode = inspect.signature(cls).parameters.get("mode")
    default = getattr(mode.default, "value", mode.default) if mode is not None else None
    return isinstance(default, str) and default in INTERPOLATION_MODES


def _build(spec: NamedSpec, keys: tuple[str, ...], where: str, label_mode: bool = False) -> mt.MapTransform:
    cls = lookup("transform", spec.name, f"{where}.name")
    kwargs = dict(spec.kwargs)
    check_kwargs(cls, kwargs, where, supplied=("keys",))
    if label_mode and LABEL in keys and interpolates(cls) and "mode" not in kwargs:
        # Interpolate label maps with nearest neighbours so label values stay label values.
        kwargs["mode"] = tuple("nearest" if key == LABEL else "bilinear" for key in keys)
    try:
        return cls(keys=keys, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {spec.name}: {error}") from None


def normalization_transform(dataset: DatasetConfig, where: str = "dataset") -> mt.MapTransform | None:
    """The image normalization transform, or None when `normalization` is null."""
    if dataset.normalization is None:
        return None
    name = NORMALIZATION_ALIASES.get(dataset.normalization, dataset.normalization)
    return _build(NamedSpec(name, dataset.normalization_kwargs), (IMAGE,), f"{where}.normalization")


def build_transforms(
    dataset: DatasetConfig,
    with_label: bool,
    softmax: bool,
    augment: bool,
    where: str = "dataset",
) -> mt.Compose:
    """The full chain for one split. `augment` False drops random crops and augmentations (validation, prediction)."""
    keys = (IMAGE, LABEL) if with_label else (IMAGE,)
    steps: list[Any] = [
        ThreadSafeLoadImaged(keys, reader=dataset.reader, image_only=True, ensure_channel_first=True),
        mt.EnsureTyped(keys, dtype=torch.float32, track_meta=True),
    ]
    if dataset.orientation:
        steps.append(mt.Orientationd(keys, axcodes=dataset.orientation, labels=AXIS_LABELS))
    if dataset.spacing:
        modes = tuple("nearest" if key == LABEL else "bilinear" for key in keys)
        steps.append(mt.Spacingd(keys, pixdim=dataset.spacing, mode=modes))
    if dataset.crop_foreground:
        select = partial(foreground_above_percentile, percentile=dataset.foreground_percentile)
        steps.append(
            mt.CropForegroundd(
                keys,
                source_key=IMAGE,
                select_fn=select,
                margin=CROP_MARGIN,
                allow_smaller=True,
                start_coord_key=None,
                end_coord_key=None,
            )
        )
    steps.extend(_shape_steps(dataset, keys, augment))
    if augment:
        for i, spec in enumerate(dataset.spatial_augmentations):
            steps.append(_build(spec, keys, f"{where}.spatial_augmentations[{i}]", label_mode=True))
    if with_label:
        # Encoding after every spatial step keeps the label map whole until then: padding adds label 0, which is
        # background in every encoding (a one-hot background channel padded with 0 would belong to no class).
        groups = dataset.regions
        steps.append(LabelsToChannelsd(LABEL, groups, background=softmax))
    normalization = normalization_transform(dataset, where)
    if normalization is not None:
        first_random = next((i for i, step in enumerate(steps) if isinstance(step, RandomizableTrait)), len(steps))
        steps.insert(first_random if dataset.normalize_whole_case else len(steps), normalization)
    if augment:
        for i, spec in enumerate(dataset.intensity_augmentations):
            steps.append(_build(spec, (IMAGE,), f"{where}.intensity_augmentations[{i}]"))
    steps.append(mt.EnsureTyped(keys, dtype=torch.float32, track_meta=True))
    return mt.Compose(steps)


def _shape_steps(dataset: DatasetConfig, keys: tuple[str, ...], augment: bool) -> list[mt.MapTransform]:
    shape = dataset.desired_shape
    if not shape:
        return []
    if dataset.random_crop:
        # Pad first so that every case yields a full patch; without augmentation the whole volume is kept.
        steps: list[mt.MapTransform] = [mt.SpatialPadd(keys, spatial_size=shape)]
        if augment:
            steps.append(mt.RandSpatialCropd(keys, roi_size=shape, random_size=False))
        return steps
    if dataset.resample:
        modes = tuple(
            "nearest-exact" if key == LABEL else "trilinear" if len(shape) == 3 else "bilinear" for key in keys
        )
        return [mt.Resized(keys, spatial_size=shape, mode=modes)]
    return [mt.ResizeWithPadOrCropd(keys, spatial_size=shape)]


def preprocessing_fingerprint(dataset: DatasetConfig, softmax: bool) -> dict[str, Any]:
    """The settings that change the cached (deterministic) part of the chain; a new value means a new cache."""
    import monai

    keys = (
        "labels",
        "setup_label_hierarchy",
        "desired_shape",
        "resample",
        "crop_foreground",
        "foreground_percentile",
        "orientation",
        "spacing",
        "random_crop",
        "reader",
    )
    values = asdict(dataset)
    deterministic = [  # a crop or pad listed among the augmentations runs before the first random step: it is cached
        {"name": spec.name, **spec.kwargs}
        for i, spec in enumerate([*dataset.spatial_augmentations, *dataset.intensity_augmentations])
        if not issubclass(lookup("transform", spec.name, f"dataset augmentation {i}"), RandomizableTrait)
    ]
    return {
        "monai": monai.__version__,
        "softmax": softmax,
        "crop_margin": CROP_MARGIN,
        "foreground_tolerance": FOREGROUND_TOLERANCE,
        **{k: values[k] for k in keys},
        # validation caches the chain through normalization (it has no random step)
        "normalization": {"name": dataset.normalization, **(dataset.normalization_kwargs or {})},
        "deterministic_augmentations": deterministic,
    }
