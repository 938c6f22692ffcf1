"""Smoke test of the nnU-Net-style recipe (examples/nnunet_style): its data script, its config as shipped (shrunk
here to one fold of one short epoch), patch training with a per-iteration PolynomialLR, and full-volume predictions."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import torch
from recipes import load_config, make_data, train

ITERATIONS = 2


def config_paths(config: dict) -> set[str]:
    return {
        path
        for group, cases in config.items()
        if group.endswith("_filenames")
        for case in cases
        for path in [*case["image"], *([case["label"]] if "label" in case else [])]
    }


def test_nnunet_style_example_trains_one_fold(tmp_path: Path) -> None:
    make_data("nnunet_style", tmp_path / "data")
    config = load_config("nnunet_style")
    written = {str(p.relative_to(tmp_path)) for p in (tmp_path / "data").rglob("*.nii.gz")}
    assert config_paths(config) == {p for p in written if p.startswith("data/training/")}

    training, scheduler = config["training"], config["scheduler"]
    lr = config["optimizer"]["lr"]
    total_iters = scheduler["total_iters"]
    assert (scheduler["name"], scheduler["step"]) == ("PolynomialLR", "iteration")
    assert total_iters == training["n_epochs"] * training["iterations_per_epoch"]
    # Shrunk for CI; total_iters stays as configured, so the lr after ITERATIONS steps is a point on the full schedule.
    training.update(n_epochs=1, iterations_per_epoch=ITERATIONS, progress_plot=False)
    work_dir = train(config, tmp_path, "nnunet_style_config", "--fold", "1")
    fold_dir = work_dir / "fold1"
    with (fold_dir / "training_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1]
    assert math.isfinite(float(rows[0]["loss"]))
    assert float(rows[0]["lr"]) == lr  # the log's lr is the one the epoch started with

    saved = torch.load(fold_dir / "model.pth", map_location="cpu", weights_only=True)
    assert saved["scheduler"]["last_epoch"] == ITERATIONS
    expected = lr * (1 - ITERATIONS / total_iters) ** scheduler["power"]
    assert math.isclose(saved["optimizer"]["param_groups"][0]["lr"], expected, rel_tol=1e-6)
    assert expected < lr

    held_out = json.loads((work_dir / "splits.json").read_text())["folds"][0]["validation"]
    cases = {case["case_id"]: case for case in config["training_filenames"]}
    assert held_out and set(held_out) <= set(cases)
    for case_id in held_out:
        prediction = nib.load(fold_dir / "validation" / f"{case_id}.nii.gz")
        image = nib.load(tmp_path / cases[case_id]["image"][0])
        assert prediction.shape == image.shape
