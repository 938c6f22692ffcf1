"""Public data-set layouts (unet3d/config/layouts.py): MSD and nnU-Net v2 folders as case lists."""

import json

import nibabel as nib
import pytest

from unet3d.config.layouts import nnunet_labels, read_layout
from unet3d.config.load import parse_config
from unet3d.data.synthetic_layouts import write_msd_dataset, write_nnunet_dataset
from unet3d.errors import ConfigError


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    return write_msd_dataset(tmp_path_factory.mktemp("msd") / "Task01", 3, n_test=2, seed=1)


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    return write_nnunet_dataset(tmp_path_factory.mktemp("nnunet") / "Dataset001", 3, n_test=1, seed=2)


def test_msd_cases_are_one_4d_image_each_with_exclusive_labels(msd):
    layout = read_layout(msd)
    assert layout.kind == "msd"
    assert layout.channel_names == ["FLAIR", "T1", "T1CE", "T2"]
    assert (layout.labels, layout.hierarchy) == ([1, 2, 3], False)
    assert [c["case_id"] for c in layout.training] == ["syn_000", "syn_001", "syn_002"]
    first = layout.training[0]
    assert first["image"] == [str(msd.parent / "imagesTr" / "syn_000.nii.gz")]
    assert first["label"] == str(msd.parent / "labelsTr" / "syn_000.nii.gz")
    assert nib.load(first["image"][0]).shape[3] == 4  # channels last
    assert [c["case_id"] for c in layout.test] == ["syn_003", "syn_004"]
    assert "label" not in layout.test[0]


def test_nnunet_cases_have_one_file_per_channel_and_regions_become_a_hierarchy(nnunet):
    layout = read_layout(nnunet / "dataset.json")
    assert layout.kind == "nnunet"
    assert (layout.labels, layout.hierarchy) == ([1, 2, 3], True)
    assert layout.label_names == {"1+2+3": "whole tumour", "2+3": "tumour core", "3": "enhancing tumour"}
    case = layout.training[1]
    assert case["case_id"] == "syn_001"
    assert case["image"] == [str(nnunet / "imagesTr" / f"syn_001_{c:04d}.nii.gz") for c in range(4)]
    assert case["label"] == str(nnunet / "labelsTr" / "syn_001.nii.gz")
    assert [c["case_id"] for c in layout.test] == ["syn_003"]


def test_a_config_names_the_data_set_instead_of_listing_its_cases(tmp_path, msd, nnunet):
    data = {
        "model": {"name": "UNet"},
        "optimizer": {"name": "Adam"},
        "loss": {"name": "DiceLoss"},
        "training_filenames": str(nnunet),
        "test_filenames": str(msd),
    }
    config = parse_config(data, base=tmp_path)
    assert [c.case_id for c in config.groups["training"]] == ["syn_000", "syn_001", "syn_002"]
    assert len(config.groups["training"][0].images) == 4
    assert [c.case_id for c in config.groups["test"]] == ["syn_003", "syn_004"]
    assert config.raw["training_filenames"][0]["case_id"] == "syn_000"  # saved configs list the cases


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"background": 0, "liver": 1, "tumour": 2}, ([1, 2], False)),
        ({"background": 0, "whole": [1, 2, 4], "core": [2, 4], "enh": 4}, ([1, 2, 4], True)),
        ({"background": 0, "outer": [1, 5, 2], "inner": [2]}, ([[1, 5], 2], True)),
    ],
)
def test_nnunet_labels(labels, expected):
    assert nnunet_labels(labels, "x")[:2] == expected


def test_regions_that_do_not_nest_are_refused_with_their_names():
    with pytest.raises(ConfigError, match="region 'b' is not inside 'a'"):
        nnunet_labels({"background": 0, "a": [1, 2], "b": [2, 3]}, "x")


def test_a_missing_channel_file_is_named(tmp_path):
    root = write_nnunet_dataset(tmp_path / "d", 2, seed=3)
    (root / "imagesTr" / "syn_001_0002.nii.gz").unlink()
    with pytest.raises(ConfigError, match=r"syn_001: channel file\(s\) \[2\] missing"):
        read_layout(root)


def test_an_extra_channel_file_is_named(tmp_path):
    # Issue 22: an extra channel file was reported as "channel file(s) [] missing".
    import shutil

    root = write_nnunet_dataset(tmp_path / "d", 2, seed=3)
    shutil.copy(root / "imagesTr" / "syn_001_0003.nii.gz", root / "imagesTr" / "syn_001_0004.nii.gz")
    with pytest.raises(ConfigError, match=r"syn_001_0004.nii.gz: channel beyond the 4 of channel_names") as raised:
        read_layout(root)
    assert "missing" not in str(raised.value)


def test_numtraining_must_match_the_folder(tmp_path):
    root = write_nnunet_dataset(tmp_path / "d", 2, seed=3)
    meta = json.loads((root / "dataset.json").read_text())
    meta["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="numTraining is 5 but imagesTr holds 2 cases"):
        read_layout(root)


def test_a_folder_without_dataset_json_is_not_a_data_set(tmp_path):
    data = {"model": {"name": "UNet"}, "optimizer": {"name": "Adam"}, "loss": {"name": "DiceLoss"}}
    with pytest.raises(ConfigError, match=r"training_filenames: expected a \.npy or \.json file list or a data-set"):
        parse_config({**data, "training_filenames": str(tmp_path)}, base=tmp_path)


def _set(path, value):
    """A mutation of a dataset.json: the value at a path of keys and indices."""

    def mutate(meta):
        *parents, last = path
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set(("training", 1, "label"), 5), r"training\[1\] must be \{'image': path, 'label': path\}, got"),
        (_set(("training", 1, "label"), None), r"training\[1\] must be .* 'label': None\}"),
        (_set(("test",), [5]), r"test\[0\] must be an image path or \{'image': path\}, got 5"),
        (_set(("test",), "imagesTs"), "'test' must be a list, got str"),
        (_set(("numTraining",), 7), "numTraining is 7 but 'training' lists 3 cases"),
        (_set(("labels", "-1"), "below"), r"'labels' keys must be distinct label values .* got '-1'"),
    ],
)
def test_a_malformed_msd_dataset_json_is_one_line(tmp_path, mutate, message):
    # Issue 22: these were tracebacks (or, for a null label, a case silently dropped).
    path = write_msd_dataset(tmp_path / "msd", 3, n_test=1, seed=1, shape_range=(16, 16))
    meta = json.loads(path.read_text())
    mutate(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=message):
        read_layout(path.parent)


def test_a_malformed_nnunet_case_entry_is_one_line(tmp_path):
    root = write_nnunet_dataset(tmp_path / "nn", 2, seed=1, shape_range=(16, 16))
    meta = json.loads((root / "dataset.json").read_text())
    meta["dataset"] = {"x": "oops"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"dataset.x must be \{'images': \[path, ...\], 'label': path\}, got 'oops'"):
        read_layout(root)
