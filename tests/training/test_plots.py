"""progress.png: drawn from the log rows, atomically, and skipped with a note when matplotlib is missing."""

from __future__ import annotations

import builtins
import logging
import math

import pytest

from unet3d.training import plots

ROWS = [
    {"epoch": 1, "loss": 0.9, "val_loss": 0.8, "val_dice": 0.2, "full_dice": 0.1, "lr": 0.01, "epoch_time": 1.0},
    {"epoch": 2, "loss": 0.7, "val_loss": 0.6, "val_dice": 0.4, "full_dice": math.nan, "lr": 0.005, "epoch_time": 0.9},
    {"epoch": 3, "loss": 0.5, "val_loss": 0.5, "val_dice": 0.6, "full_dice": 0.5, "lr": 0.005, "epoch_time": 0.9},
]


def test_plot_is_a_png_with_every_panel(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "progress.png"
    assert plots.write_progress_plot(path, ROWS)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["progress.png"], "no temporary file is left"


def test_without_matplotlib_the_plot_is_skipped_with_one_note(tmp_path, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(plots, "_warned", False)
    caplog.set_level(logging.INFO, logger="unet3d")
    assert not plots.write_progress_plot(tmp_path / "progress.png", ROWS)
    assert not plots.write_progress_plot(tmp_path / "progress.png", ROWS)
    assert caplog.text.count("matplotlib is not installed") == 1
    assert not (tmp_path / "progress.png").exists()
