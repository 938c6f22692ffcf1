"""Probabilities for a volume from one model or an ensemble: sliding-window inference, optional mirror
test-time augmentation, AMP on accelerators, and a CPU fallback when the accelerator runs out of memory.

Probabilities are in the preprocessed space of the case (after reorientation, cropping and resizing); `export`
brings them back to the case's original space.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.inferers import Inferer

from unet3d.checkpoint import Checkpoint, load_model_weights, read_checkpoint
from unet3d.config.schema import Config
from unet3d.data.decoding import activate
from unet3d.devices import amp_dtype, autocast, empty_cache
from unet3d.errors import CheckpointError, out_of_memory
from unet3d.inferers import build_inferer
from unet3d.losses import activation_from_loss
from unet3d.models import build_model

log = logging.getLogger("unet3d")


@dataclass
class Predictor:
    """Models (in eval mode) and how to run them."""

    models: list[torch.nn.Module]
    inferer: Inferer
    activation: str
    device: torch.device
    tta: bool = False
    amp: bool | str = False  # training.amp: true/'fp16' or 'bf16' (on accelerators), as the model was trained

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """(1, C_in, *spatial) → (1, C_out, *spatial) probabilities averaged over models (and mirrorings)."""
        try:
            return self._average(image, self.device)
        except RuntimeError as error:  # torch.OutOfMemoryError on CUDA; a RuntimeError saying so on other devices
            if self.device.type == "cpu" or not out_of_memory(error):
                raise
            log.warning(
                "out of %s memory for a %s volume; finishing this case on the CPU",
                self.device.type,
                tuple(image.shape[2:]),
            )
            empty_cache(self.device)
            return self._average(image, torch.device("cpu"))

    def _average(self, image: torch.Tensor, device: torch.device) -> torch.Tensor:
        image = image.to(device)
        total, count = None, 0
        for model in self.models:
            model.to(device)
            for axes in mirror_axes(image.ndim - 2) if self.tta else [()]:
                flipped = torch.flip(image, axes) if axes else image
                probabilities = (
                    torch.flip(self._forward(model, flipped, device), axes)
                    if axes
                    else self._forward(model, flipped, device)
                )
                total = probabilities if total is None else total + probabilities
                count += 1
        assert total is not None
        return total / count

    @torch.no_grad()
    def _forward(self, model: torch.nn.Module, image: torch.Tensor, device: torch.device) -> torch.Tensor:
        with autocast(amp_dtype(self.amp, device, warn=False), device):
            logits = self.inferer(image, model)
        return activate(torch.as_tensor(logits), self.activation)


def mirror_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every combination of flipped spatial axes (tensor dims 2..), the identity first: 8 for 3D, 4 for 2D."""
    dims = range(2, 2 + spatial_dims)
    return [combo for n in range(spatial_dims + 1) for combo in itertools.combinations(dims, n)]


def check_model_matches_config(saved: Checkpoint, config: Config, path: Path) -> None:
    """Compare the labels and channels a checkpoint was trained with to the config used for prediction."""
    trained = saved.config
    if trained is None:
        return
    trained_labels = (trained.get("dataset") or {}).get("labels")
    if trained_labels is not None and trained_labels != config.dataset.labels:
        raise CheckpointError(
            f"{path}: model was trained with labels {trained_labels}, the config has {config.dataset.labels}"
        )
    for key in ("in_channels", "out_channels"):
        was, now = (trained.get("model") or {}).get(key), config.model.kwargs.get(key)
        if was is not None and now is not None and was != now:
            raise CheckpointError(f"{path}: model has {key} {was}, the config's model.{key} is {now}")


def load_models(paths: Sequence[Path], config: Config, device: torch.device) -> list[torch.nn.Module]:
    """Build the config's network once per checkpoint and load its weights (weights_only), in eval mode."""
    models = []
    for path in paths:
        saved = read_checkpoint(path, map_location="cpu")
        check_model_matches_config(saved, config, Path(path))
        model = build_model(config.model)
        load_model_weights(model, saved.model, Path(path))
        models.append(model.to(device).eval())
    return models


def make_predictor(
    config: Config,
    model_paths: Sequence[Path],
    device: torch.device,
    tta: bool = False,
    sw_batch_size: int | None = None,
    stitch_device: torch.device | None = None,
    amp: bool | str | None = None,
    activation: str | None = None,
) -> Predictor:
    """A Predictor for the config's network and inferer, with the weights of each model path (an ensemble).

    On the CPU the windows go through the network one at a time unless `sw_batch_size` says otherwise: its threads
    already share each window, and two 128³ windows at once took 17-20 s against 2 x 7.2 s (DynUNet 32-320, 2 cores)."""
    if not model_paths:
        raise CheckpointError("no model file to predict with")
    if sw_batch_size is None and device.type == "cpu":
        sw_batch_size = 1
    return Predictor(
        models=load_models(model_paths, config, device),
        inferer=build_inferer(config, sw_batch_size=sw_batch_size, device=stitch_device),
        activation=activation or activation_from_loss(config.loss),
        device=device,
        tta=tta,
        amp=config.training.amp if amp is None else amp,
    )
