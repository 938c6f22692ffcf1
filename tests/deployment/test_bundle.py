"""`unet3d-export --format bundle` (unet3d/deployment/bundle.py): a MONAI bundle that MONAI's own runner runs, without
unet3d, to the label maps `unet3d-predict` writes."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import ct_softmax_sliding_window, run_cli
from unet3d.deployment.bundle import SCRIPTS, bundle_files, export_bundle
from unet3d.errors import ConfigError

pytest.importorskip("fire", reason="python -m monai.bundle needs fire (the test extra installs it)")
pytest.importorskip("ignite", reason="the bundle's evaluator needs pytorch-ignite (the test extra installs it)")

# MONAI's bundle runner with unet3d made unimportable: the bundle must need MONAI (and its scripts/) only.
BLOCKED = """
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "unet3d":
            raise ImportError(f"{name} is blocked: a bundle must run without unet3d")
sys.meta_path.insert(0, Blocked())
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""


def monai_bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def monai_python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python `code` with unet3d made unimportable, as BLOCKED runs MONAI's runner."""
    blocked = BLOCKED.split("sys.argv =")[0] + code
    done = subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_bundle(bundle: Path, images: list[list[Path]], output: Path, tmp_path: Path, *overrides: str) -> None:
    """`python -m monai.bundle run` on the cases, from another folder than the bundle's, as the bundle's README says
    (`overrides`: more `--id value` arguments)."""
    datalist = tmp_path / f"{output.name}_cases.json"
    datalist.write_text(json.dumps({"testing": [{"image": [str(p) for p in case]} for case in images]}))
    config = bundle / "configs" / "inference.json"
    args = ["--bundle_root", str(bundle), "--datalist_file", str(datalist), "--output_dir", str(output)]
    monai_bundle("run", "--config_file", str(config), *args, *overrides, cwd=tmp_path)


def unet3d_predict(model: Path, images: list[list[Path]], output: Path, tmp_path: Path) -> None:
    listing = tmp_path / f"{output.name}.json"
    listing.write_text(json.dumps([{"image": [str(p) for p in case]} for case in images]))
    done = run_cli(
        "predict", "--model_filename", str(model), "--input", str(listing), "--output_directory", str(output)
    )
    assert done.returncode == 0, done.stderr


def compare(model: Path, config: Path | None, images: list[list[Path]], tmp_path: Path) -> list[float]:
    """Export `model` as a bundle, predict `images` with MONAI's runner and with unet3d-predict; the share of voxels
    that agree per case (the geometry must be the same)."""
    bundle = tmp_path / "bundle"
    export_bundle(model, bundle, config_filename=config)
    run_bundle(bundle, images, tmp_path / "monai", tmp_path)
    unet3d_predict(model, images, tmp_path / "unet3d", tmp_path)
    agreement = []
    for case in images:
        case_id = case[0].parent.name  # unet3d-predict names the case; SaveImaged names its first file
        expected = nib.load(next((tmp_path / "unet3d").glob(f"{case_id}*.nii.gz")))
        got = nib.load(tmp_path / "monai" / f"{case[0].name.removesuffix('.nii.gz')}_seg.nii.gz")
        assert got.shape == expected.shape and np.allclose(got.affine, expected.affine, atol=1e-4)
        truth, ours = np.asarray(expected.dataobj), np.asarray(got.dataobj)
        assert got.get_data_dtype() == expected.get_data_dtype()
        assert len(np.unique(truth)) > 1  # the model predicts something to compare
        agreement.append(float((truth == ours).mean()))
    return agreement


def case_images(folder: Path, entries: list[dict]) -> list[list[Path]]:
    return [[folder / p for p in entry["image"]] for entry in entries]


def test_monai_runs_the_bundle_to_unet3d_predicts_label_maps(trained_cv, tmp_path):
    # cropped to the foreground, resized to 16³, z-scored per channel, nested regions (2 ⊃ 1 ⊃ 4) decoded from the
    # outside in, two epochs of training: channels that fire everywhere
    config, work, folder = trained_cv
    entries = json.loads(config.read_text())["training_filenames"][:3]
    agreement = compare(work / "fold1" / "model_best.pth", None, case_images(folder, entries), tmp_path)
    assert agreement == [1.0] * 3


