"""What every recipe smoke test does: write the example's synthetic data, and train its config as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def make_data(example: str, output: Path, timeout: int = 120) -> None:
    """Run `examples/<example>/make_data.py --output <output>`."""
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / example / "make_data.py"), "--output", str(output)],
        check=True,
        capture_output=True,
        timeout=timeout,
    )


def load_config(example: str) -> dict[str, Any]:
    """The example's config as shipped."""
    return json.loads((ROOT / "examples" / example / f"{example}_config.json").read_text())


def train(config: dict[str, Any], folder: Path, name: str, *flags: str, timeout: int = 300) -> Path:
    """Write `config` to `<folder>/<name>.json`, run `unet3d-train` on it from `folder` (where its relative data paths
    point), assert success, and return the work dir."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config, indent=2))
    result = subprocess.run(
        [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(path), *flags],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder / name
