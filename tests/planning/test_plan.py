"""The planner as a library (unet3d/planning/plan.py): checks first, a config that preflight accepts, nothing lost."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import RandCropByLabelClassesd, RandCropByPosNegLabeld

from unet3d.data.synthetic_layouts import write_nnunet_dataset
from unet3d.errors import ConfigError, DataError
from unet3d.planning.plan import plan_experiment


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_nnunet_dataset(
        tmp_path_factory.mktemp("plan") / "Dataset004", 3, seed=7, spacing=(0.8, 0.8, 5.0), orientations=("RAS",)
    )


def test_two_plans_in_one_folder_keep_their_own_fingerprints(tmp_path, dataset):
    for name, device in (("gpu_plan", "gpu"), ("cpu_plan", "cpu")):
        plan = plan_experiment(dataset, tmp_path / f"{name}.json", device=device, progress=False)
        assert plan.config["planned"]["fingerprint"] == f"{name}.fingerprint.json"
    assert {p.name for p in tmp_path.iterdir()} == {
        f"{n}{s}" for n in ("gpu_plan", "cpu_plan") for s in (".json", ".fingerprint.json", ".data_report.txt")
    }
    gpu = json.loads((tmp_path / "gpu_plan.json").read_text())
    cpu = json.loads((tmp_path / "cpu_plan.json").read_text())
    assert gpu["model"]["filters"][0] == 32 and cpu["model"]["filters"][0] == 16
    assert gpu["training"]["amp"] is True and cpu["training"]["amp"] is False
    assert gpu["planned"]["device"] == "cuda" and cpu["planned"]["device"] == "cpu"  # train's --device vocabulary


def test_anisotropic_data_rotates_in_plane_only(tmp_path, dataset):
    config = plan_experiment(dataset, tmp_path / "p.json", progress=False).config
    rotation = config["dataset"]["training"]["spatial_augmentations"][2]
    assert rotation["name"] == "RandAffined" and rotation["rotate_range"] == [0.0, 0.0, 0.5236]
    assert "only about the coarse axis 2" in config["planned"]["rules"]["augmentation"]


def test_spacing_given_by_the_user_is_kept_and_the_network_follows(tmp_path, dataset):
    config = plan_experiment(dataset, tmp_path / "p.json", spacing=(1.6, 1.6, 1.6), progress=False).config
    assert config["dataset"]["spacing"] == [1.6, 1.6, 1.6]
    assert config["model"]["strides"][1] == [2, 2, 2]
    assert config["planned"]["rules"]["dataset.spacing"] == "given (--spacing)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_folds": 1}, "--n_folds: expected at least 2, got 1"),
        ({"spacing": (1.0, 0.0, 1.0)}, r"--spacing: expected three positive numbers \(mm\)"),
        ({"device": "tpu"}, "--device: expected one of auto, cpu, cuda, npu, xpu, mps, gpu, got 'tpu'"),
        ({"gpu_memory_gb": 0.0}, "--gpu_memory_gb: expected a positive number"),
    ],
)
def test_bad_options_are_refused_before_any_work(tmp_path, dataset, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan_experiment(dataset, tmp_path / "p.json", progress=False, **kwargs)
    assert not any(tmp_path.iterdir())


def test_every_file_is_checked_before_any_statistic(tmp_path):
    root = write_nnunet_dataset(tmp_path / "d", 3, seed=8)
    (root / "labelsTr" / "syn_002.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"syn_002\.nii\.gz: cannot read as an image"):
        plan_experiment(root, tmp_path / "out" / "p.json", progress=False)
    assert not (tmp_path / "out").exists()


def test_label_values_the_data_set_does_not_declare_are_refused_before_planning(tmp_path):
    # Issue 22: the planner accepted label files holding values absent from dataset.json; training then refused them.
    from unet3d.data.synthetic_layouts import write_msd_dataset

    path = write_msd_dataset(tmp_path / "msd", 3, seed=1, shape_range=(16, 16))
    meta = json.loads(path.read_text())
    del meta["labels"]["3"]
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"syn_000.nii.gz: label values \[3\] are not among the declared labels"):
        plan_experiment(path.parent, tmp_path / "plan.json", device="cpu", progress=False)
    assert not (tmp_path / "plan.json").exists()


def test_single_slice_cases_and_an_absurd_spacing_are_refused(tmp_path):
    # Issue 22: (X, Y, 1) data and a spacing that made a 280 TB volume were planned without a word.
    import nibabel as nib
    import numpy as np

    root = write_nnunet_dataset(tmp_path / "nn", 3, seed=2, shape_range=(16, 16))
    with pytest.raises(ConfigError, match=r"--spacing: \[0.001, 0.001, 0.001\] mm resamples the largest case to"):
        plan_experiment(root, tmp_path / "tiny.json", device="cpu", progress=False, spacing=[0.001] * 3)
    for path in [*root.glob("imagesTr/syn_001_*.nii.gz"), root / "labelsTr" / "syn_001.nii.gz"]:
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, :1], image.affine), path)
    with pytest.raises(DataError, match=r"1 of 3 cases are a single slice \(syn_001: shape"):
        plan_experiment(root, tmp_path / "flat.json", device="cpu", progress=False)
    assert not (tmp_path / "flat.json").exists() and not (tmp_path / "tiny.json").exists()


def test_a_zeroed_background_plans_the_cropped_median_case(tmp_path):
    # every case is a head of at most 30 voxels per axis inside a 60-voxel field of zeros
    root = tmp_path / "Dataset009"
    write_nnunet_dataset(root, 3, seed=3, shape_range=(28, 30), orientations=("RAS",), spacing=(1.0, 1.0, 1.0))
    for path in (root / "imagesTr").glob("*.nii.gz"):
        image = nib.load(str(path))
        padded = np.zeros((60, 60, 60), dtype=np.float32)
        data = np.asarray(image.dataobj, dtype=np.float32)
        padded[: data.shape[0], : data.shape[1], : data.shape[2]] = np.where(data > 0, data, 0)
        nib.save(nib.Nifti1Image(padded, image.affine), str(path))
    for path in (root / "labelsTr").glob("*.nii.gz"):
        image = nib.load(str(path))
        padded = np.zeros((60, 60, 60), dtype=np.uint8)
        data = np.asarray(image.dataobj)
        padded[: data.shape[0], : data.shape[1], : data.shape[2]] = data
        nib.save(nib.Nifti1Image(padded, image.affine), str(path))
    config = plan_experiment(root, tmp_path / "p.json", progress=False).config
    assert config["dataset"]["crop_foreground"] is True
    assert all(n <= 30 for n in config["planned"]["median_shape"])  # not the 60-voxel field
    stride = [math.prod(level[axis] for level in config["model"]["strides"]) for axis in range(3)]
    planned = zip(config["inference"]["roi_size"], config["planned"]["median_shape"], stride, strict=True)
    for patch, median, multiple in planned:
        assert 0 <= patch - median < multiple and patch % multiple == 0  # rounded up to the stride, as nnU-Net


def test_the_plan_says_whether_one_resolution_suffices(tmp_path, dataset):
    config = plan_experiment(dataset, tmp_path / "p.json", progress=False).config
    assert "one resolution" in config["planned"]["rules"]["resolution"]
    assert "low_resolution" not in config["planned"]
    assert len(config["planned"]["median_shape"]) == 3


def test_patches_are_centred_on_each_label_value_alike(tmp_path, dataset):
    # nnU-Net's oversampling: a third of the patches on a foreground value drawn uniformly, so the enhancing tumour
    # (value 3, the smallest) is the centre of one patch in nine, however few voxels it has
    config = plan_experiment(dataset, tmp_path / "p.json", progress=False).config
    crop = config["dataset"]["training"]["spatial_augmentations"][0]
    assert crop["name"] == "RandCropByLabelClassesd" and crop["ratios"] == [6, 1, 1, 1]
    assert "drawn uniformly among [1, 2, 3]" in config["planned"]["rules"]["augmentation"]
    label = np.zeros((1, 48, 48, 48), dtype=np.uint8)
    label[0, 4:44, 4:44, 4:44] = 1  # large
    label[0, 10:30, 10:30, 10:30] = 2
    label[0, 40, 40, 40] = 3  # one voxel
    options = {k: v for k, v in crop.items() if k != "name"} | {"keys": ["label"], "spatial_size": [8, 8, 8]}
    sampled = RandCropByLabelClassesd(**options)
    posneg = RandCropByPosNegLabeld(["label"], "label", [8, 8, 8], pos=1, neg=2, allow_smaller=True)
    rates = {}
    for name, transform in (("classes", sampled), ("posneg", posneg)):
        transform.set_random_state(0)
        hits = sum(bool((transform({"label": label})[0]["label"] == 3).any()) for _ in range(900))
        rates[name] = hits / 900
    assert rates["classes"] == pytest.approx(1 / 9, abs=0.035)
    assert rates["posneg"] < rates["classes"] / 4  # one voxel of 64,000 foreground voxels: by chance only


def test_exclusive_classes_with_sparse_values_get_a_weight_per_value(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset010", 3, seed=4, regions=False, orientations=("RAS",))
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "edema": 1, "non-enhancing core": 2, "enhancing tumour": 4}
    (root / "dataset.json").write_text(json.dumps(meta))
    for path in (root / "labelsTr").glob("*.nii.gz"):
        image = nib.load(str(path))
        data = np.asarray(image.dataobj).astype(np.uint8)
        data[data == 3] = 4
        nib.save(nib.Nifti1Image(data, image.affine), str(path))
    config = plan_experiment(root, tmp_path / "p.json", progress=False).config
    crop = config["dataset"]["training"]["spatial_augmentations"][0]
    assert crop["ratios"] == [6, 1, 1, 0, 1] and crop["num_classes"] == 5
