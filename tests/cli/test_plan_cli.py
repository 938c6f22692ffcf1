"""`unet3d-plan` then `unet3d-train`, as a user runs them, on data sets in the two public layouts."""

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import run_cli
from unet3d.data.synthetic_layouts import write_msd_dataset, write_nnunet_dataset

TINY_RUN = (
    "--set",
    "training.n_epochs=1",
    "--set",
    "training.iterations_per_epoch=2",
    "--set",
    "cross_validation.n_folds=2",
)


def plan_and_train(tmp_path, dataset):
    config = tmp_path / "plans" / "exp.json"
    planned = run_cli("plan", "--dataset", str(dataset), "--config_filename", str(config), "--device", "cpu")
    assert planned.returncode == 0, planned.stderr
    assert "config in" in planned.stdout and "planned:" in planned.stdout
    trained = run_cli("train", "--config_filename", str(config), *TINY_RUN, "--seed", "1")
    assert trained.returncode == 0, trained.stderr[-2000:]
    return json.loads(config.read_text()), tmp_path / "plans" / "exp"


def assert_label_maps_on_the_cases_grids(work_dir, cases, values):
    written = sorted(work_dir.glob("fold*/validation/*.nii.gz"))
    assert len(written) == len(cases)
    for path in written:
        reference = nib.load(str(cases[path.name.removesuffix(".nii.gz")]))
        label_map = nib.load(str(path))
        assert label_map.shape == reference.shape[:3]
        np.testing.assert_allclose(label_map.affine, reference.affine, atol=1e-4)
        assert set(np.unique(np.asanyarray(label_map.dataobj)).tolist()) <= values


