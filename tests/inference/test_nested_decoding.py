"""Every path that turns network outputs into label maps or region Dice keeps nested regions nested.

The model here is what an undertrained network looks like (issue 10): its whole-tumour channel finds the bright
tumour, and its inner channels fire everywhere. A label map may then hold an inner label only inside the predicted
whole tumour, so each written region equals the voxels where it and all its enclosing channels are predicted.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import SimpleInferer
from PIL import Image

from unet3d.config.load import parse_config
from unet3d.data.image_io import read_array
from unet3d.data.labels import channel_groups, encode, region_names
from unet3d.data.synthetic import write_dataset
from unet3d.inference.predictor import Predictor
from unet3d.inference.writing import iter_predictions, predict_cases
from unet3d.losses import build_loss
from unet3d.training.loop import validate

BRATS = channel_groups([2, 1, 4], hierarchy=True)
CPU = torch.device("cpu")


class Undertrained(torch.nn.Module):
    """Whole tumour where the first modality is bright; the inner channels fire everywhere."""

    def __init__(self, n_out: int = 3, shift: float = 0.0) -> None:
        super().__init__()
        self.n_out, self.shift = n_out, shift
        self.weight = torch.nn.Parameter(torch.ones(1))  # something to move to a device

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        whole = 6.0 * (image[:, :1] - 1.0 + self.shift)
        return torch.cat([whole, torch.full_like(whole, 4.0).expand(-1, self.n_out - 1, *whole.shape[2:])], 1)


def nested_config(cases: list[dict], spatial_dims: int, in_channels: int, labels: list, **dataset) -> dict:
    return {
        "model": {
            "name": "UNet",
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": len(labels),
            "channels": [4, 8],
            "strides": [2],
        },
        "optimizer": {"name": "Adam"},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        "dataset": {
            "labels": labels,
            "setup_label_hierarchy": True,
            "normalization_kwargs": {"channel_wise": True},
            **dataset,
        },
        "training_filenames": cases,
    }


def assert_nested(label_map: np.ndarray, probabilities: np.ndarray, groups, threshold: float = 0.5) -> None:
    """Each region of the label map is exactly where its channel and every enclosing channel are above threshold."""
    inside = np.ones(label_map.shape, bool)
    for index, group in enumerate(groups):
        inside &= probabilities[index] > threshold
        np.testing.assert_array_equal(np.isin(label_map, group), inside, err_msg=f"region {group}")


@pytest.fixture(scope="module")
def hard_cases(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Cases unlike the easy defaults: CT-like and shifted backgrounds, oblique and thick-slice voxels."""
    folder = tmp_path_factory.mktemp("hard")
    entries = write_dataset(
        folder,
        2,
        seed=5,
        shape_range=(16, 20),
        spacing=(0.8, 0.8, 5.0),
        background_range=(-1000, 300),
        oblique_degrees=15.0,
    )
    return folder, entries


@pytest.mark.parametrize("tta", [False, True])
def test_nifti_predictions_of_an_undertrained_model_are_nested(hard_cases, tmp_path, tta):
    folder, entries = hard_cases
    config = parse_config(
        nested_config(
            entries, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True, crop_foreground=True, orientation="RAS"
        ),
        folder,
    )
    # An ensemble of two models whose whole-tumour channels disagree, with and without mirroring: averaged, then
    # decoded.
    predictor = Predictor([Undertrained(), Undertrained(shift=0.3)], SimpleInferer(), "sigmoid", CPU, tta=tta)
    cases = config.groups["training"]
    predictions = list(iter_predictions(predictor, config, cases))
    for prediction in predictions:
        probabilities = prediction.probabilities.numpy()
        assert 0 < (probabilities[0] > 0.5).mean() < 0.5, "the whole-tumour channel should find a part of the head"
        assert (probabilities[1:] > 0.5).all(), "the inner channels should fire everywhere"
        assert_nested(prediction.label_map.numpy(), probabilities, BRATS)
    written = predict_cases(predictor, config, cases, tmp_path / "out")
    for path, prediction in zip(written, predictions, strict=True):
        np.testing.assert_array_equal(read_array(path), prediction.label_map.numpy())


