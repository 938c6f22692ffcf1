"""`unet3d-export` as a library function: a trained network as TorchScript or ONNX, checked, with a sidecar.

The network is exported in eval mode, so DynUNet's deep-supervision heads are left out, with the batch and spatial
axes free (a sliding window of the training patch size is what it was trained on). The export is run on a random
input of that size and compared with the checkpoint's network; the largest difference is reported and recorded. The
sidecar JSON (`<output>.json`) holds what a deployer needs to reproduce the preprocessing and the decoding without
unet3d: the input channels in order, orientation, spacing, cropping, normalization with its statistics, the sliding
window, the activation, and how channels become label values (including the nesting rule).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

from unet3d.atomic import atomic_save, atomic_write_json, check_writable
from unet3d.checkpoint import Checkpoint, load_model_weights, read_checkpoint
from unet3d.config.schema import Config
from unet3d.data.decoding import enclosing
from unet3d.data.foreground import FOREGROUND_TOLERANCE
from unet3d.data.transforms import normalization_transform
from unet3d.errors import CheckpointError, ConfigError
from unet3d.inferers import build_inferer
from unet3d.losses import activation_from_loss
from unet3d.models import build_model, spatial_dims, total_downsampling
from unet3d.normalization import ChannelNormalized
from unet3d.output_guard import check_outputs
from unet3d.prediction import config_for, models_inputs
from unet3d.version import __version__

log = logging.getLogger("unet3d")
FORMATS = ("torchscript", "onnx", "bundle")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """Where the network and its sidecar went, the input it was checked on, and how far it was from the checkpoint."""

    path: Path
    sidecar: Path
    input_shape: tuple[int, ...]
    max_difference: float


def patch_size(config: Config) -> list[int]:
    """The spatial input size the network was trained on: the sliding window's `roi_size`, else `desired_shape`,
    else the smallest size the network's downsampling allows (16x its total stride)."""
    if config.inference is not None and config.inference.kwargs.get("roi_size"):
        return [int(n) for n in config.inference.kwargs["roi_size"]]
    if config.dataset.desired_shape:
        return [int(n) for n in config.dataset.desired_shape]
    dims = spatial_dims(config.model)
    return [16 * t for t in (total_downsampling(config.model, dims) or [1] * dims)]


def example_input(config: Config, shape: Sequence[int]) -> torch.Tensor:
    """The seeded random input of one patch that an export is compared with the checkpoint's network on."""
    channels = int(config.model.kwargs.get("in_channels", 1))
    return torch.randn(1, channels, *shape, generator=torch.Generator().manual_seed(0))


def load_network(model_filename: Path, config: Config) -> tuple[torch.nn.Module, Checkpoint]:
    """The config's network with the checkpoint's weights, in eval mode, and the checkpoint."""
    saved = read_checkpoint(model_filename)
    network = build_model(config.model)
    load_model_weights(network, saved.model, model_filename)
    return network.eval(), saved


