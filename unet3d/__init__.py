"""unet3d: a cross-validation experiment runner for 3D (and 2D) medical image segmentation.

The data flow follows the sub-packages: ``config`` → ``data`` → model building (``models``, ``losses``,
``optim``) → ``training`` (loop, checkpoints, logs) → ``cv`` (folds) → ``cli``.
"""

__version__ = "0.1.0"
