"""Installs the `unet3d` package and its commands: `unet3d-plan`, `-train`, `-predict`, `-evaluate`, `-export`."""

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# The version without importing the package (its dependencies may not be installed yet).
version = re.search(r'__version__ = "([^"]+)"', (here / "unet3d" / "version.py").read_text()).group(1)
requirements = [
    line.strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

ONNX = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]
DICOM = ["highdicom>=0.22"]
# unet3d-export --format bundle runs without them; `python -m monai.bundle run` on the bundle needs them.
BUNDLE = ["fire>=0.4", "pytorch-ignite>=0.4.11"]
# MLflow's local store is SQLite (its file store is refused since 3.x): mlflow-skinny needs SQLAlchemy and Alembic.
TRACKERS = {"mlflow": ["mlflow-skinny>=2.10", "sqlalchemy>=2", "alembic>=1.10"], "wandb": ["wandb>=0.19"]}

setup(
    name="unet3d",
    version=version,
    description="Cross-validation experiment runner for 3D (and 2D) medical image segmentation on PyTorch and MONAI",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["unet3d", "unet3d.*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3.5",
            "ruff==0.17.6",
            "matplotlib>=3.5",
            "tensorboard>=2.10",
            "itk-io>=5.3",
            *ONNX,
            *DICOM,
            *BUNDLE,
            "jsonschema>=4",  # the bundle metadata test validates against the fields of MONAI's schema
            *TRACKERS["mlflow"],
            *TRACKERS["wandb"],
        ],
        "plots": ["matplotlib>=3.5"],
        "itk": ["itk-io>=5.3"],  # MetaImage (.mhd/.mha) and NRRD through MONAI's ITKReader
        "tensorboard": ["tensorboard>=2.10"],
        "onnx": ONNX,  # unet3d-export --format onnx: the exporter and a runtime to check the export
        "dicom": DICOM,  # a DICOM SEG beside the label map of each DICOM series predicted
        "bundle": BUNDLE,  # to run an exported MONAI bundle with `python -m monai.bundle run`
        **TRACKERS,  # training.tracker: "mlflow" or "wandb"
    },
    entry_points={
        "console_scripts": [
            "unet3d-train=unet3d.cli.train:main",
            "unet3d-predict=unet3d.cli.predict:main",
            "unet3d-evaluate=unet3d.cli.evaluate:main",
            "unet3d-plan=unet3d.cli.plan:main",
            "unet3d-export=unet3d.cli.export:main",
            "unet3d-report=unet3d.cli.report:main",
        ]
    },
    license="MIT",
)
