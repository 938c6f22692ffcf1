"""unet3d: a cross-validation experiment runner for 3D (and 2D) medical image segmentation.

The data flow follows the sub-packages: ``config`` → ``data`` → model building (``models``, ``losses``,
``optim``) → ``training`` (loop, checkpoints, logs) | ``inference`` | ``evaluation`` → ``planning`` →
``experiment`` (folds) → ``cli``.

The public API, the same as the five commands::

    import unet3d
    unet3d.plan_experiment("Task01_BrainTumour", "plans/brain.json")                 # unet3d-plan
    result = unet3d.run_experiment("exp.json", options=unet3d.RunOptions(seed=1))   # unet3d-train
    unet3d.predict("out", model_dirs=[result.work_dir], input_path="new_cases")     # unet3d-predict
    unet3d.evaluate("out", "exp.json", group="test")                                # unet3d-evaluate
    unet3d.export_model(result.work_dir / "fold1" / "model_best.pth", "fold1.ts")     # unet3d-export

Names are imported on first use, so ``import unet3d`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from unet3d.version import __version__

_PUBLIC = {
    "load_config": "unet3d.config.load",
    "Config": "unet3d.config.schema",
    "run_experiment": "unet3d.experiment.run",
    "ExperimentResult": "unet3d.experiment.run",
    "RunOptions": "unet3d.training.run",
    "predict": "unet3d.prediction",
    "PredictionResult": "unet3d.prediction",
    "evaluate": "unet3d.evaluation.evaluate",
    "plan_experiment": "unet3d.planning.plan",
    "export_model": "unet3d.deployment",
    "Plan": "unet3d.planning.plan",
    "UserError": "unet3d.errors",
    "ConfigError": "unet3d.errors",
    "DataError": "unet3d.errors",
    "CheckpointError": "unet3d.errors",
    "MachineError": "unet3d.errors",
    "Busy": "unet3d.errors",
}
__all__ = [
    "Busy",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "ExperimentResult",
    "MachineError",
    "Plan",
    "PredictionResult",
    "RunOptions",
    "UserError",
    "__version__",
    "evaluate",
    "export_model",
    "load_config",
    "plan_experiment",
    "predict",
    "run_experiment",
]

if TYPE_CHECKING:
    from unet3d.config.load import load_config
    from unet3d.config.schema import Config
    from unet3d.deployment import export_model
    from unet3d.errors import Busy, CheckpointError, ConfigError, DataError, MachineError, UserError
    from unet3d.evaluation.evaluate import evaluate
    from unet3d.experiment.run import ExperimentResult, run_experiment
    from unet3d.planning.plan import Plan, plan_experiment
    from unet3d.prediction import PredictionResult, predict
    from unet3d.training.options import RunOptions


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'unet3d' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
