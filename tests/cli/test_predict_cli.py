"""`unet3d-predict` as a user runs it: ensembles of fold models, labelled groups, errors, postprocessing, and label maps
nested as the saved probabilities say."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd

from tests.conftest import run_cli


def predict_cli(*args: str):
    return run_cli("predict", *args, timeout=300)


def test_ensemble_of_all_folds_on_a_folder_of_new_cases(trained_cv, tmp_path):
    _, work, folder = trained_cv
    result = predict_cli(
        "--model_dirs",
        str(work),
        "--input",
        str(folder / "extra"),
        "--output_directory",
        str(tmp_path / "out"),
        "--tta",
        "--save_probabilities",
    )
    assert result.returncode == 0, result.stderr
    assert "with 2 model(s) and mirror test-time augmentation" in result.stderr
    for case in ("new_000", "new_001"):
        prediction = nib.load(tmp_path / "out" / f"{case}.nii.gz")
        image = nib.load(folder / "extra" / case / f"{case}_flair.nii.gz")
        assert prediction.shape == image.shape
        np.testing.assert_allclose(prediction.affine, image.affine, atol=1e-4)
        probabilities = nib.load(tmp_path / "out" / f"{case}_probabilities.nii.gz")
        assert probabilities.shape == (*image.shape, 3)
        values = probabilities.get_fdata()
        assert values.min() >= 0 and values.max() <= 1 + 1e-6 and len(np.unique(values)) > 2
        # The label map is decoded from these probabilities: the whole tumour wherever its channel passes 0.5,
        # whatever the inner channels say (stored to within 1/510, so voxels right at the threshold may differ).
        label_map = np.asanyarray(nib.load(tmp_path / "out" / f"{case}.nii.gz").dataobj)
        assert np.mean((label_map > 0) != (values[..., 0] > 0.5)) < 0.01


def test_labelled_group_gets_metrics_and_the_model_config_is_used_by_default(trained_cv, tmp_path):
    _, work, _ = trained_cv
    result = predict_cli(
        "--model_filename",
        str(work / "fold1/model_best.pth"),
        "--group",
        "validation",
        "--output_directory",
        str(tmp_path / "val"),
    )
    assert result.returncode == 0, result.stderr
    assert f"metrics in {tmp_path / 'val' / 'metrics.csv'}" in result.stdout
    ours = pd.read_csv(tmp_path / "val/metrics.csv").set_index("case_id")
    during_cv = pd.read_csv(work / "fold1/validation/metrics.csv").set_index("case_id")
    pd.testing.assert_frame_equal(ours, during_cv)


def test_a_config_with_other_labels_is_a_clear_error(trained_cv, tmp_path):
    config_path, work, _ = trained_cv
    config = json.loads(config_path.read_text())
    config["dataset"]["labels"] = [1, 2]
    config["dataset"]["setup_label_hierarchy"] = False
    config["model"]["out_channels"] = 2
    other = config_path.with_name("other_labels.json")
    other.write_text(json.dumps(config))
    result = predict_cli(
        "--model_dirs",
        str(work),
        "--config_filename",
        str(other),
        "--group",
        "test",
        "--output_directory",
        str(tmp_path / "x"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model was trained with labels [2, 1, 4], the config has [1, 2]" in result.stderr


def test_cases_with_fewer_modalities_than_the_model_are_a_clear_error(trained_cv, tmp_path):
    _, work, folder = trained_cv
    result = predict_cli(
        "--model_dirs",
        str(work),
        "--input",
        str(folder / "extra"),
        "--modality_suffixes",
        "_flair.nii.gz",
        "_t1.nii.gz",
        "--output_directory",
        str(tmp_path),
        "--stitch_on_cpu",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: model.in_channels: is 4 but each case has 2 image channel(s)" in result.stderr


def test_input_and_group_are_exclusive_and_a_missing_folder_is_named(trained_cv, tmp_path):
    _, work, _ = trained_cv
    result = predict_cli("--model_dirs", str(work), "--output_directory", str(tmp_path))
    assert result.returncode == 2 and "give exactly one of --group and --input" in result.stderr
    result = predict_cli(
        "--model_dirs", str(work), "--input", str(tmp_path / "nowhere"), "--output_directory", str(tmp_path)
    )
    assert (
        result.returncode == 2 and f"{tmp_path / 'nowhere'}: input folder or case list does not exist" in result.stderr
    )


def test_cv_records_a_postprocessing_decision_and_predict_applies_one(trained_cv, tmp_path):
    from scipy import ndimage

    _, work, folder = trained_cv
    recorded = json.loads((work / "postprocessing.json").read_text())
    assert set(recorded) == {"keep_largest_component", "mean_dice_before", "mean_dice_after", "decided_on"}
    assert recorded["mean_dice_after"] >= recorded["mean_dice_before"]
    assert set(recorded["decided_on"]) == {"fold1", "fold2"}
    custom = tmp_path / "post.json"
    custom.write_text(json.dumps({"keep_largest_component": ["2+1+4"]}))
    result = predict_cli(
        "--model_dirs",
        str(work),
        "--input",
        str(folder / "extra"),
        "--output_directory",
        str(tmp_path / "out"),
        "--postprocessing",
        str(custom),
    )
    assert result.returncode == 0, result.stderr
    assert "largest connected component of ['2+1+4']" in result.stderr
    for case in ("new_000", "new_001"):
        label_map = np.asanyarray(nib.load(tmp_path / "out" / f"{case}.nii.gz").dataobj)
        _, count = ndimage.label(label_map > 0, structure=np.ones((3, 3, 3)))
        assert count <= 1


def test_cli_ensemble_label_maps_are_nested_in_the_saved_probabilities(trained_cv, tmp_path):
    """unet3d-predict with the ensemble of the fold models and --save_probabilities: each region of the label map is
    where its channel and every enclosing channel of the averaged probabilities are above 0.5."""
    _, work, folder = trained_cv
    out = tmp_path / "out"
    result = predict_cli(
        "--model_dirs", str(work), "--input", str(folder / "extra"), "--output_directory", str(out),
        "--save_probabilities", "--no_postprocessing",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    regions = [(2, 1, 4), (1, 4), (4,)]
    for case in ("new_000", "new_001"):
        label_map = np.asanyarray(nib.load(out / f"{case}.nii.gz").dataobj)
        probabilities = np.moveaxis(nib.load(out / f"{case}_probabilities.nii.gz").get_fdata(), -1, 0)
        clear = np.abs(probabilities - 0.5) > 1 / 255  # stored rounded to 1/255: skip voxels at the threshold
        inside = np.ones(label_map.shape, bool)
        for index, group in enumerate(regions):
            inside &= probabilities[index] > 0.5
            decided = clear[: index + 1].all(0)
            np.testing.assert_array_equal(np.isin(label_map, group)[decided], inside[decided])