def digest(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def refusals(result):
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_nothing_of_the_data_set_or_the_run_is_replaced(tmp_path, dataset, work_dir):
    """Issue 22, items 1-3, as a user runs them on the data set the model was trained on: predictions named as its
    labels, an export and a planned config onto its files, with and without `--overwrite`, all exit 2 and every
    file of the data set and of the experiment is kept."""
    labels, fold_config = dataset / "labelsTr", work_dir / "fold1" / "config.json"
    before = {**digest(dataset), **digest(tmp_path / "plans")}
    predicted = run_cli(
        "predict", "--model_dirs", str(work_dir / "fold1"), "--input", str(dataset / "imagesTr"),
        "--output_directory", str(labels),
    )  # fmt: skip
    expected = f"refusing to write {labels / 'syn_000.nii.gz'} (the label map of case 'syn_000'): it is the label of"
    assert refusals(predicted)[0].startswith(f"error: {expected} case 'syn_000' of the model's config {fold_config} (")
    # a config of its own (one other case) and --overwrite: the model's validation case is still its input
    trained = json.loads(fold_config.read_text())
    case = trained["validation_filenames"][0]
    other = {**trained, "training_filenames": trained["training_filenames"][:1]}
    del other["validation_filenames"]
    (tmp_path / "other.json").write_text(json.dumps(other))
    (tmp_path / "new").mkdir()
    for image in case["image"]:
        shutil.copy(image, tmp_path / "new")
    predicted = run_cli(
        "predict", "--model_dirs", str(work_dir / "fold1"), "--config_filename", str(tmp_path / "other.json"),
        "--input", str(tmp_path / "new"), "--output_directory", str(labels), "--overwrite",
    )  # fmt: skip
    owner = f"it is the label of case {case['case_id']!r} of the model's config {fold_config} (validation_filenames)"
    assert f"error: refusing to write {case['label']} " in predicted.stderr and owner in refusals(predicted)[0]
    model = work_dir / "fold1" / "model_best.pth"
    for target, owner in (
        (labels / "syn_001.nii.gz", "it is the label of case 'syn_001' of the model's config"),
        (dataset / "dataset.json", f"it is the description of the data set {dataset}"),
        (tmp_path / "plans" / "exp.json", f"it is the experiment config of the unet3d work dir {work_dir}"),
    ):
        exported = run_cli("export", "--model_filename", str(model), "--output", str(target), "--overwrite")
        assert refusals(exported)[0].startswith(f"error: refusing to write {target} (the exported network): {owner}")
    planned = run_cli(
        "plan", "--dataset", str(dataset), "--config_filename", str(tmp_path / "plans" / "exp.json"), "--overwrite"
    )
    assert f"(the planned config): it is the experiment config of the unet3d work dir {work_dir};" in planned.stderr
    assert refusals(planned)
    assert {**digest(dataset), **digest(tmp_path / "plans")} == before


def test_msd_4d_multimodal_exclusive_labels(tmp_path):
    dataset = write_msd_dataset(tmp_path / "Task01_Synthetic", 4, n_test=1, seed=4).parent
    config, work_dir = plan_and_train(tmp_path, dataset)
    assert config["training_filenames"] == config["test_filenames"] == "../Task01_Synthetic"
    assert config["model"]["in_channels"] == 4 and config["model"]["out_channels"] == 4  # background + 3 classes
    assert config["loss"]["name"] == "DiceCELoss" and config["loss"]["softmax"] is True
    assert "output_bias_prior" not in config["training"]  # measured for sigmoid regions only
    assert config["dataset"]["labels"] == [1, 2, 3] and config["dataset"]["setup_label_hierarchy"] is False
    cases = {p.name.removesuffix(".nii.gz"): p for p in (dataset / "imagesTr").glob("*.nii.gz")}
    assert_label_maps_on_the_cases_grids(work_dir, cases, {0, 1, 2, 3})
    assert len(list(work_dir.glob("fold*/test/syn_004.nii.gz"))) == 2
    assert_nothing_of_the_data_set_or_the_run_is_replaced(tmp_path, dataset, work_dir)
    assert json.loads((tmp_path / "plans" / "exp.fingerprint.json").read_text())["summary"]["n_cases"] == 4
    report = (tmp_path / "plans" / "exp.data_report.txt").read_text()
    assert report.startswith("4 cases\n") and "syn_003" in report


def test_nnunet_per_channel_files_with_regions(tmp_path):
    dataset = write_nnunet_dataset(tmp_path / "Dataset002_Synthetic", 4, seed=5)
    config, work_dir = plan_and_train(tmp_path, dataset)
    assert config["dataset"]["labels"] == [1, 2, 3] and config["dataset"]["setup_label_hierarchy"] is True
    assert config["loss"]["sigmoid"] is True and config["model"]["out_channels"] == 3
    assert config["training"]["output_bias_prior"] == 0.01  # small regions start on (benchmarks/nnunet_parity.py)
    cases = {p.name.removesuffix("_0000.nii.gz"): p for p in (dataset / "imagesTr").glob("*_0000.nii.gz")}
    assert_label_maps_on_the_cases_grids(work_dir, cases, {0, 1, 2, 3})
    summary = (work_dir / "cv_summary.csv").read_text()
    assert "dice_1+2+3" in summary and "dice_3" in summary
    assert_nothing_of_the_data_set_or_the_run_is_replaced(tmp_path, dataset, work_dir)


def test_anisotropic_ct_keeps_the_coarse_axis_and_picks_the_ct_scheme(tmp_path):
    dataset = write_nnunet_dataset(
        tmp_path / "Dataset003_CT",
        4,
        seed=6,
        channel_names=("CT",),
        regions=False,
        shape_range=(24, 32),
        spacing=(0.8, 0.8, 5.0),
        background_range=(-1000.0, -1000.0),
        orientations=("RAS", "LPS"),
    )
    config = tmp_path / "ct.json"
    planned = run_cli("plan", "--dataset", str(dataset), "--config_filename", str(config))
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(config.read_text())
    assert plan["dataset"]["spacing"] == [0.8, 0.8, 5.0]
    strides, kernels = plan["model"]["strides"], plan["model"]["kernel_size"]
    assert strides[1][2] == 1 and strides[1][:2] == [2, 2]  # in-plane halved first
    assert kernels[0] == [3, 3, 1]
    assert plan["dataset"]["normalization"] == "CTNormalized"
    assert plan["dataset"]["normalization_kwargs"]["lower"] < plan["dataset"]["normalization_kwargs"]["upper"]
    assert plan["dataset"]["crop_foreground"] is False
    assert "CT scheme (channel named 'CT')" in plan["planned"]["rules"]["dataset.normalization"]
    assert plan["training"]["amp"] is True  # the GPU profile


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.mkdir(), "--dataset: expected a .npy or .json file list or a data-set folder with dataset.json"),
        (
            lambda d: write_nnunet_dataset(d, 1, seed=1),
            "1 labelled case(s); planning a cross-validation needs at least 2",
        ),
    ],
)
def test_bad_data_sets_are_one_line_errors(tmp_path, make, message):
    make(tmp_path / "data")
    dataset = tmp_path / "data"
    result = run_cli("plan", "--dataset", str(dataset), "--config_filename", str(tmp_path / "out.json"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_an_existing_config_is_not_overwritten(tmp_path):
    dataset = write_nnunet_dataset(tmp_path / "data", 2, seed=1)
    existing = tmp_path / "mine.json"
    existing.write_text("{}")
    result = run_cli("plan", "--dataset", str(dataset), "--config_filename", str(existing))
    assert result.returncode == 2
    refusal = "(the planned config): it exists and this command did not write it; choose another output, or pass"
    assert f"{refusal} --overwrite" in result.stderr
    assert existing.read_text() == "{}"


@pytest.mark.parametrize("target", ["dataset.json", "labelsTr/syn_001.nii.gz", "imagesTr/syn_000_0001.nii.gz"])
def test_overwrite_never_replaces_the_data_set_s_own_files(tmp_path, target):
    # Issue 22, item 3: --overwrite with --config_filename DS/dataset.json replaced it, and the data set no longer read.
    dataset = write_nnunet_dataset(tmp_path / "data", 2, seed=1)
    before = {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()}
    result = run_cli("plan", "--dataset", str(dataset), "--config_filename", str(dataset / target), "--overwrite")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: refusing to write {dataset / target} (the planned config): it is " in result.stderr
    assert {p: p.read_bytes() for p in dataset.rglob("*") if p.is_file()} == before


def test_an_existing_fingerprint_or_report_is_kept_without_overwrite(tmp_path):
    dataset = write_nnunet_dataset(tmp_path / "data", 2, seed=1)
    (tmp_path / "exp.data_report.txt").write_text("my notes")
    result = run_cli("plan", "--dataset", str(dataset), "--config_filename", str(tmp_path / "exp.json"))
    refusal = "exp.data_report.txt (the data report): it exists and this command did not write it"
    assert result.returncode == 2 and refusal in result.stderr
    assert (tmp_path / "exp.data_report.txt").read_text() == "my notes" and not (tmp_path / "exp.json").exists()
