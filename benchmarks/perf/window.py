"""Sliding-window prediction of a volume against the network's bare forward passes over the same windows."""

from __future__ import annotations

import logging
from typing import Any

import torch
from monai.data.utils import compute_importance_map
from monai.inferers import SlidingWindowInferer
from monai.utils import ensure_tuple

from perf.timing import median_time
from unet3d.config.schema import Config
from unet3d.data.datasets import case_items
from unet3d.data.transforms import build_transforms
from unet3d.devices import amp_dtype, autocast
from unet3d.inference.predictor import Predictor
from unet3d.inferers import build_inferer
from unet3d.losses import activation_from_loss
from unet3d.training.components import Components

log = logging.getLogger("unet3d")


class WindowRecorder(torch.nn.Module):
    """Passes inputs to the model and records the shape of every batch of windows it is given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def sliding_window(
    components: Components, config: Config, device: torch.device, amp: bool, sw_batch_size: int | None, repeats: int
) -> dict[str, Any]:
    """`Predictor.probabilities` of one validation volume, preprocessed as for prediction, against the model's pure
    forward passes over the same number and size of windows (random tensors, same batches of windows)."""
    case = config.groups["validation"][0]
    activation = activation_from_loss(config.loss)
    dataset = config.dataset_for("validation")
    transform = build_transforms(dataset, with_label=False, softmax=activation == "softmax", augment=False)
    image = transform(case_items([case], with_label=False)[0])["image"].unsqueeze(0).as_tensor()
    model = components.model.eval()
    inferer = build_inferer(config, sw_batch_size=sw_batch_size)
    recorder = WindowRecorder(model)
    Predictor([recorder], inferer, activation, device, amp=amp).probabilities(image)
    windows = recorder.shapes
    predictor = Predictor([model], inferer, activation, device, amp=amp)
    prediction, prediction_times = median_time(device, lambda: predictor.probabilities(image), repeats)
    inputs = [torch.randn(shape, device=device) for shape in windows]

    @torch.no_grad()
    def forward() -> None:
        with autocast(amp_dtype(amp, device, warn=False), device):
            for x in inputs:
                model(x)

    pure, forward_times = median_time(device, forward, repeats)
    result: dict[str, Any] = {
        "case_id": case.case_id,
        "image_shape": list(image.shape),
        "inferer": type(inferer).__name__,
        "n_forward_calls": len(windows),
        "n_windows": sum(shape[0] for shape in windows),
        "window_batch_shapes": [list(s) for s in windows],
        "prediction_seconds": prediction,
        "prediction_seconds_all": prediction_times,
        "forward_seconds": pure,
        "forward_seconds_all": forward_times,
        "prediction_over_forward": prediction / pure,
        "amp": amp,
    }
    if isinstance(inferer, SlidingWindowInferer):
        result.update(
            roi_size=list(ensure_tuple(inferer.roi_size)),
            overlap=inferer.overlap,
            mode=str(inferer.mode.value if hasattr(inferer.mode, "value") else inferer.mode),
            sw_batch_size=inferer.sw_batch_size,
            cached_weight_map=inferer.roi_weight_map is not None,
        )
        if inferer.roi_weight_map is None:
            roi = ensure_tuple(inferer.roi_size)
            weight_seconds, _ = median_time(
                device,
                lambda: compute_importance_map(roi, mode=inferer.mode, sigma_scale=inferer.sigma_scale, device=device),
                repeats,
            )
            result["importance_map_seconds_per_call"] = weight_seconds
    model.train()
    return result
