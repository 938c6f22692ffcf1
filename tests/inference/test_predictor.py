"""The Predictor (unet3d/inference/predictor.py): ensembles average probabilities, TTA undoes its mirroring, and the
precision follows the training's."""

from __future__ import annotations

import torch

from unet3d.inference.predictor import Predictor, mirror_axes


class Constant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2, *x.shape[2:]), self.value) + x[:, :1]


def test_ensemble_averages_probabilities_and_tta_undoes_each_mirroring():
    from monai.inferers import SimpleInferer

    image = torch.randn(1, 1, 4, 5, 6)
    single = [
        Predictor([Constant(v)], SimpleInferer(), "sigmoid", torch.device("cpu")).probabilities(image)
        for v in (-1.0, 2.0)
    ]
    both = Predictor([Constant(-1.0), Constant(2.0)], SimpleInferer(), "sigmoid", torch.device("cpu"))
    torch.testing.assert_close(both.probabilities(image), (single[0] + single[1]) / 2)
    mirrored = Predictor([Constant(0.5)], SimpleInferer(), "sigmoid", torch.device("cpu"), tta=True)
    torch.testing.assert_close(mirrored.probabilities(image), torch.sigmoid(image[:, :1] + 0.5).expand(1, 2, 4, 5, 6))
    assert len(mirror_axes(3)) == 8 and mirror_axes(2) == [(), (2,), (3,), (2, 3)]


def test_prediction_autocasts_in_the_precision_the_model_was_trained_in(monkeypatch):
    """A `training.amp: "bf16"` model is predicted (and full-validated) in bfloat16, not float16; on the CPU there is
    no autocast at all."""
    from contextlib import nullcontext

    from monai.inferers import SimpleInferer

    import unet3d.inference.predictor as predict_module
    from unet3d.devices import amp_dtype

    chosen = []

    def spy(dtype, device):
        chosen.append(dtype)
        return nullcontext()

    monkeypatch.setattr(predict_module, "autocast", spy)
    image = torch.randn(1, 1, 4, 5, 6)
    for amp in ("bf16", "fp16", True, False):
        predictor = Predictor([Constant(0.0)], SimpleInferer(), "sigmoid", torch.device("cpu"), amp=amp)
        predictor._forward(predictor.models[0], image, torch.device("cuda"))  # what a GPU run would ask for
        predictor._forward(predictor.models[0], image, torch.device("cpu"))
    assert chosen == [torch.bfloat16, None, torch.float16, None, torch.float16, None, None, None]
    assert amp_dtype("bf16", torch.device("cuda")) is torch.bfloat16


def test_on_the_cpu_windows_go_one_at_a_time_unless_asked(tiny_data, tmp_path):
    from tests.conftest import tiny_config
    from unet3d.config.load import parse_config
    from unet3d.inference.predictor import make_predictor
    from unet3d.models import build_model

    folder, entries = tiny_data
    raw = tiny_config(entries)
    raw["inference"] = {"name": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2}
    config = parse_config(raw, folder)
    weights = tmp_path / "model.pth"
    torch.save(build_model(config.model).state_dict(), weights)
    cpu = torch.device("cpu")
    assert make_predictor(config, [weights], cpu).inferer.sw_batch_size == 1
    assert make_predictor(config, [weights], cpu, sw_batch_size=3).inferer.sw_batch_size == 3
