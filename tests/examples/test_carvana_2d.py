"""Smoke test of the 2D recipe (examples/carvana_2d): JPEG pictures with GIF masks, a 2D UNet with RMSprop and a
ReduceLROnPlateau on validation Dice, shrunk here to two epochs; predictions come back as PNG masks."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "carvana_2d"


def test_carvana_2d_example_trains_and_writes_png_masks(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--output", str(tmp_path / "data")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = json.loads((EXAMPLE / "carvana_2d_config.json").read_text())
    cases = [c for group in ("training", "validation", "test") for c in config[f"{group}_filenames"]]
    listed = [path for c in cases for path in [*c["image"], *([c["label"]] if "label" in c else [])]]
    assert len(listed) == 40 * 2 + 4 and all((tmp_path / p).is_file() for p in listed)
    assert (config["model"]["spatial_dims"], config["optimizer"]["name"]) == (2, "RMSprop")
    assert (config["scheduler"]["mode"], config["scheduler"]["monitor"]) == ("max", "val_dice")
    config["training"].update(n_epochs=2, progress_plot=False)
    config_path = tmp_path / "carvana_2d_config.json"
    config_path.write_text(json.dumps(config, indent=2))

    result = subprocess.run(
        [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(config_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    work_dir = tmp_path / "carvana_2d_config"
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