def test_threshold_applies_to_every_nested_channel(hard_cases):
    folder, entries = hard_cases
    config = parse_config(nested_config(entries, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True), folder)
    predictor = Predictor([Undertrained()], SimpleInferer(), "sigmoid", CPU)
    for threshold in (0.3, 0.9):
        for prediction in iter_predictions(predictor, config, config.groups["training"][:1], threshold=threshold):
            assert_nested(prediction.label_map.numpy(), prediction.probabilities.numpy(), BRATS, threshold)


def test_png_pictures_with_nested_labels_are_nested(tmp_path):
    rows, columns = np.mgrid[:20, :30]
    cases = []
    for i in range(2):
        mask = np.zeros((20, 30), np.uint8)
        mask[3 + i : 15, 4 : 20 + i] = 2
        mask[6:10, 8:12] = 1
        image = np.where(mask > 0, 230, 40) + 5 * np.sin(rows + columns)
        Image.fromarray(image.astype(np.uint8)).save(tmp_path / f"p{i}.png")
        Image.fromarray(mask).save(tmp_path / f"p{i}_mask.png")
        cases.append({"case_id": f"p{i}", "image": [f"p{i}.png"], "label": f"p{i}_mask.png"})
    config = parse_config(nested_config(cases, 2, 1, [2, 1], desired_shape=[16, 16], resample=True), tmp_path)
    groups = channel_groups([2, 1], hierarchy=True)
    predictor = Predictor([Undertrained(n_out=2)], SimpleInferer(), "sigmoid", CPU)
    for prediction in iter_predictions(predictor, config, config.groups["training"]):
        assert (prediction.probabilities[1] > 0.5).all()
        assert_nested(prediction.label_map.numpy(), prediction.probabilities.numpy(), groups)
    for path in predict_cases(predictor, config, config.groups["training"], tmp_path / "out"):
        picture = np.asarray(Image.open(path))
        assert path.suffix == ".png" and picture.shape == (20, 30)
        # the inner channel fires everywhere, so the whole predicted region is inner: and nothing outside it
        assert set(np.unique(picture).tolist()) == {0, 1}


def test_metaimage_predictions_are_nested(hard_cases, tmp_path):
    itk = pytest.importorskip("itk")
    folder, entries = hard_cases
    cases = []
    for entry in entries:
        images = []
        for name in [*entry["image"], entry["label"]]:
            data = read_array(folder / name).astype(np.float32 if name in entry["image"] else np.uint8)
            image = itk.image_from_array(np.ascontiguousarray(np.transpose(data)))
            image.SetSpacing([0.8, 0.8, 5.0])
            target = tmp_path / Path(name).name.replace(".nii.gz", ".mhd")
            itk.imwrite(image, str(target))
            images.append(target.name)
        cases.append({"image": images[:-1], "label": images[-1]})
    config = parse_config(nested_config(cases, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True), tmp_path)
    predictor = Predictor([Undertrained()], SimpleInferer(), "sigmoid", CPU)
    predictions = list(iter_predictions(predictor, config, config.groups["training"]))
    written = predict_cases(predictor, config, config.groups["training"], tmp_path / "out")
    for path, prediction in zip(written, predictions, strict=True):
        assert path.suffix == ".mhd"
        assert_nested(prediction.label_map.numpy(), prediction.probabilities.numpy(), BRATS)
        np.testing.assert_array_equal(read_array(path), prediction.label_map.numpy())