def test_reorientation_spacing_a_sliding_window_softmax_and_the_ct_scheme_too(experiment, tiny_data, tmp_path):
    path = experiment("bundle_sw", n_epochs=1, mutate=ct_softmax_sliding_window)
    folder, entries = tiny_data
    done = run_cli("train", "--config_filename", str(path), "--output_dir", str(tmp_path / "run"), "--seed", "1")
    assert done.returncode == 0, done.stderr
    work = tmp_path / "run" / "bundle_sw"
    # four cases in four orientations (RAS, LPS, LAS, PSR), each back on its own grid
    agreement = compare(work / "model_best.pth", work / "config.json", case_images(folder, entries[:4]), tmp_path)
    assert agreement == [1.0] * 4
    inference = json.loads((tmp_path / "bundle" / "configs" / "inference.json").read_text())
    names = [step["_target_"] for step in inference["preprocessing"]["transforms"]]
    assert names[:4] == ["LoadImaged", "EnsureTyped", "Orientationd", "Spacingd"]
    assert "scripts.normalization.CTNormalized" in names
    assert inference["inferer"] == {
        "_target_": "SlidingWindowInferer",
        "roi_size": [16, 16, 16],
        "overlap": 0.5,
        "sw_batch_size": 1,
    }
    decoding = [s["_target_"] for s in inference["postprocessing"]["transforms"]]
    assert decoding == [
        "Activationsd",
        "Invertd",
        "scripts.decoding.FillBackgroundd",
        "scripts.decoding.DecodeLabelsd",
        "SaveImaged",
    ]


@pytest.fixture(scope="module")
def bundle(trained_cv, tmp_path_factory):
    _, work, _ = trained_cv
    folder = tmp_path_factory.mktemp("exported") / "bundle"
    result = export_bundle(work / "fold2" / "model_best.pth", folder, authors="Ada Lovelace")
    return folder, result, work / "fold2" / "model_best.pth"


def test_the_bundle_has_monai_s_layout_and_its_scripts_are_unet3d_s_own_modules(bundle):
    folder, result, _ = bundle
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        p.relative_to(folder).as_posix() for p in bundle_files(folder)
    )
    assert result.path == folder and result.max_difference <= 1e-4 and result.input_shape == (1, 4, 16, 16, 16)
    for name, module in SCRIPTS.items():
        assert (folder / "scripts" / f"{name}.py").read_text() == Path(module.__file__).read_text()
        source = (folder / "scripts" / f"{name}.py").read_text()
        assert "unet3d." not in "".join(line for line in source.splitlines() if line.startswith(("import", "from")))
    readme = (folder / "docs" / "README.md").read_text()
    assert "python -m monai.bundle run --config_file BUNDLE/configs/inference.json" in readme
    assert "`<first file's name>_seg.nii.gz` in\n`output_dir`" in readme
    assert "nested regions: each inner region lies inside the one that encloses it" in readme
    assert "- 2+1+4: written as 2\n- 1+4: written as 1\n- 4: written as 4" in readme
    assert re.search(r"- 0: channel 0, as the file case_\d{3}_flair.nii.gz of a training case\n- 1: ", readme)
    assert "No licence was given" in (folder / "LICENSE").read_text()


# What MONAI's bundle metadata schema (meta_schema_20240725.json, the one the metadata names) requires, written here
# from its published rules: `monai.bundle verify_metadata` downloads the schema, and this machine has no internet.
TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"],
    "properties": {
        "type": {"type": "string"},
        "format": {"type": "string"},
        "num_channels": {"type": "integer"},
        "spatial_shape": {"type": "array", "items": {"type": ["string", "integer"]}},
        "dtype": {"type": "string"},
        "value_range": {"type": "array", "items": {"type": "number"}},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
}
STRINGS = ["schema", "version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "authors"]
METADATA_SCHEMA = {
    "type": "object",
    "required": [*STRINGS, "copyright", "required_packages_version", "network_data_format"],
    "properties": {
        **{key: {"type": "string"} for key in [*STRINGS, "copyright"]},
        "required_packages_version": {"type": "object"},
        "changelog": {"type": "object"},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "additionalProperties": TENSOR},
                "outputs": {"type": "object", "additionalProperties": TENSOR},
            },
        },
    },
}


