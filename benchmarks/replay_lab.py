"""What the hostile replay (`hostile.py`) runs on: tiny synthetic cases, configs written beside them, the real
commands run as a user runs them, and the table of what happened."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from unet3d.data.synthetic import write_dataset

ROWS: list[tuple[str, str, str, str]] = []


def command(module: str, *args: str, timeout: int = 600) -> tuple[int, str]:
    """Run one unet3d command; its exit code and the first 'error:' line (else the last line) of its output."""
    done = subprocess.run(
        [sys.executable, "-m", f"unet3d.cli.{module}", *args], capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith(("error:", "terminated", "interrupted"))), None)
    return done.returncode, (first or (lines[-1] if lines else "")).strip()


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and ".unet3d.lock" not in p.name)
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def record(case: str, code: int, message: str, lost: str) -> None:
    ROWS.append((case, str(code), message.replace("|", "/")[:150], lost))
    print(f"{case}: exit {code}: {message[:150]} | lost: {lost}", flush=True)


def base_config(entries: list[dict], **training) -> dict:
    cases = [{"image": list(e["image"]), "label": e["label"]} for e in entries]
    return {
        "model": {
            "name": "DynUNet",
            "in_channels": 4,
            "out_channels": 3,
            "spatial_dims": 3,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "filters": [4, 8, 16],
            "kernel_size": [[3, 3, 3]] * 3,
            "upsample_kernel_size": [[2, 2, 2]] * 2,
        },
        "optimizer": {"name": "Adam", "lr": 0.01},
        "loss": {"name": "DiceLoss", "sigmoid": True},
        "dataset": {
            "desired_shape": [16, 16, 16],
            "labels": [2, 1, 4],
            "setup_label_hierarchy": True,
            "normalization_kwargs": {"channel_wise": True},
            "resample": True,
            "crop_foreground": True,
            "cache": "memory",
        },
        "training": {"batch_size": 2, "n_epochs": 1, "test_input": 0, "progress_plot": False, **training},
        "training_filenames": cases[:4],
        "validation_filenames": cases[4:],
    }


class Lab:
    """A folder of tiny cases and configs written beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.entries = write_dataset(self.data, 6, seed=7, shape_range=(16, 20))

    def config(self, name: str, mutate: Callable[[dict], None] | None = None, **training) -> Path:
        config = base_config(copy.deepcopy(self.entries), **training)
        if mutate is not None:
            mutate(config)
        path = self.data / f"{name}.json"
        path.write_text(json.dumps(config, allow_nan=True))
        return path
