"""The public API in `unet3d/__init__.py`: the README's Python example uses it, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import unet3d


def test_every_public_name_resolves_to_the_library_function():
    from unet3d.evaluation.evaluate import evaluate
    from unet3d.experiment.run import run_experiment
    from unet3d.prediction import predict
    from unet3d.training.options import RunOptions

    assert unet3d.run_experiment is run_experiment and unet3d.predict is predict and unet3d.evaluate is evaluate
    assert unet3d.RunOptions is RunOptions
    assert all(hasattr(unet3d, name) for name in unet3d.__all__)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = unet3d.no_such_name


def test_importing_the_package_does_not_load_torch():
    code = "import sys, unet3d; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
