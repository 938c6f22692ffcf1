"""Imports go one way along the data flow, for every module of the package.

Each stage (a sub-package, or a top-level module) has a rank; a module may import only stages of a lower rank (and
its own). Stages of one rank never import each other: training, inference and evaluation stay independent. A new
module must be given a rank here, so its place in the flow is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unet3d"
RANK = {
    # foundations: no unet3d imports, or only errors
    "errors": 0,
    "formats": 0,
    "version": 0,
    "normalization": 0,  # unet3d's own intensity transforms, which the registry offers beside MONAI's
    "atomic": 1,
    "locking": 1,
    "output_guard": 2,  # one rule for every file a command writes
    "registry": 1,
    "devices": 1,  # the kinds of device, through torch.accelerator
    "allocator": 0,  # the C allocator's settings for processes that read one large image after another
    "runtime": 2,  # this process's device, process group, seeds
    # config → data → building blocks
    "config": 2,
    "checkpoint": 2,
    "data": 3,
    "models": 4,
    "losses": 4,
    "optim": 4,
    "inferers": 4,
    # the three independent stages
    "training": 5,
    "inference": 5,
    "evaluation": 5,
    # what combines them
    "preflight": 6,
    "workdir": 6,  # what a work dir holds (folds, held-out group, best-or-last, finished, manifest), read one way
    "planning": 7,  # fingerprint the data, plan a config (checked by preflight), write the data report
    "experiment": 9,  # one work dir's steps, folds, splits, summary, SLURM scripts, the entry point
    "prediction": 9,
    "deployment": 10,  # unet3d-export: TorchScript/ONNX and a sidecar, MONAI bundles (reads configs as prediction does)
    "cli": 11,
    "train": 12,  # `python -m unet3d.train`: the launch command of earlier versions' scripts, which calls the CLI
    "__init__": 13,  # the public API re-exports the entry points
}


def unet3d_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unet3d"):
            if node.module != "unet3d":  # `from unet3d import checkpoint` imports the module named, not the API
                names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("unet3d"))
    # a bare `import unet3d` reaches the public API, the top of the flow
    return {name.split(".")[1] if "." in name else "__init__" for name in names}


def stage_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_data_flow(path):
    stage = stage_of(path)
    assert stage in RANK, f"{stage}: a new stage; give it a rank in tests/test_architecture.py"
    imported = unet3d_imports(path) - {stage}
    upstream = {name for name in imported if RANK.get(name, 99) >= RANK[stage]}
    assert not upstream, f"{stage} (rank {RANK[stage]}) imports {sorted(upstream)}, which come later in the flow"


def test_the_rank_table_names_only_existing_stages():
    stages = {stage_of(path) for path in PACKAGE.rglob("*.py")}
    assert set(RANK) == stages


def test_a_bare_import_of_the_package_counts_as_an_import_of_its_public_api(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import unet3d\nfrom unet3d import checkpoint as ckpt\nfrom unet3d.data import labels\n")
    assert unet3d_imports(module) == {"__init__", "checkpoint", "data"}


def test_the_modules_a_bundle_ships_need_no_unet3d():
    """`unet3d-export --format bundle` copies these into the bundle's scripts/, where unet3d is not installed."""
    from unet3d.deployment.bundle import SCRIPTS

    for name, module in SCRIPTS.items():
        assert unet3d_imports(Path(module.__file__)) == set(), f"{name}: a bundle's script imports unet3d"