def test_the_metadata_has_the_fields_of_monai_s_schema(bundle):
    import jsonschema

    folder, _, _ = bundle
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, METADATA_SCHEMA)
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "task", "description", "authors"):
        assert isinstance(meta[key], str) and meta[key], key
    assert meta["authors"] == "Ada Lovelace" and meta["copyright"].endswith("Ada Lovelace")
    assert isinstance(meta["changelog"], dict) and meta["version"] in meta["changelog"]
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 4 and image["spatial_shape"] == [16, 16, 16] and image["is_patch_data"] is True
    assert image["type"] == "image" and image["dtype"] == "float32"
    assert sorted(image["channel_def"]) == ["0", "1", "2", "3"]
    assert pred["format"] == "segmentation" and pred["num_channels"] == 3
    assert pred["channel_def"] == {"0": "label values 2+1+4", "1": "label values 1+4", "2": "label values 4"}


def test_monai_verifies_the_network_s_inputs_and_outputs_and_the_torchscript_matches(bundle, tmp_path):
    from monai.data import load_net_with_metadata

    folder, _, model = bundle
    meta, config = folder / "configs" / "metadata.json", folder / "configs" / "inference.json"
    done = monai_bundle(
        "verify_net_in_out", "network_def", "--meta_file", str(meta), "--config_file", str(config), cwd=tmp_path
    )
    assert "verified with no error" in done.stdout + done.stderr
    scripted, stored, extra = load_net_with_metadata(
        str(folder / "models" / "model.ts"), more_extra_files=["inference.json"]
    )
    assert stored["network_data_format"] == json.loads(meta.read_text())["network_data_format"]
    assert json.loads(extra["inference.json"]) == json.loads(config.read_text())
    from tests.deployment.test_export import checkpoint_network

    other = torch.randn(1, 4, 24, 16, 32)
    with torch.no_grad():
        assert (scripted(other) - checkpoint_network(model)(other)).abs().max() <= 1e-4


PROPERTIES = """
import sys
from monai.bundle import ConfigWorkflow
config, root = sys.argv[1:3]
workflow = ConfigWorkflow(config_file=config, workflow_type="inference", bundle_root=root, logging_file=False)
workflow.initialize()
print("missing:", workflow.check_properties(), type(workflow.preprocessing).__name__, type(workflow.inferer).__name__)
"""


def test_monai_s_inference_workflow_finds_every_property_without_a_data_list(bundle, tmp_path):
    """What MONAI Label and MONAI Deploy read: the inference workflow's required ids, built outside `run`; and a run
    without a data list fails naming the file it needs instead of predicting nothing."""
    folder, _, _ = bundle
    config = str(folder / "configs" / "inference.json")
    done = monai_python(PROPERTIES, config, str(folder), cwd=tmp_path)
    assert "missing: [] Compose SlidingWindowInferer" in done.stdout
    args = ["run", "--config_file", config, "--bundle_root", str(folder), "--output_dir", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0
    assert f"No such file or directory: '{folder}/configs/datalist.json'" in done.stderr


def test_an_export_replaces_its_own_bundle_but_no_one_else_s_files(bundle, tmp_path):
    folder, _, model = bundle
    export_bundle(model, folder)  # its own earlier export: replaced
    theirs = tmp_path / "theirs"
    (theirs / "docs").mkdir(parents=True)
    (theirs / "docs" / "README.md").write_text("my notes")
    with pytest.raises(ConfigError, match=r"refusing to write .*README.md \(the bundle's README\): it exists"):
        export_bundle(model, theirs)
    assert (theirs / "docs" / "README.md").read_text() == "my notes"
    assert not (theirs / "models").exists()  # refused before anything was written
    export_bundle(model, theirs, overwrite=True)
    assert (theirs / "configs" / "inference.json").exists()


def test_the_cli_writes_a_bundle_with_a_licence_and_refuses_bundle_flags_elsewhere(bundle, tmp_path):
    _, _, model = bundle
    licence = tmp_path / "weights-licence.txt"
    licence.write_text("CC BY-NC 4.0")
    out = tmp_path / "cli"
    done = run_cli(
        "export", "--model_filename", str(model), "--format", "bundle", "--output", str(out), "--license", str(licence)
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {out} (bundle)" in done.stdout
    assert (out / "LICENSE").read_text().startswith("CC BY-NC 4.0")
    done = run_cli("export", "--model_filename", str(model), "--output", str(tmp_path / "m.ts"), "--authors", "me")
    assert done.returncode == 2 and done.stderr.strip() == "error: --authors and --license: only for --format bundle"
    (tmp_path / "file").write_text("")
    done = run_cli("export", "--model_filename", str(model), "--format", "bundle", "--output", str(tmp_path / "file"))
    assert done.returncode == 2 and "a bundle is a folder" in done.stderr
