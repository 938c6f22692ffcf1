"""`unet3d-export` (unet3d/deployment/export.py): TorchScript and ONNX networks equal to the checkpoint's, with a
sidecar."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from unet3d.checkpoint import load_checkpoint, model_state
from unet3d.deployment import export_model, patch_size
from unet3d.errors import CheckpointError, ConfigError
from unet3d.models import build_model
from unet3d.prediction import config_for

HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))


def checkpoint_network(path):
    config = config_for([path], None)
    network = build_model(config.model)
    network.load_state_dict(model_state(load_checkpoint(path)))
    return network.eval()


def test_torchscript_round_trips_the_fold_model(trained_cv, tmp_path):
    _, work, _ = trained_cv
    model = work / "fold1" / "model_best.pth"
    result = export_model(model, tmp_path / "fold1.ts")
    assert result.max_difference <= 1e-4 and result.input_shape == (1, 4, 16, 16, 16)
    loaded = torch.jit.load(str(tmp_path / "fold1.ts"))
    other = torch.randn(2, 4, 24, 16, 32)  # another batch and shape than the check's: the axes are free
    with torch.no_grad():
        assert (loaded(other) - checkpoint_network(model)(other)).abs().max() <= 1e-4


@pytest.mark.skipif(not HAS_ONNX, reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")
def test_onnx_round_trips_the_fold_model(trained_cv, tmp_path):
    import onnxruntime

    _, work, _ = trained_cv
    model = work / "fold2" / "model_best.pth"
    export_model(model, tmp_path / "fold2.onnx", format="onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "fold2.onnx"), providers=["CPUExecutionProvider"])
    other = torch.randn(1, 4, 32, 16, 24)
    with torch.no_grad():
        expected = checkpoint_network(model)(other)
    assert abs(session.run(None, {"image": other.numpy()})[0] - expected.numpy()).max() <= 1e-4


def test_the_sidecar_says_how_to_preprocess_and_decode(trained_cv, tmp_path):
    _, work, _ = trained_cv
    export_model(work / "fold1" / "model_best.pth", tmp_path / "m.ts")
    sidecar = json.loads((tmp_path / "m.ts.json").read_text())
    assert sidecar["file"] == "m.ts" and sidecar["max_abs_difference"] <= 1e-4
    assert sidecar["input"]["channels"] == 4
    assert [name.split("_")[-1] for name in sidecar["input"]["channel_order_example"]] == [
        "flair.nii.gz",
        "t1.nii.gz",
        "t1ce.nii.gz",
        "t2.nii.gz",
    ]
    assert sidecar["preprocessing"]["normalization"] == {
        "name": "NormalizeIntensityD",
        "kwargs": {"channel_wise": True, "nonzero": False},
    }
    assert sidecar["preprocessing"]["channel_schemes"] == [{"scheme": "zscore", "nonzero": False, "joint": False}] * 4
    inferer = sidecar["inferer"]  # the default: a Gaussian window of desired_shape, as unet3d-predict runs it
    assert inferer["name"] == "sliding_window" and inferer["roi_size"] == [16, 16, 16]
    assert inferer["overlap"] == 0.5 and inferer["mode"] == "gaussian" and inferer["sigma_scale"] == 0.125
    output = sidecar["output"]
    assert output["activation"] == "sigmoid"
    assert [(c["label_values"], c["writes"], c["inside_channel"]) for c in output["channels"]] == [
        ([2, 1, 4], 2, None),
        ([1, 4], 1, 0),
        ([4], 4, 1),
    ]
    assert "from the outside in" in output["decoding"]


def test_an_export_that_differs_is_refused(trained_cv, tmp_path):
    _, work, _ = trained_cv
    with pytest.raises(CheckpointError, match="differs from the checkpoint's by"):
        export_model(work / "fold1" / "model_best.pth", tmp_path / "m.ts", tolerance=-1.0)
    assert not (tmp_path / "m.ts.json").exists()


def test_patch_size_comes_from_the_sliding_window_or_the_input_shape(trained_cv):
    config, _, _ = trained_cv
    from unet3d.config.load import load_config

    assert patch_size(load_config(config)) == [16, 16, 16]


def test_cli_refuses_unknown_formats_and_missing_checkpoints(tmp_path):
    result = run_cli("export", "--model_filename", str(tmp_path / "none.pth"), "--output", str(tmp_path / "m.ts"))
    assert result.returncode == 2 and "none.pth: checkpoint does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="--format: expected one of"):
        export_model(tmp_path / "none.pth", tmp_path / "m.x", format="tflite")


@pytest.mark.parametrize("name", ["model.pth", "model_best.pth", "config.json", "training_log.csv"])
def test_an_export_never_replaces_a_work_dir_s_files(trained_cv, name):
    # Issue 22, item 2: --output model.pth replaced the resume point, and the next resume failed.
    _, work, _ = trained_cv
    target = work / "fold1" / name
    before = target.read_bytes()
    result = run_cli("export", "--model_filename", str(work / "fold1" / "model_best.pth"), "--output", str(target),
                     "--overwrite")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: refusing to write {target} (the exported network): it is " in result.stderr
    assert target.read_bytes() == before


def test_an_export_never_replaces_a_case_of_the_model_s_config_even_through_a_symlink(trained_cv, tmp_path):
    # Issue 22, item 2: with --overwrite, --output named any file, a label the model was trained on included.
    _, work, _ = trained_cv
    fold_config = work / "fold1" / "config.json"
    case = json.loads(fold_config.read_text())["validation_filenames"][0]
    label = Path(case["label"])
    (tmp_path / "link.ts").symlink_to(fold_config)
    before = label.read_bytes(), fold_config.read_bytes()
    for output, owner in (
        (label, f"the label of case {case['case_id']!r} of the model's config {fold_config}"),
        (tmp_path / "link.ts", f"config.json of the unet3d work dir {fold_config.parent}"),
    ):
        with pytest.raises(
            ConfigError, match=re.escape(f"refusing to write {output} (the exported network): it is {owner}")
        ):
            export_model(work / "fold1" / "model_best.pth", output, overwrite=True)
    assert (label.read_bytes(), fold_config.read_bytes()) == before


def test_an_existing_file_or_sidecar_is_replaced_only_when_an_export_wrote_it_or_with_overwrite(trained_cv, tmp_path):
    _, work, _ = trained_cv
    model = work / "fold1" / "model_best.pth"
    mine = tmp_path / "notes.ts"
    mine.write_text("my notes")
    with pytest.raises(ConfigError, match=r"notes.ts \(the exported network\): it exists and this .*--overwrite"):
        export_model(model, mine)
    (tmp_path / "net.ts.json").write_text('{"mine": true}')
    with pytest.raises(ConfigError, match=r"net.ts.json \(its sidecar\): it exists and this command did not write it"):
        export_model(model, tmp_path / "net.ts")
    assert mine.read_text() == "my notes" and (tmp_path / "net.ts.json").read_text() == '{"mine": true}'
    export_model(model, mine, overwrite=True)
    export_model(model, mine)  # its own earlier export: replaced without asking
    assert json.loads((tmp_path / "notes.ts.json").read_text())["file"] == "notes.ts"


def test_a_folder_as_output_is_one_line(trained_cv, tmp_path):
    _, work, _ = trained_cv
    result = run_cli("export", "--model_filename", str(work / "fold1" / "model_best.pth"), "--output", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: refusing to write {tmp_path} (the exported network): it is a folder; give a file name"
    )


def test_the_sidecar_describes_each_normalization_and_inferer_without_monai(tmp_path):
    from unet3d.config.load import parse_config
    from unet3d.deployment import channel_schemes, inferer_description

    def parsed(**dataset):
        config = {
            "model": {"name": "UNet", "spatial_dims": 3, "in_channels": 2, "out_channels": 2, "channels": [4, 8]},
            "optimizer": {"name": "Adam"},
            "loss": {"name": "DiceLoss", "sigmoid": True},
            "dataset": {"labels": [1], **dataset},
        }
        config["model"]["strides"] = [2]
        return parse_config(config, tmp_path)

    ct = {"lower": -100.0, "upper": 300.0, "mean": 50.0, "std": 80.0}
    assert (
        channel_schemes(parsed(normalization="CTNormalized", normalization_kwargs=ct)) == [{"scheme": "ct", **ct}] * 2
    )
    joint = parsed(normalization="NormalizeIntensityd", normalization_kwargs={"nonzero": True})
    assert channel_schemes(joint) == [{"scheme": "zscore", "nonzero": True, "joint": True}] * 2
    assert channel_schemes(parsed(normalization=None)) == [{"scheme": "none"}] * 2
    ranged = {"a_min": 0.0, "a_max": 1.0, "b_min": 0.0, "b_max": 1.0}
    assert channel_schemes(parsed(normalization="ScaleIntensityRanged", normalization_kwargs=ranged)) is None
    assert inferer_description(parsed()) == {"name": "whole_volume"}  # no desired_shape, no inference section
