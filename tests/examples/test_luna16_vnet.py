"""Smoke test of the MetaImage recipe (examples/luna16_vnet): .mhd/.raw CT scans read through ITK, resampled to a
fixed voxel spacing, a V-Net trained for one epoch, and label maps written back as MetaImage on each scan's grid."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from recipes import load_config, make_data, train

itk = pytest.importorskip("itk")


def test_luna16_vnet_example_trains_and_writes_metaimage_masks(tmp_path: Path) -> None:
    make_data("luna16_vnet", tmp_path / "data")
    config = load_config("luna16_vnet")
    assert (config["model"]["name"], config["dataset"]["spacing"]) == ("VNet", [2.5, 2.5, 2.5])
    cases = [c for group in ("training", "validation", "test") for c in config[f"{group}_filenames"]]
    assert all((tmp_path / c["image"][0]).is_file() for c in cases)
    config["training"].update(n_epochs=1, progress_plot=False)
    work_dir = train(config, tmp_path, "luna16_vnet_config")
    for case in config["validation_filenames"]:
        uid = Path(case["image"][0]).stem
        written = work_dir / "validation" / f"{uid}.mhd"
        assert (work_dir / "validation" / f"{uid}.raw").is_file()
        prediction, scan = itk.imread(str(written)), itk.imread(str(tmp_path / case["image"][0]))
        assert tuple(prediction.GetLargestPossibleRegion().GetSize()) == tuple(
            scan.GetLargestPossibleRegion().GetSize()
        )
        np.testing.assert_allclose(np.asarray(prediction.GetSpacing()), np.asarray(scan.GetSpacing()), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(prediction.GetOrigin()), np.asarray(scan.GetOrigin()), atol=1e-4)
        assert set(np.unique(itk.array_from_image(prediction)).tolist()) <= {0, 3}
    with (work_dir / "validation" / "metrics.csv").open() as f:
        metrics = {r["case_id"]: r for r in csv.DictReader(f)}
    assert 0 <= float(metrics["mean"]["dice_3+4"]) <= 1
    test_uids = sorted(Path(c["image"][0]).stem for c in config["test_filenames"])
    assert sorted(p.stem for p in (work_dir / "test").glob("*.mhd")) == test_uids
