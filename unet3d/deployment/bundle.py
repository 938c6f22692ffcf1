"""`unet3d-export --format bundle`: a trained network as a MONAI bundle, checked against the checkpoint.

A bundle is the unit MONAI's tools deploy (`python -m monai.bundle run`, MONAI Label, MONAI Deploy, the Model Zoo):

    DIR/configs/metadata.json    what goes in and comes out of the network (channels, patch, label values)
    DIR/configs/inference.json   the whole prediction as MONAI components: the preprocessing of `unet3d-predict`, the
                                 sliding-window inferer, and back to each case's grid as a label map
    DIR/models/model.pt          the network's weights (a state dict for `network_def`, MONAI's own network class)
    DIR/models/model.ts          the same network as TorchScript, with the metadata and configs inside
    DIR/scripts/                 unet3d's three modules that MONAI has no component for (the foreground crop, the
                                 per-channel normalization, the decoding of nested regions): torch and MONAI only
    DIR/docs/README.md, LICENSE

`inference.json` reproduces `unet3d-predict --no_postprocessing` of one model without test-time mirroring: the same
transforms with the same numbers, applied by MONAI, so the label maps are equal (tests compare them voxel for voxel).
"""

from __future__ import annotations

import datetime
import getpass
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unet3d import normalization
from unet3d.atomic import atomic_save, atomic_write, atomic_write_json, atomic_write_text, check_writable
from unet3d.config.schema import Config
from unet3d.data import decoding, foreground
from unet3d.data.image_io import image_format, label_map_suffix, monai_reader
from unet3d.data.transforms import AXIS_LABELS, CROP_MARGIN, NORMALIZATION_ALIASES
from unet3d.deployment.export import (
    TOLERANCE,
    ExportResult,
    channel_schemes,
    example_input,
    load_network,
    patch_size,
    trace,
)
from unet3d.errors import CheckpointError, ConfigError
from unet3d.inferers import DEFAULT_OVERLAP
from unet3d.losses import activation_from_loss
from unet3d.models import spatial_dims
from unet3d.output_guard import check_outputs
from unet3d.prediction import config_for, models_inputs
from unet3d.version import __version__

# unet3d's modules a bundle carries, by their name in its `scripts/` package; each imports only torch, numpy and MONAI.
SCRIPTS = {"foreground": foreground, "normalization": normalization, "decoding": decoding}
# The schema MONAI's own test bundles name (it has required_packages_version, which MONAI 1.6 reads; the older
# 20220324 schema named it optional_packages_version).
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
MARKER = "unet3d_export"  # metadata.json's record of the export, which lets a later export replace the bundle
WRITERS = {"nifti": "NibabelWriter", "picture": "PILWriter", "itk": "ITKWriter"}  # by the label map's format


def bundle_files(folder: Path) -> dict[Path, str]:
    """Every file an export writes into `folder`, each with what it is."""
    files = {
        folder / "configs" / "metadata.json": "the bundle's metadata",
        folder / "configs" / "inference.json": "the bundle's inference config",
        folder / "models" / "model.pt": "the bundle's weights",
        folder / "models" / "model.ts": "the bundle's TorchScript network",
        folder / "scripts" / "__init__.py": "the bundle's scripts package",
        folder / "docs" / "README.md": "the bundle's README",
        folder / "LICENSE": "the bundle's licence",
    }
    files.update({folder / "scripts" / f"{name}.py": f"the bundle's script {name}.py" for name in SCRIPTS})
    return files


def _component(target: str, **kwargs: Any) -> dict[str, Any]:
    return {"_target_": target, **kwargs}