def test_training_log_dice_scores_the_nested_decoding(hard_cases):
    """validate(): an inner channel firing everywhere scores as the decoded label map does (inside the whole tumour),
    not as the channel alone would."""
    folder, entries = hard_cases
    config = parse_config(nested_config(entries, 3, 4, [2, 1, 4], desired_shape=[16, 16, 16], resample=True), folder)
    from unet3d.data.datasets import case_items
    from unet3d.data.transforms import build_transforms

    transform = build_transforms(config.dataset, with_label=True, softmax=False, augment=False)
    dataset = Dataset(case_items(config.groups["training"], with_label=True), transform)
    parts = SimpleNamespace(
        network=Undertrained(),
        val_loader=DataLoader(dataset, batch_size=2),
        inferer=SimpleInferer(),
        eval_loss=build_loss(config.loss),
        activation="sigmoid",
        groups=BRATS,
        channel_names=region_names(BRATS),
        amp_dtype=None,
    )
    row = validate(parts, CPU)
    expected = {name: [] for name in region_names(BRATS)}
    for item in dataset:
        probabilities = torch.sigmoid(Undertrained()(item["image"][None]))[0]
        truth = item["label"].bool()
        inside = torch.ones_like(truth[0])
        for index, name in enumerate(region_names(BRATS)):
            inside = inside & (probabilities[index] > 0.5)
            total = inside.sum() + truth[index].sum()
            expected[name].append(float(2 * (inside & truth[index]).sum() / total) if total else 1.0)
    for name, values in expected.items():
        assert row[f"val_dice_{name}"] == pytest.approx(np.mean(values), abs=1e-5)
    alone = torch.sigmoid(Undertrained()(dataset[0]["image"][None]))[0, 1] > 0.5
    assert alone.all()  # the channel alone would have claimed the whole volume as tumour core


def test_softmax_grouped_labels_decode_to_each_group_s_first_value(hard_cases):
    folder, entries = hard_cases
    raw = nested_config(entries, 3, 4, [[2, 1], 4], desired_shape=[16, 16, 16], resample=True)
    raw["dataset"]["setup_label_hierarchy"] = False
    raw["model"]["out_channels"] = 3
    raw["loss"] = {"name": "DiceLoss", "softmax": True, "to_onehot_y": False}
    config = parse_config(raw, folder)
    predictor = Predictor([Undertrained()], SimpleInferer(), "softmax", CPU)
    for prediction in iter_predictions(predictor, config, config.groups["training"]):
        probabilities = prediction.probabilities
        expected = torch.tensor([0, 2, 4], dtype=torch.int16)[probabilities.argmax(0)]
        assert torch.equal(prediction.label_map, expected)
        assert set(prediction.label_map.unique().tolist()) <= {0, 2, 4}


def test_postprocessing_demotes_stray_inner_voxels_to_the_enclosing_region():
    from unet3d.evaluation.postprocessing import keep_largest_component

    label_map = np.zeros((12, 12, 12), np.int16)
    label_map[1:8, 1:8, 1:8] = 2
    label_map[2:6, 2:6, 2:6] = 1
    label_map[3:5, 3:5, 3:5] = 4
    label_map[7, 7, 7] = 1  # a stray core voxel inside the whole tumour, apart from the core
    label_map[10, 10, 10] = 4  # an island of all three regions, apart from everything
    core_filtered = keep_largest_component(label_map, BRATS, [1])
    assert core_filtered[7, 7, 7] == 2 and core_filtered[10, 10, 10] == 2 and core_filtered[3, 3, 3] == 4
    enhancing_filtered = keep_largest_component(label_map, BRATS, [2])
    assert enhancing_filtered[10, 10, 10] == 1 and enhancing_filtered[3, 3, 3] == 4
    whole_filtered = keep_largest_component(label_map, BRATS, [0])
    assert whole_filtered[10, 10, 10] == 0 and whole_filtered[7, 7, 7] == 1
    for result in (core_filtered, enhancing_filtered, whole_filtered):
        masks = encode(torch.from_numpy(result)[None], BRATS, background=False).bool()
        assert not (masks[1] & ~masks[0]).any() and not (masks[2] & ~masks[1]).any()
