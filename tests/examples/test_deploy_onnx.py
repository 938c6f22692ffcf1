"""examples/deploy_onnx/predict_onnx.py: a model exported to ONNX predicts, without torch or unet3d, the label map
unet3d-predict writes, from the sidecar alone."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import ct_softmax_sliding_window, run_cli
from unet3d.deployment import export_model

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "deploy_onnx" / "predict_onnx.py"
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
pytestmark = pytest.mark.skipif(not HAS_ONNX, reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
# Run the script with torch, MONAI and unet3d made unimportable: it must need none of them.
BLOCKED = """
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "monai", "unet3d"}:
            raise ImportError(f"{name} is blocked: predict_onnx.py must run without it")
sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_script(model: Path, images: list[Path], output: Path) -> None:
    command = [sys.executable, "-c", BLOCKED, str(SCRIPT), "--model", str(model), "--output", str(output)]
    done = subprocess.run([*command, "--images", *map(str, images)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def unet3d_predict(model: Path, cases: list[dict], folder: Path, out: Path) -> None:
    listing = out / "cases.json"
    listing.write_text(json.dumps([{"image": [str(folder / p) for p in c["image"]]} for c in cases]))
    done = run_cli("predict", "--model_filename", str(model), "--input", str(listing), "--output_directory", str(out))
    assert done.returncode == 0, done.stderr


def compare(model_file: Path, config: Path, folder: Path, cases: list[dict], tmp_path: Path) -> list[float]:
    """Exports `model_file`, predicts `cases` both ways; returns the share of voxels that agree, per case."""
    export_model(model_file, tmp_path / "model.onnx", format="onnx", config_filename=config)
    reference = tmp_path / "unet3d"
    reference.mkdir()
    unet3d_predict(model_file, cases, folder, reference)
    agreement = []
    for case in cases:
        images = [folder / p for p in case["image"]]
        written = sorted(reference.glob("*.nii.gz"))
        case_id = Path(case["image"][0]).parent.name
        expected = nib.load(next(p for p in written if p.name.startswith(case_id)))
        output = tmp_path / f"{case_id}_onnx.nii.gz"
        run_script(tmp_path / "model.onnx", images, output)
        got = nib.load(output)
        assert got.shape == expected.shape and np.allclose(got.affine, expected.affine, atol=1e-4)
        truth, ours = np.asarray(expected.dataobj), np.asarray(got.dataobj)
        assert set(np.unique(ours)) <= set(np.unique(truth)) | {0}
        agreement.append(float((truth == ours).mean()))
    return agreement


def test_the_onnx_script_writes_unet3d_predicts_label_maps(trained_cv, tmp_path):
    # cropped to the foreground, resized to 16³, z-scored per channel, nested regions (2 ⊃ 1 ⊃ 4), two epochs of
    # training: channels that fire everywhere, the hardest case for the decoding
    config, work, folder = trained_cv
    cases = json.loads(config.read_text())["training_filenames"][:3]
    agreement = compare(work / "fold1" / "model_best.pth", work / "fold1" / "config.json", folder, cases, tmp_path)
    assert min(agreement) == 1.0, agreement


def test_reorientation_spacing_and_a_sliding_window_too(experiment, tiny_data, tmp_path):
    # reoriented to RAS from four orientations, resampled to 1.5 mm, a 16³ Gaussian sliding window over larger
    # volumes, softmax over exclusive classes, the CT scheme: every step the first test does not take
    path = experiment("onnx_sw", n_epochs=1, mutate=ct_softmax_sliding_window)
    folder, entries = tiny_data
    done = run_cli("train", "--config_filename", str(path), "--output_dir", str(tmp_path / "run"), "--seed", "1")
    assert done.returncode == 0, done.stderr
    work = tmp_path / "run" / "onnx_sw"
    agreement = compare(work / "model_best.pth", work / "config.json", folder, entries[:4], tmp_path)
    assert min(agreement) == 1.0, agreement  # unet3d-predict wrote interpolation dust as classes before