def preprocessing(config: Config) -> dict[str, Any]:
    """`unet3d-predict`'s preprocessing chain (see `unet3d.data.transforms.build_transforms` without a label or
    augmentation) as a MONAI Compose config."""
    dataset = config.dataset_for("validation")
    first = next(iter(config.groups.get("training", [])), None)
    reader = dataset.reader or (monai_reader(first.images[0]) if first is not None else None)
    image = "image"
    steps = [
        _component(
            "LoadImaged",
            keys=image,
            image_only=True,
            ensure_channel_first=True,
            **({"reader": reader} if reader else {}),
        ),
        _component("EnsureTyped", keys=image, dtype="$torch.float32", track_meta=True),
    ]
    if dataset.orientation:
        steps.append(
            _component("Orientationd", keys=image, axcodes=dataset.orientation, labels=[list(p) for p in AXIS_LABELS])
        )
    if dataset.spacing:
        steps.append(_component("Spacingd", keys=image, pixdim=list(dataset.spacing), mode="bilinear"))
    if dataset.crop_foreground:
        select = _component(
            "scripts.foreground.foreground_above_percentile",
            _mode_="callable",
            percentile=dataset.foreground_percentile,
        )
        steps.append(
            _component(
                "CropForegroundd",
                keys=image,
                source_key=image,
                select_fn=select,
                margin=CROP_MARGIN,
                allow_smaller=True,
                start_coord_key=None,
                end_coord_key=None,
            )
        )
    shape = list(dataset.desired_shape or [])
    if shape and dataset.random_crop:
        steps.append(_component("SpatialPadd", keys=image, spatial_size=shape))
    elif shape and dataset.resample:
        steps.append(
            _component("Resized", keys=image, spatial_size=shape, mode="trilinear" if len(shape) == 3 else "bilinear")
        )
    elif shape:
        steps.append(_component("ResizeWithPadOrCropd", keys=image, spatial_size=shape))
    if dataset.normalization is not None:
        name = NORMALIZATION_ALIASES.get(dataset.normalization, dataset.normalization)
        own = hasattr(normalization, name)
        target = f"scripts.normalization.{name}" if own else name
        steps.append(_component(target, keys=image, **dict(dataset.normalization_kwargs or {})))
    steps.append(_component("EnsureTyped", keys=image, dtype="$torch.float32", track_meta=True))
    return _component("Compose", transforms=steps)


def inferer(config: Config) -> dict[str, Any]:
    """The inferer `unet3d-predict` uses on the CPU (`unet3d.inferers.build_inferer`), as a MONAI component."""
    if config.inference is not None:
        kwargs = dict(config.inference.kwargs)
        if config.inference.name.endswith("SlidingWindowInferer"):
            kwargs.setdefault("sw_batch_size", 1)
        return _component(config.inference.name, **kwargs)
    if not config.dataset.desired_shape:
        return _component("SimpleInferer")
    return _component(
        "SlidingWindowInferer",
        roi_size=list(config.dataset.desired_shape),
        overlap=DEFAULT_OVERLAP,
        mode="gaussian",
        sw_batch_size=1,
    )


def postprocessing(config: Config, activation: str) -> dict[str, Any]:
    """Activation, back to each case's grid (MONAI's Invertd undoes the recorded spatial steps), unet3d's decoding to
    label values, and the label map written into `@output_dir` in the format `unet3d-predict` writes."""
    values = [value for group in config.regions for value in group]
    dtype = "$numpy.uint8" if min(values, default=0) >= 0 and max(values, default=0) <= 255 else "$numpy.int16"
    suffix = _output_suffix(config)
    steps = [
        _component("Activationsd", keys="pred", **{activation: True}),
        _component(
            "Invertd",
            keys="pred",
            transform="@preprocessing",
            orig_keys="image",
            nearest_interp=False,
            to_tensor=True,
        ),
    ]
    if activation == "softmax":
        steps.append(_component("scripts.decoding.FillBackgroundd", keys="pred"))
    steps += [
        _component(
            "scripts.decoding.DecodeLabelsd",
            keys="pred",
            groups=[list(group) for group in config.regions],
            activation=activation,
        ),
        _component(
            "SaveImaged",
            keys="pred",
            output_dir="@output_dir",
            output_postfix="seg",
            output_ext=suffix,
            output_dtype=dtype,
            writer=WRITERS[image_format(Path(f"x{suffix}"))],
            # The label map is on the image's grid already, so "resampling" to it changes no voxel; resample=False
            # fails in MONAI 1.6.1 on a permuted affine (PSR, a DICOM series' LPS): its writer takes a 3D label map
            # without a channel axis for a 2D one and cannot invert the permuted 2D affine.
            resample=True,
            mode="nearest",
            separate_folder=False,
            print_log=False,
        ),
    ]
    return _component("Compose", transforms=steps)


