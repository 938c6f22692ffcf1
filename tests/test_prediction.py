"""The library behind unet3d-predict (unet3d/prediction.py): which cases, and which config. The ensembles of
fold models and the refusals to write over inputs are in tests/safety/ and tests/cli/test_predict_cli.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from unet3d.config.load import parse_config
from unet3d.errors import CheckpointError, ConfigError
from unet3d.prediction import config_for, models_inputs, select_cases

SECTIONS = {"model": {"name": "UNet"}, "optimizer": {"name": "Adam"}, "loss": {"name": "DiceLoss", "sigmoid": True}}


def saved_model(path: Path, config: dict[str, Any] | None) -> Path:
    """A checkpoint file holding (or not) the config its model was trained with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model": {}, **({"config": config} if config is not None else {})}, path)
    return path


def test_the_config_saved_in_the_model_is_used_unless_one_is_given(tmp_path):
    model = saved_model(tmp_path / "run" / "model.pth", {**SECTIONS, "test_filenames": [{"image": ["scans/a.nii.gz"]}]})
    config = config_for([model], None)
    assert config.source == model
    assert config.groups["test"][0].images == [(tmp_path / "run" / "scans" / "a.nii.gz").resolve()]  # beside the model
    given = tmp_path / "given.json"
    given.write_text(json.dumps({**SECTIONS, "dataset": {"labels": [1]}}))
    assert config_for([model], given).labels == [1]
    with pytest.raises(CheckpointError, match=r"model.pth: holds no config; give --config_filename$"):
        config_for([saved_model(tmp_path / "bare" / "model.pth", None)], None)


def test_the_cases_come_from_exactly_one_of_a_group_and_an_input(tmp_path):
    config = parse_config({**SECTIONS, "training_filenames": [{"image": ["a/a_t1.nii.gz"]}]}, base=tmp_path)
    assert select_cases(config, "training", None) == config.groups["training"]
    for group, input_path in ((None, None), ("training", tmp_path)):
        with pytest.raises(ConfigError, match=r"^give exactly one of --group and --input$"):
            select_cases(config, group, input_path)
    message = r"^--group test: the config has no test_filenames \(groups there: training_filenames\)$"
    with pytest.raises(ConfigError, match=message):
        select_cases(config, "test", None)
    with pytest.raises(ConfigError, match=r"has no trainig_filenames; did you mean 'training'\?"):
        select_cases(config, "trainig", None)  # the same rule, and message, as unet3d-evaluate's
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "b_t1.nii.gz").write_bytes(b"")
    (case,) = select_cases(config, None, tmp_path / "new", ["_t1.nii.gz"])
    assert case.case_id == "b" and case.images == [tmp_path / "new" / "b_t1.nii.gz"]


def test_the_guard_holds_every_case_of_each_model_s_own_config_and_of_the_config_given(tmp_path):
    # Issue 22, item 1: with a config of one's own, the cases the model was trained and validated on were unguarded.
    def listing(*names: str) -> dict[str, Any]:
        return {
            **SECTIONS,
            "training_filenames": [{"image": [f"{n}.nii.gz"], "label": f"{n}_seg.nii.gz"} for n in names],
        }

    fold = saved_model(tmp_path / "fold1" / "model.pth", listing("a"))
    (tmp_path / "fold1" / "config.json").write_text(json.dumps(listing("b")))  # the work dir's config: what it names
    alone = saved_model(tmp_path / "alone" / "model.pth", listing("c"))
    foreign = saved_model(tmp_path / "foreign" / "model.pth", listing("d"))
    (tmp_path / "foreign" / "config.json").write_text('{"not": "unet3d"}')
    bare = saved_model(tmp_path / "bare" / "model.pth", None)
    given = tmp_path / "given.json"
    given.write_text(json.dumps(listing("e")))
    inputs = models_inputs([fold, alone, foreign, bare], config_for([fold], given), given)
    owners = {
        tmp_path / "fold1" / "b_seg.nii.gz": f"the model's config {tmp_path / 'fold1' / 'config.json'}",
        tmp_path / "alone" / "c_seg.nii.gz": f"the config saved in the model {alone}",
        tmp_path / "foreign" / "d_seg.nii.gz": f"the config saved in the model {foreign}",
        tmp_path / "e_seg.nii.gz": f"the config {given}",
    }
    for path, source in owners.items():
        case = path.name.removesuffix("_seg.nii.gz")
        assert inputs.owner(path) == f"the label of case {case!r} of {source} (training_filenames)"
    assert inputs.owner(bare) == f"the model {bare}" and inputs.owner(given) == f"the config {given}"
    assert inputs.owner(tmp_path / "fold1" / "a_seg.nii.gz") is None  # the work dir's config.json is the model's
