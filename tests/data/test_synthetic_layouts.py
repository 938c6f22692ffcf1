"""Synthetic data sets in the public layouts (unet3d/data/synthetic_layouts.py)."""

import json

import nibabel as nib
import numpy as np

from unet3d.data.synthetic_layouts import write_msd_dataset, write_nnunet_dataset


def test_msd_layout_has_4d_images_labels_and_its_dataset_json(tmp_path):
    dataset_json = write_msd_dataset(tmp_path, 2, n_test=1, seed=3, spacing=(0.8, 0.8, 5.0))
    meta = json.loads(dataset_json.read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1", "2": "T1CE", "3": "T2"}
    assert meta["labels"] == {"0": "background", "1": "edema", "2": "non-enhancing core", "3": "enhancing tumour"}
    assert meta["training"][1] == {"image": "./imagesTr/syn_001.nii.gz", "label": "./labelsTr/syn_001.nii.gz"}
    assert meta["test"] == ["./imagesTs/syn_002.nii.gz"]
    image, label = (
        nib.load(tmp_path / "imagesTr" / "syn_000.nii.gz"),
        nib.load(tmp_path / "labelsTr" / "syn_000.nii.gz"),
    )
    assert image.shape == (*label.shape, 4)
    np.testing.assert_allclose(image.affine, label.affine)
    assert np.allclose(np.linalg.norm(label.affine[:3, :3], axis=0), (0.8, 0.8, 5.0))
    assert set(np.unique(np.asanyarray(label.dataobj)).tolist()) == {0, 1, 2, 3}


def test_nnunet_layout_has_one_file_per_channel_and_is_deterministic(tmp_path):
    first = write_nnunet_dataset(tmp_path / "a", 2, seed=4, channel_names=("CT", "PET"), regions=False)
    second = write_nnunet_dataset(tmp_path / "b", 2, seed=4, channel_names=("CT", "PET"), regions=False)
    meta = json.loads((first / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT", "1": "PET"} and meta["file_ending"] == ".nii.gz"
    assert "regions_class_order" not in meta and meta["labels"]["enhancing tumour"] == 3
    assert sorted(p.name for p in (first / "imagesTr").iterdir()) == [
        "syn_000_0000.nii.gz",
        "syn_000_0001.nii.gz",
        "syn_001_0000.nii.gz",
        "syn_001_0001.nii.gz",
    ]
    same = [
        np.array_equal(nib.load(first / "labelsTr" / n).get_fdata(), nib.load(second / "labelsTr" / n).get_fdata())
        for n in ("syn_000.nii.gz", "syn_001.nii.gz")
    ]
    assert all(same)


def test_nnunet_regions_nest(tmp_path):
    root = write_nnunet_dataset(tmp_path, 1, seed=5)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"]["whole tumour"] == [1, 2, 3] and meta["regions_class_order"] == [1, 2, 3]