def inference_config(config: Config, activation: str) -> dict[str, Any]:
    """`configs/inference.json`: MONAI's inference-bundle layout (the ids MONAI Label and Deploy look up)."""
    model = config.model
    return {
        "imports": ["$import os", "$import sys"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": ".",
        "datalist_file": "$@bundle_root + '/configs/datalist.json'",
        # No data list yet (MONAI Label, MONAI Deploy and MONAI's property check read the bundle without one): no
        # cases; `run` then fails naming the file it needs.
        "datalist": "$monai.data.load_decathlon_datalist(@datalist_file, True, 'testing', @dataset_dir) "
        "if os.path.exists(@datalist_file) else []",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": _component(f"monai.networks.nets.{model.name}", **dict(model.kwargs)),
        "network": "$@network_def.to(@device)",
        "preprocessing": preprocessing(config),
        "dataset": _component("Dataset", data="@datalist", transform="@preprocessing"),
        "dataloader": _component("DataLoader", dataset="@dataset", batch_size=1, shuffle=False, num_workers=0),
        "inferer": inferer(config),
        "postprocessing": postprocessing(config, activation),
        "handlers": [
            _component(
                "CheckpointLoader",
                load_path="$@bundle_root + '/models/model.pt'",
                load_dict={"model": "@network"},
                map_location="@device",
            ),
        ],
        "evaluator": _component(
            "SupervisedEvaluator",
            device="@device",
            val_data_loader="@dataloader",
            network="@network",
            inferer="@inferer",
            postprocessing="@postprocessing",
            val_handlers="@handlers",
            amp=False,
        ),
        # scripts/ must import before `run` too (MONAI adds the bundle's folder to the path only there)
        "initialize": ["$sys.path.insert(0, os.path.abspath(@bundle_root))", "$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run() if @datalist else open(@datalist_file)"],
    }


def _channel_names(config: Config) -> dict[str, str]:
    first = next(iter(config.groups.get("training", [])), None)
    channels = int(config.model.kwargs.get("in_channels", 1))
    if first is not None and len(first.images) == channels:
        return {
            str(i): f"channel {i}, as the file {path.name} of a training case" for i, path in enumerate(first.images)
        }
    if first is not None and len(first.images) == 1:
        return {
            str(i): f"channel {i} of one file, as {first.images[0].name} of a training case" for i in range(channels)
        }
    return {str(i): f"channel {i}" for i in range(channels)}


def _output_suffix(config: Config) -> str:
    """The ending of the label maps: the one `unet3d-predict` writes for the training cases' format."""
    first = next(iter(config.groups.get("training", [])), None)
    return label_map_suffix(first.images[0]) if first is not None else ".nii.gz"


def _regions_phrase(config: Config, activation: str) -> str:
    if activation == "softmax":
        return "exclusive classes"
    if any(parent is not None for parent in decoding.enclosing(config.regions)):
        return "nested regions: each inner region lies inside the one that encloses it"
    return "one region per channel"


def metadata(config: Config, activation: str, shape: list[int], export: Mapping[str, Any]) -> dict[str, Any]:
    """`configs/metadata.json`: MONAI's bundle metadata (the fields of its schema), plus the export's record."""
    names = config.region_names
    outputs = {str(i + int(activation == "softmax")): f"label values {name}" for i, name in enumerate(names)}
    if activation == "softmax":
        outputs = {"0": "background", **outputs}
    schemes = [s.get("scheme") for s in (export.get("channel_schemes") or [])]
    author = export["authors"]
    description = (
        f"{'Nested regions' if activation == 'sigmoid' else 'Exclusive classes'} "
        f"({', '.join(names)}) segmented by {config.model.name} from {len(_channel_names(config))} channel(s), "
        f"trained with unet3d {__version__}; inference.json writes each case's label map on its own grid."
    )
    return {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by unet3d {__version__} from {export['checkpoint']}"},
        "monai_version": _version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {
            "nibabel": _version("nibabel"),
            "pytorch-ignite": _version("ignite"),
            "fire": _version("fire"),
        },
        "name": f"unet3d {config.model.name} segmentation",
        "task": f"Segmentation of {', '.join(names)}",
        "description": description,
        "authors": author,
        "copyright": f"Copyright (c) {datetime.date.today().year} {author}",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if schemes and set(schemes) == {"ct"} else "magnitude",
                    "modality": "CT" if schemes and set(schemes) == {"ct"} else "any",
                    "num_channels": len(_channel_names(config)),
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": _channel_names(config),
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(outputs),
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": outputs,
                }
            },
        },
        MARKER: dict(export),
    }


