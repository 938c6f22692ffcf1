"""Smoke test of the 2D recipe (examples/carvana_2d): JPEG pictures with GIF masks, a 2D UNet with RMSprop and a
ReduceLROnPlateau on validation Dice, shrunk here to two epochs; predictions come back as PNG masks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipes import load_config, make_data, train


def test_carvana_2d_example_trains_and_writes_png_masks(tmp_path: Path) -> None:
    make_data("carvana_2d", tmp_path / "data")
    config = load_config("carvana_2d")
    cases = [c for group in ("training", "validation", "test") for c in config[f"{group}_filenames"]]
    listed = [path for c in cases for path in [*c["image"], *([c["label"]] if "label" in c else [])]]
    assert len(listed) == 40 * 2 + 4 and all((tmp_path / p).is_file() for p in listed)
    assert (config["model"]["spatial_dims"], config["optimizer"]["name"]) == (2, "RMSprop")
    assert (config["scheduler"]["mode"], config["scheduler"]["monitor"]) == ("max", "val_dice")
    config["training"].update(n_epochs=2, progress_plot=False)
    work_dir = train(config, tmp_path, "carvana_2d_config")
    with (work_dir / "training_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["val_dice"]) <= 1 for r in rows)
    saved = torch.load(work_dir / "model.pth", map_location="cpu", weights_only=True)
    assert saved["scheduler"]["mode"] == "max"
    assert abs(saved["scheduler"]["best"] - max(float(r["val_dice"]) for r in rows)) < 1e-5  # the CSV has 6 digits

    for case in config["validation_filenames"]:
        mask = np.asarray(Image.open(tmp_path / case["label"]))
        predicted = np.asarray(Image.open(work_dir / "validation" / f"{case['case_id']}.png"))
        assert predicted.shape == mask.shape == (64, 96)
        assert set(np.unique(predicted)) <= {0, 1}
    with (work_dir / "validation" / "metrics.csv").open() as f:
        metrics = {r["case_id"]: r for r in csv.DictReader(f)}
    assert {c["case_id"] for c in config["validation_filenames"]} <= set(metrics)
    assert 0 <= float(metrics["mean"]["dice_1"]) <= 1
    assert sorted(p.name for p in (work_dir / "test").glob("*.png")) == [f"test_{i:03d}.png" for i in range(4)]
    check_bundle(
        work_dir / "model.pth", [tmp_path / c["image"][0] for c in config["validation_filenames"][:2]], tmp_path
    )


def check_bundle(model: Path, pictures: list[Path], folder: Path) -> None:
    """The 2D model as a MONAI bundle: MONAI's runner reads the JPEGs and writes the PNG masks unet3d wrote."""
    pytest.importorskip("ignite", reason="the bundle's evaluator needs pytorch-ignite (the test extra installs it)")
    from tests.deployment.test_bundle import run_bundle
    from unet3d.deployment.bundle import export_bundle

    export_bundle(model, folder / "bundle")
    run_bundle(folder / "bundle", [[picture] for picture in pictures], folder / "bundle_out", folder)
    for picture in pictures:
        expected = np.asarray(Image.open(model.parent / "validation" / f"{picture.stem}.png"))
        assert np.array_equal(np.asarray(Image.open(folder / "bundle_out" / f"{picture.stem}_seg.png")), expected)
