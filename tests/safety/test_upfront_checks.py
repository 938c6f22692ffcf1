"""Inputs that used to crash in the middle of a fold (often with exit 134) are refused before any compute, one line
each, exit 2 (issue 11, item 11)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import run_cli
from unet3d.data.datasets import CheckedCacheDataset
from unet3d.errors import ConfigError, DataError
from unet3d.experiment.run import run_experiment


def train(config: Path, output: Path) -> subprocess.CompletedProcess:
    return run_cli("train", "--config_filename", str(config), "--output_dir", str(output), "--nthreads", "2")


def rewrite(path: Path, data: np.ndarray) -> None:
    image = nib.load(path)
    nib.save(nib.Nifti1Image(data, image.affine), path)


@pytest.fixture
def own_data(tmp_path):
    """A private copy of six tiny cases (the tests below damage them) and a memory-cached config writer."""
    from tests.conftest import tiny_config
    from unet3d.data.synthetic import write_dataset

    entries = write_dataset(tmp_path / "data", 6, seed=7, shape_range=(16, 20))

    def write(mutate=None) -> Path:
        config = tiny_config(entries, n_validation=2, n_epochs=1)
        config["dataset"]["cache"] = "memory"
        if mutate is not None:
            mutate(config)
        path = tmp_path / "data" / "exp.json"
        path.write_text(json.dumps(config))
        return path

    return tmp_path / "data", entries, write


def test_a_case_of_constant_images_with_crop_foreground_is_refused(own_data, tmp_path):
    folder, entries, write = own_data
    for image in entries[1]["image"]:
        rewrite(folder / image, np.zeros(nib.load(folder / image).shape, np.float32))
    done = train(write(), tmp_path / "out")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: training_filenames: case 'case_001_flair': every image is constant (one value in all voxels); "
        "dataset.crop_foreground finds no foreground in it: fix the files or leave the case out"
    ]
    assert not (tmp_path / "out" / "exp" / "model.pth").exists()


def test_one_image_with_a_trailing_axis_of_length_1_is_refused(own_data, tmp_path):
    folder, entries, write = own_data
    t1 = folder / entries[1]["image"][1]
    rewrite(t1, np.asarray(nib.load(t1).dataobj)[..., None])
    done = train(write(), tmp_path / "out")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{t1}: shape" in errors[0] and "has 4 axes" in errors[0]
    assert "nibabel.squeeze_image" in errors[0]


def test_a_string_where_a_transform_expects_a_function_is_refused(own_data, tmp_path):
    _, _, write = own_data

    def hostile(config):
        config["dataset"]["training"]["spatial_augmentations"] = [
            {"name": "CropForegroundd", "source_key": "image", "select_fn": "os.system"}
        ]

    with pytest.raises(ConfigError, match=r"select_fn: CropForegroundd expects a function here, not the string"):
        run_experiment(write(hostile), tmp_path / "out")


def test_a_shape_that_cannot_fit_in_memory_is_refused_with_the_numbers(own_data, tmp_path):
    _, _, write = own_data

    def huge(config):
        config["dataset"]["desired_shape"] = [1024, 1024, 1024]

    with pytest.raises(ConfigError) as raised:
        run_experiment(write(huge), tmp_path / "out")
    message = str(raised.value)
    assert message.startswith("dataset.desired_shape: [1024, 1024, 1024] with batch_size 2 needs at least 122880 MiB")
    assert "MiB of memory available" in message or "MiB of GPU memory" in message


def test_a_case_failing_while_the_memory_cache_fills_on_threads_is_named():
    from monai.transforms import Transform

    class FailsOnB(Transform):  # deterministic, so CacheDataset runs it while filling
        def __call__(self, item):
            if item["image"][0] == "b.nii.gz":
                raise RuntimeError("applying transform Resized") from ValueError("zero-size array")
            return item

    transform = FailsOnB()

    items = [{"image": [name]} for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz")]
    with pytest.raises(DataError, match=r"^b.nii.gz: preprocessing failed: ValueError: zero-size array$"):
        CheckedCacheDataset(items, transform, num_workers=2, progress=False)
