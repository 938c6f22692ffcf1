"""Imports go one way along the data flow: config → data → models → training | inference → evaluation → cv → cli.

Training and inference never import each other; only the CLI modules import the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unet3d"
FORBIDDEN = {
    "config": ("data", "training", "inference", "evaluation", "cv", "workflow", "experiment", "prediction", "cli"),
    "data": ("training", "inference", "evaluation", "cv", "workflow", "experiment", "prediction", "cli"),
    "training": ("inference", "evaluation", "cv", "workflow", "experiment", "prediction", "postprocessing", "cli"),
    "inference": ("training", "cv", "workflow", "experiment", "cli"),
    "evaluation": ("training", "inference", "cv", "workflow", "experiment", "prediction", "cli"),
    "cv": ("experiment", "prediction", "cli"),
    "workflow": ("cv", "experiment", "prediction", "cli"),
}


def unet3d_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unet3d"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("unet3d"))
    return {name.split(".")[1] for name in names if name.count(".") >= 1}


def stage_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_data_flow(path):
    stage = stage_of(path)
    imported = unet3d_imports(path) - {stage}
    assert not imported & set(FORBIDDEN.get(stage, ())), f"{stage} imports {sorted(imported & set(FORBIDDEN[stage]))}"
    if stage not in ("cli", "train"):  # unet3d/train.py is the `python -m unet3d.train` entry point
        assert "cli" not in imported