def _version(module: str) -> str:
    import importlib.metadata

    names = {"ignite": "pytorch-ignite"}
    try:
        return importlib.metadata.version(names.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "not installed at export"


def readme(config: Config, activation: str, shape: list[int], export: Mapping[str, Any]) -> str:
    """`docs/README.md`: what the model does, how to run it, what it was checked against."""
    channels = "\n".join(f"- {i}: {name}" for i, name in _channel_names(config).items())
    groups = config.regions
    values = "\n".join(f"- {'+'.join(map(str, g))}: written as {g[0]}" for g in groups)
    return f"""# {config.model.name} segmentation, exported by unet3d {__version__}

Exported from `{export["checkpoint"]}` (epoch {export["checkpoint_epoch"]}). The TorchScript network differs from the
checkpoint's by at most {export["max_abs_difference"]:.3g} on a random {export["checked_on"]} input.

## Input
A case is its image files (or DICOM series folders), in channel order:
{channels}

The network sees patches of {shape} voxels after the preprocessing in `configs/inference.json`
(orientation, spacing, crop to the foreground, resize or pad, normalization with the training set's statistics).

## Output
One label map per case, on the grid of the case's first image (`<first file's name>_seg{_output_suffix(config)}` in
`output_dir`), with these values ({_regions_phrase(config, activation)}), 0 elsewhere:
{values}

## Run
Needs MONAI with `fire`, `pytorch-ignite` and `nibabel` (`pip install "monai[fire,ignite,nibabel]"`); unet3d is not
needed. Write the cases into a data list in MONAI's format,

    {{"testing": [{{"image": ["case1_channel0.nii.gz", "case1_channel1.nii.gz"]}}, {{"image": [...]}}]}}

(paths relative to `--dataset_dir`, or absolute), then

    python -m monai.bundle run --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE \\
        --datalist_file cases.json --dataset_dir DATA --output_dir OUT

This reproduces `unet3d-predict --no_postprocessing` with this one model (no test-time mirroring): the same transforms
with the same numbers, so the label maps are the same. `scripts/` holds unet3d's foreground crop, per-channel
normalization and decoding of nested regions, which need torch and MONAI only. `models/model.ts` is the same network as
TorchScript for runtimes without Python's MONAI (the metadata and `inference.json` are stored inside it).
"""


def licence(license_file: Path | None) -> str:
    """`LICENSE`: the given licence of the weights, else a statement that none was given, and the scripts' licence."""
    scripts = (
        "The files in scripts/ are part of unet3d, released under the MIT licence (https://opensource.org/license/mit)."
    )
    if license_file is not None:
        return license_file.read_text().rstrip() + "\n\n" + scripts + "\n"
    return (
        "No licence was given for the model's weights when this bundle was exported; ask the people who trained it "
        "before you share or use it.\n\n" + scripts + "\n"
    )


def _exported_here(folder: Path) -> bool:
    """Whether `folder` holds an earlier unet3d bundle export (its metadata records one)."""
    try:
        written = json.loads((folder / "configs" / "metadata.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and isinstance(written.get(MARKER), dict)


def _check_parsed(inference: Path, network: torch.nn.Module, example: torch.Tensor, tolerance: float) -> None:
    """Build `network_def` as MONAI's parser does, load `models/model.pt` into it, and compare it with the checkpoint's
    network: a network argument MONAI's parser reads otherwise fails here, not at the user's first run."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(inference))
    built = parser.get_parsed_content("network_def")
    built.load_state_dict(torch.load(inference.parents[1] / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        difference = float((built.eval()(example) - network(example)).abs().max())
    if not difference <= tolerance:
        raise CheckpointError(
            f"{inference}: network_def with models/model.pt differs from the checkpoint's network by {difference:.3g}"
        )


def export_bundle(
    model_filename: str | Path,
    folder: str | Path,
    config_filename: str | Path | None = None,
    tolerance: float = TOLERANCE,
    overwrite: bool = False,
    authors: str | None = None,
    license_file: str | Path | None = None,
) -> ExportResult:
    """Write a MONAI bundle of a checkpoint's network into `folder` (see the module's docstring), checked: the
    TorchScript and MONAI's own build of `network_def` with the saved weights against the checkpoint's network.
    Files are written one by one, atomically, the metadata first, so an interrupted export is completed by the next;
    they never replace an input of the model or a work dir's files, and an existing file that an earlier bundle
    export did not write only with `overwrite`."""
    model_filename, folder = Path(model_filename), Path(folder)
    config_path = None if config_filename is None else Path(config_filename)
    license_path = None if license_file is None else Path(license_file)
    if license_path is not None and not license_path.is_file():
        raise ConfigError(f"--license: {license_path} is not a file")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output: {folder} is a file; a bundle is a folder")
    config = config_for([model_filename], config_path)
    if spatial_dims(config.model) not in (2, 3):
        raise ConfigError(f"model: a bundle needs a 2D or 3D network, {config.model.name} has other dimensions")
    files = bundle_files(folder)
    check_outputs(
        files,
        models_inputs([model_filename], config, config_path),
        replace=overwrite,
        made_here=lambda path: _exported_here(folder),
    )
    check_writable(folder)
    network, saved = load_network(model_filename, config)
    shape = patch_size(config)
    example = example_input(config, shape)
    with torch.no_grad():
        expected = network(example)
        traced = trace(network, example)
        difference = float((traced(example) - expected).abs().max())
    if not difference <= tolerance:
        raise CheckpointError(
            f"{model_filename}: the TorchScript network differs from the checkpoint's by {difference:.3g}"
        )
    activation = activation_from_loss(config.loss)
    export = {
        "exported_by": f"unet3d {__version__}, torch {torch.__version__}",
        "checkpoint": model_filename.name,
        "checkpoint_epoch": saved.epoch if saved.is_training_state else None,
        "max_abs_difference": difference,
        "checked_on": list(example.shape),
        "channel_schemes": channel_schemes(config),
        "authors": authors or getpass.getuser(),
    }
    meta = metadata(config, activation, shape, export)
    inference = inference_config(config, activation)
    atomic_write_json(folder / "configs" / "metadata.json", meta)
    atomic_write_json(folder / "configs" / "inference.json", inference)
    atomic_save(folder / "models" / "model.pt", lambda tmp: torch.save(network.state_dict(), tmp))
    _check_parsed(folder / "configs" / "inference.json", network, example, tolerance)
    from monai.data import save_net_with_metadata

    extra = {"inference.json": json.dumps(inference).encode()}
    atomic_write(
        folder / "models" / "model.ts",
        lambda handle: save_net_with_metadata(traced, handle, meta_values=meta, more_extra_files=extra),
    )
    atomic_write_text(
        folder / "scripts" / "__init__.py", f'"""unet3d {__version__}\'s modules that this bundle\'s configs name."""\n'
    )
    for name, module in SCRIPTS.items():
        atomic_write_text(folder / "scripts" / f"{name}.py", Path(module.__file__).read_text())
    atomic_write_text(folder / "docs" / "README.md", readme(config, activation, shape, export))
    atomic_write_text(folder / "LICENSE", licence(license_path))
    return ExportResult(folder, folder / "configs" / "metadata.json", tuple(example.shape), difference)
