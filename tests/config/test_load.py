"""The config loader (unet3d/config/load.py): sections, legacy keys, per-split dataset blocks, paths and file lists,
cases, overrides, config files."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.config.conftest import base_config, error_of, parse
from tests.conftest import Payload, config
from unet3d.config.cases import parse_cases
from unet3d.config.load import apply_overrides, load_config
from unet3d.errors import ConfigError

BRATS = [2, 1, 4]


# --- sections ---------------------------------------------------------------------------------------------------------


def test_unknown_section_named_with_suggestion():
    message = error_of(base_config(trainig={"n_epochs": 3}))
    assert message.startswith("trainig:")
    assert "unknown section" in message
    assert "'training'" in message


def test_unknown_section_without_close_match_has_no_suggestion():
    message = error_of(base_config(zzzzqqq={}))
    assert message.startswith("zzzzqqq:")
    assert "did you mean" not in message


@pytest.mark.parametrize("section", ["model", "optimizer", "loss"])
def test_missing_required_section(section):
    data = base_config()
    del data[section]
    message = error_of(data)
    assert message.startswith(f"{section}:")
    assert "required" in message


# --- legacy cross_validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"folds": 3, "seed": 7}, [{"folds": 3, "seed": 7}]])
def test_legacy_cross_validation_forms(value):
    with pytest.warns(UserWarning, match="legacy"):
        config = parse(base_config(cross_validation=value))
    assert config.cross_validation.n_folds == 3
    assert config.cross_validation.random_seed == 7
    assert config.raw["cross_validation"]["n_folds"] == 3
    assert config.raw["cross_validation"]["random_seed"] == 7
    assert "folds" not in config.raw["cross_validation"]


def test_one_element_list_warns_about_the_list():
    with pytest.warns(UserWarning, match="one-element list"):
        parse(base_config(cross_validation=[{"n_folds": 4}]))


def test_modern_cross_validation_does_not_warn(recwarn):
    config = parse(base_config(cross_validation={"n_folds": 4, "random_seed": 1}))
    assert config.cross_validation.n_folds == 4
    assert not [w for w in recwarn if "legacy" in str(w.message)]


@pytest.mark.filterwarnings("ignore:cross_validation")
@pytest.mark.parametrize(
    "value",
    [{"folds": 3, "n_folds": 3}, {"seed": 1, "random_seed": 1}, [{"folds": 3, "n_folds": 4}]],
)
def test_legacy_and_new_spelling_together_is_an_error(value):
    with pytest.raises(ConfigError, match="both"):
        parse(base_config(cross_validation=value))


# --- per-split dataset blocks -----------------------------------------------------------------------------------------


def test_validation_block(data):
    directory, entries = data
    parsed = config(directory, entries, labels=BRATS, crop_foreground=False, validation={"crop_foreground": True})
    assert parsed.dataset_for("validation").crop_foreground is True
    assert parsed.dataset_for("training").crop_foreground is False


@pytest.mark.parametrize("key", ["name", "training", "validation"])
def test_split_block_refuses_name_and_nesting(data, key):
    directory, entries = data
    value = "SegmentationDatasetPersistent" if key == "name" else {"desired_shape": [8, 8, 8]}
    with pytest.raises(ConfigError) as info:  # when the config is loaded, before anything runs
        config(directory, entries, labels=BRATS, training={key: value})
    assert f"dataset.training.{key}" in str(info.value)


def test_split_block_unknown_key_names_the_path(data):
    directory, entries = data
    with pytest.raises(ConfigError) as info:
        config(directory, entries, labels=BRATS, validation={"desired_shap": [8, 8, 8]})
    assert "dataset.validation.desired_shap" in str(info.value)
    assert "desired_shape" in str(info.value)


# --- paths and file lists ---------------------------------------------------------------------------------------------


def write_config(folder, data):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    config_dir = tmp_path / "experiment"
    absolute = tmp_path / "elsewhere" / "b_t1.nii.gz"
    path = write_config(
        config_dir,
        base_config(
            training_filenames=[
                {"image": ["imgs/a_t1.nii.gz", "imgs/a_t2.nii.gz"], "label": "labels/a.nii.gz"},
                {"image": str(absolute), "label": None},
            ],
            dataset={"cache_dir": "cache"},
        ),
    )
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)
    config = load_config(os.path.relpath(path, other))
    first, second = config.groups["training"]
    assert first.images == [(config_dir / "imgs/a_t1.nii.gz").resolve(), (config_dir / "imgs/a_t2.nii.gz").resolve()]
    assert first.label == (config_dir / "labels/a.nii.gz").resolve()
    assert second.images == [absolute]
    assert second.label is None
    assert Path(config.dataset.cache_dir) == (config_dir / "cache").resolve()
    assert config.source == path.resolve()
    # The normalized raw copy holds the absolute paths, so it reproduces the config from anywhere.
    assert config.raw["training_filenames"][0]["image"] == [str(p) for p in first.images]
    assert config.raw["dataset"]["cache_dir"] == config.dataset.cache_dir


def test_json_file_list_loads(tmp_path):
    entries = [
        {"image": str(tmp_path / "x" / "c1.nii.gz"), "label": str(tmp_path / "x" / "c1_seg.nii.gz")},
        {"image": [str(tmp_path / "x" / "c2.nii")], "label": str(tmp_path / "x" / "c2_seg.nii"), "subject": 12},
    ]
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.json").write_text(json.dumps(entries))
    config = parse(base_config(training_filenames="lists/train.json"), base=tmp_path)
    cases = config.groups["training"]
    assert [c.case_id for c in cases] == ["c1", "c2"]
    assert cases[1].images == [tmp_path / "x" / "c2.nii"]
    assert cases[1].label == tmp_path / "x" / "c2_seg.nii"
    assert cases[1].subject == "12"


def test_npy_file_list_loads(tmp_path):
    entries = np.array(
        [
            {"image": [str(tmp_path / "a_t1.nii.gz"), str(tmp_path / "a_t2.nii.gz")], "label": str(tmp_path / "a.nii")},
            {"image": str(tmp_path / "b_t1.nii.gz"), "label": str(tmp_path / "b.nii")},
        ],
        dtype=object,
    )
    np.save(tmp_path / "train.npy", entries, allow_pickle=True)
    config = parse(base_config(training_filenames="train.npy"), base=tmp_path)
    first, second = config.groups["training"]
    assert first.images == [tmp_path / "a_t1.nii.gz", tmp_path / "a_t2.nii.gz"]
    assert first.label == tmp_path / "a.nii"
    assert [first.case_id, second.case_id] == ["a_t1", "b_t1"]


def test_malicious_payload_runs_code_when_loaded_naively(tmp_path):
    # Guard for the two tests below: the payload really does execute when unpickled without restriction.
    marker = tmp_path / "marker"
    np.save(tmp_path / "evil.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True)
    assert not marker.exists()
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()


def test_npy_with_foreign_class_is_refused(tmp_path):
    marker = tmp_path / "marker"
    entries = np.array([{"image": "a.nii"}, Payload(marker)], dtype=object)
    np.save(tmp_path / "evil.npy", entries, allow_pickle=True)
    with pytest.raises(ConfigError, match=r"evil\.npy"):
        parse(base_config(training_filenames="evil.npy"), base=tmp_path)
    assert not marker.exists()


class SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_hand_built_npy_calling_os_system_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|O", "fortran_order": False, "shape": (1,)})
        handle.write(pickle.dumps(SystemCall(f"touch {marker}"), protocol=3))
    assert b"system" in path.read_bytes()
    with pytest.raises(ConfigError, match=r"evil\.npy"):
        parse(base_config(training_filenames="evil.npy"), base=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("missing.json", "does not exist"),
        ("list.txt", r"expected a \.npy or \.json file list"),
        ({"image": "a.nii"}, "expected a list of cases"),
    ],
)
def test_bad_file_list_values(tmp_path, value, match):
    with pytest.raises(ConfigError, match=match):
        parse(base_config(training_filenames=value), base=tmp_path)


def test_malformed_json_file_list_is_a_config_error(tmp_path):
    (tmp_path / "train.json").write_text('[{"image": "a.nii"},]')
    with pytest.raises(ConfigError, match=r"train\.json"):
        parse(base_config(training_filenames="train.json"), base=tmp_path)


def test_missing_npy_list_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.npy"):
        parse(base_config(training_filenames="missing.npy"), base=tmp_path)


# --- cases ------------------------------------------------------------------------------------------------------------


def ids(entries):
    return [case.case_id for case in parse_cases(entries, Path("/data"), "training_filenames")]


def test_default_case_id_is_first_image_name_without_extension():
    assert ids(
        [
            {"image": ["s/BraTS_001_flair.nii.gz", "s/BraTS_001_t1.nii.gz"]},
            {"image": "s/case2.nii"},
            {"image": "s/case3.nrrd"},
        ]
    ) == ["BraTS_001_flair", "case2", "case3"]


def test_explicit_case_id_wins():
    assert ids([{"image": "s/img.nii.gz", "case_id": "patient7"}]) == ["patient7"]


def test_same_image_name_in_different_folders_gets_folder_prefix():
    assert ids([{"image": "subj01/t1.nii.gz"}, {"image": "subj02/t1.nii.gz"}, {"image": "subj02/other.nii.gz"}]) == [
        "subj01_t1",
        "subj02_t1",
        "other",
    ]


def test_same_image_twice_is_an_error():
    with pytest.raises(ConfigError, match=r"training_filenames\[1\].*repeats training_filenames\[0\]"):
        ids([{"image": "a/t1.nii"}, {"image": "a/t1.nii"}])


def test_explicit_case_id_is_not_renamed_when_a_derived_id_collides():
    # The first case's id is the user's; only the derived id of the second case may be changed.
    result = ids([{"image": "a/scan.nii.gz", "case_id": "sub1"}, {"image": "b/sub1.nii.gz"}])
    assert result[0] == "sub1"
    assert len(set(result)) == 2


def test_duplicate_explicit_case_ids_are_an_error():
    # Two cases given the same explicit id are silently renamed to 'a_k' and 'b_k' instead of being reported.
    with pytest.raises(ConfigError, match="'k'"):
        ids([{"image": "a/x.nii", "case_id": "k"}, {"image": "b/y.nii", "case_id": "k"}])


@pytest.mark.parametrize("case_id", ["", "a/b", 5])
def test_invalid_case_id(case_id):
    with pytest.raises(ConfigError, match=r"training_filenames\[0\]\.case_id"):
        ids([{"image": "a.nii", "case_id": case_id}])


def test_typo_in_case_key_is_an_error():
    with pytest.raises(ConfigError) as info:
        ids([{"image": "a.nii", "lable": "a_seg.nii"}])
    message = str(info.value)
    assert message.startswith("training_filenames[0].lable: unknown case key")
    assert "did you mean 'label'" in message


def test_unrelated_extra_case_keys_are_kept():
    (case,) = parse_cases([{"image": "a.nii", "site": "A"}], Path("/data"), "training_filenames")
    assert case.extra == {"site": "A"}
    assert case.to_json()["site"] == "A"


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"label": "a.nii"}, r"training_filenames\[0\]: missing 'image'"),
        ({"image": []}, r"training_filenames\[0\]\.image: empty list"),
        ({"image": 3}, r"training_filenames\[0\]\.image: expected a file path"),
        ("a.nii", r"training_filenames\[0\]: expected an object"),
    ],
)
def test_malformed_cases(entry, match):
    with pytest.raises(ConfigError, match=match):
        ids([entry])


# --- overrides and config files ---------------------------------------------------------------------------------------


def test_apply_overrides_sets_nested_keys_without_mutating_input():
    data = base_config(training={"n_epochs": 5, "batch_size": 1})
    before = copy.deepcopy(data)
    result = apply_overrides(
        data, {"training.batch_size": 2, "dataset.labels": [1, 2], "optimizer.lr": 0.5, "scheduler.name": "StepLR"}
    )
    assert data == before
    assert result["training"] == {"n_epochs": 5, "batch_size": 2}
    assert result["dataset"] == {"labels": [1, 2]}
    assert result["optimizer"] == {"name": "Adam", "lr": 0.5}
    assert result["scheduler"] == {"name": "StepLR"}
    result["model"]["name"] = "SegResNet"
    assert data["model"]["name"] == "UNet"


def test_apply_overrides_refuses_to_descend_into_a_non_object():
    data = base_config()
    with pytest.raises(ConfigError, match=r"model\.name\.x"):
        apply_overrides(data, {"model.name.x": 1})
    assert data == base_config()


def test_load_config_applies_overrides(tmp_path):
    path = write_config(tmp_path, base_config(training={"n_epochs": 5}))
    config = load_config(path, {"training.n_epochs": 7, "training.batch_size": 3})
    assert config.training.n_epochs == 7
    assert config.training.batch_size == 3
    with pytest.raises(ConfigError, match=r"training\.n_epochs: must be at least 1"):
        load_config(path, {"training.n_epochs": 0})


def test_load_config_never_modifies_the_file(tmp_path):
    data = base_config(
        cross_validation={"folds": 3, "seed": 7},
        training_filenames=[{"image": "a/t1.nii.gz", "label": "a/seg.nii.gz"}],
        dataset={"cache_dir": "cache"},
    )
    path = write_config(tmp_path, data)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before_bytes, before_mtime = path.read_bytes(), path.stat().st_mtime_ns
    with pytest.warns(UserWarning):
        config = load_config(path, {"training.n_epochs": 2})
    assert config.cross_validation.n_folds == 3
    assert path.read_bytes() == before_bytes
    assert path.stat().st_mtime_ns == before_mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_invalid_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "model": {"name": "UNet"},\n  "loss" {"name": "DiceLoss"}\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert "column 10" in message


def test_top_level_must_be_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json"):
        load_config(tmp_path / "nope.json")