def trace(network: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """The network as TorchScript, traced on `example` (its outputs are checked against the network's by the caller)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation and tracer notes
        return torch.jit.trace(network, example)


def _save_torchscript(network: torch.nn.Module, example: torch.Tensor, output: Path) -> torch.nn.Module:
    traced = trace(network, example)
    atomic_save(output, lambda tmp: torch.jit.save(traced, tmp))
    return torch.jit.load(str(output))


def _save_onnx(network: torch.nn.Module, example: torch.Tensor, output: Path) -> Any:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--format onnx: needs {', '.join(missing)}: pip install 'unet3d[onnx]'")
    import onnxruntime

    dim = torch.export.Dim
    axes = {0: dim("batch"), **{axis: dim.AUTO for axis in range(2, example.ndim)}}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_save(
            output,
            lambda tmp: torch.onnx.export(
                network,
                (example,),
                tmp,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=(axes,),
                dynamo=True,
                external_data=False,
                verbose=False,
            ),
        )
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def channel_schemes(config: Config) -> list[dict[str, Any]] | None:
    """The normalization as one scheme per input channel, in `unet3d.normalization`'s terms, so that a deployer needs
    no MONAI: 'ct', 'zscore' (with 'nonzero'; 'joint' when one mean and sd serve every channel), 'none',
    'rescale_to_0_1', 'rgb_to_0_1'. None for a normalization with no such description."""
    dataset, channels = config.dataset, int(config.model.kwargs.get("in_channels", 1))
    if dataset.normalization is None:
        return [{"scheme": "none"}] * channels
    cls = normalization_transform(dataset)
    kwargs = dataset.normalization_kwargs
    if isinstance(cls, ChannelNormalized):
        return cls.schemes * channels if len(cls.schemes) == 1 else list(cls.schemes)
    if (
        type(cls).__name__ == "NormalizeIntensityd"
        and kwargs.get("subtrahend") is None
        and kwargs.get("divisor") is None
    ):
        joint = not kwargs.get("channel_wise", False)
        return [{"scheme": "zscore", "nonzero": bool(kwargs.get("nonzero", False)), "joint": joint}] * channels
    return None


def inferer_description(config: Config) -> dict[str, Any]:
    """How the network meets a whole volume: a Gaussian-weighted sliding window (MONAI's, with its numbers) or the
    whole volume at once."""
    inferer = build_inferer(config)
    if isinstance(inferer, SlidingWindowInferer):
        return {
            "name": "sliding_window",
            "roi_size": [int(n) for n in inferer.roi_size],
            "overlap": float(inferer.overlap if not isinstance(inferer.overlap, Sequence) else inferer.overlap[0]),
            "mode": str(getattr(inferer.mode, "value", inferer.mode)),
            "sigma_scale": float(
                inferer.sigma_scale if not isinstance(inferer.sigma_scale, Sequence) else inferer.sigma_scale[0]
            ),
            "padding": "constant 0 around a volume smaller than the window, half before (rounded down), half after",
            "weights": "gaussian: per axis exp(-x^2 / (2 (sigma_scale x size)^2)) at x = -(size - 1) / 2 ... "
            "(size - 1) / 2, multiplied over the axes, then raised to at least max(its minimum, 0.001); the "
            "volume is the weighted mean of the windows' outputs",
        }
    if type(inferer).__name__ == "SimpleInferer":
        return {"name": "whole_volume"}
    return {"name": type(inferer).__name__, "kwargs": dict(config.inference.kwargs) if config.inference else {}}


def sidecar(config: Config, saved: Checkpoint, shape: list[int], result: dict[str, Any]) -> dict[str, Any]:
    """What a deployer needs besides the network: inputs, preprocessing, sliding window, outputs and decoding."""
    activation = activation_from_loss(config.loss)
    dataset = config.dataset
    groups, names = dataset.regions, dataset.region_names
    first_case = next(iter(config.groups.get("training", [])), None)
    channels = [
        {"channel": index, "label_values": list(group), "writes": group[0], "name": name}
        for index, (group, name) in enumerate(zip(groups, names, strict=True), start=int(activation == "softmax"))
    ]
    if activation == "softmax":
        channels.insert(0, {"channel": 0, "label_values": [0], "writes": 0, "name": "background"})
        decoding = (
            "in the original space, channel 0 (background) gains what the inverted crop and resampling left out "
            "(1 - the channels' sum, at least 0); then the arg-max over the channels; each channel writes its first "
            "label value (channel 0: background, 0)"
        )
    else:
        parents = enclosing(groups)
        for channel, parent in zip(channels, parents, strict=True):
            channel["inside_channel"] = parent
        decoding = (
            "sigmoid per channel, threshold 0.5; regions chosen from the outside in: among the regions no other "
            "encloses, the most probable above the threshold wins (ties: the first channel); inside it the most "
            "probable of the regions it directly encloses ('inside_channel') that is above the threshold, and so on; "
            "an inner channel where its enclosing region is not chosen is ignored; background writes 0"
        )
    return {
        "exported_by": f"unet3d {__version__}, torch {torch.__version__}",
        "checkpoint_epoch": saved.epoch if saved.is_training_state else None,
        **result,
        "input": {
            "axes": ["batch", "channel", *["x", "y", "z"][: len(shape)]],
            "channels": config.model.kwargs.get("in_channels"),
            "channel_order_example": [p.name for p in first_case.images] if first_case is not None else None,
            "dtype": "float32",
        },
        "preprocessing": {
            "orientation": dataset.orientation,
            "spacing_mm": dataset.spacing,
            "crop_foreground": dataset.crop_foreground,
            "foreground_percentile": dataset.foreground_percentile if dataset.crop_foreground else None,
            "foreground_tolerance": FOREGROUND_TOLERANCE,
            "desired_shape": dataset.desired_shape,
            "resample_to_desired_shape": dataset.resample,
            "normalization": {"name": dataset.normalization, "kwargs": dataset.normalization_kwargs},
            "channel_schemes": channel_schemes(config),
            "random_crop": dataset.random_crop,
            "order": "load channels, reorient, resample (images linear), crop to foreground, resize or pad, normalize",
        },
        "inferer": inferer_description(config),
        "output": {"activation": activation, "channels": channels, "decoding": decoding},
    }


def export_model(
    model_filename: str | Path,
    output: str | Path,
    format: str = "torchscript",
    config_filename: str | Path | None = None,
    tolerance: float = TOLERANCE,
    overwrite: bool = False,
    authors: str | None = None,
    license_file: str | Path | None = None,
) -> ExportResult:
    """Export a checkpoint's network for inference, check it against the checkpoint on a random patch-sized input,
    and write the sidecar `<output>.json`. A CheckpointError when the export differs by more than `tolerance`.
    The output and sidecar never replace the checkpoint, its config, a case of its config or any work dir's files;
    an existing pair from an earlier export is replaced, any other existing file only with `overwrite` (see
    `unet3d.output_guard`). `format="bundle"` writes a MONAI bundle into the folder `output` instead (see
    `unet3d.deployment.bundle`; `authors` and `license_file` go into it), and the result's sidecar is its metadata."""
    model_filename, output = Path(model_filename), Path(output)
    if format not in FORMATS:
        raise ConfigError(f"--format: expected one of {list(FORMATS)}, got {format!r}")
    if format == "bundle":
        from unet3d.deployment.bundle import export_bundle

        return export_bundle(model_filename, output, config_filename, tolerance, overwrite, authors, license_file)
    sidecar_path = output.with_name(output.name + ".json")
    config_path = None if config_filename is None else Path(config_filename)
    config = config_for([model_filename], config_path)
    check_outputs(
        {output: "the exported network", sidecar_path: "its sidecar"},
        models_inputs([model_filename], config, config_path),
        replace=overwrite,
        made_here=lambda path: _exported_here(sidecar_path, output),
    )
    check_writable(output.parent)
    network, saved = load_network(model_filename, config)
    shape = patch_size(config)
    example = example_input(config, shape)
    with torch.no_grad():
        expected = network(example)
        output.parent.mkdir(parents=True, exist_ok=True)
        saver = _save_torchscript if format == "torchscript" else _save_onnx
        exported = saver(network, example, output)
        difference = float((exported(example) - expected).abs().max())
    if not difference <= tolerance:
        raise CheckpointError(f"{output}: the exported network differs from the checkpoint's by {difference:.3g}")
    result = {
        "format": format,
        "file": output.name,
        "max_abs_difference": difference,
        "checked_on": list(example.shape),
    }
    atomic_write_json(sidecar_path, sidecar(config, saved, shape, result))
    return ExportResult(output, sidecar_path, tuple(example.shape), difference)


def _exported_here(sidecar_path: Path, output: Path) -> bool:
    """Whether `output` and its sidecar are an earlier export's: the sidecar says unet3d exported that file."""
    try:
        written = json.loads(sidecar_path.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(written, dict)
        and str(written.get("exported_by", "")).startswith("unet3d ")
        and written.get("file") == output.name
    )
