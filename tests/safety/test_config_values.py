"""Values that would run code or train on nonsense are refused when the config is loaded (issue 11, items 2-3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from unet3d.config.load import load_config, parse_assignments
from unet3d.errors import ConfigError

BASE = {"model": {"name": "UNet"}, "optimizer": {"name": "Adam"}, "loss": {"name": "DiceLoss", "sigmoid": True}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("cluster", "partition", "gpu\ntouch /tmp/pwned"),
        ("cluster", "account", "lab\n/bin/sh -c id"),
        ("cluster", "mem", "32G\nid"),
        ("cluster", "time", "1:00:00 && id"),
        ("cluster", "sbatch_options", ["--qos=long\nid"]),
        ("cluster", "sbatch_options", ["--qos=long --wrap=id"]),
        ("cluster", "setup", ["module load cuda\ntouch /tmp/pwned"]),
    ],
)
def test_values_for_the_slurm_script_that_could_inject_a_command_are_refused(tmp_path, section, key, value):
    config = {**BASE, section: {key: value}}
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: .* is refused: it goes into a shell script"):
        load_config(write(tmp_path, json.dumps(config)))


@pytest.mark.parametrize(
    ("text", "where", "spelled"),
    [
        ('"optimizer": {"name": "Adam", "lr": Infinity}', "optimizer.lr", "Infinity"),
        ('"training": {"gradient_clip": NaN}', "training.gradient_clip", "NaN"),
        ('"dataset": {"foreground_percentile": NaN}', "dataset.foreground_percentile", "NaN"),
        (
            '"cross_validation": {"n_folds": 3, "validation_fraction": NaN}',
            "cross_validation.validation_fraction",
            "NaN",
        ),
        ('"model": {"name": "UNet", "dropout": -Infinity}', "model.dropout", "-Infinity"),
        ('"dataset": {"spacing": [1.0, NaN, 1.0]}', "dataset.spacing[1]", "NaN"),
    ],
)
def test_non_finite_numbers_are_refused_at_load_naming_the_key(tmp_path, text, where, spelled):
    config = json.dumps(BASE)[:-1] + ", " + text + "}"
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, config))
    assert str(raised.value).startswith(f"{where}: {spelled} is not a finite number")


def test_non_finite_overrides_are_refused_too(tmp_path):
    path = write(tmp_path, json.dumps(BASE))
    with pytest.raises(ConfigError, match=r"^optimizer\.lr: NaN is not a finite number"):
        load_config(path, parse_assignments(["optimizer.lr=NaN"]))


def test_cli_refuses_an_injected_partition_before_writing_any_script(tmp_path):
    from tests.conftest import tiny_config
    from unet3d.data.synthetic import write_dataset

    entries = write_dataset(tmp_path, 3, seed=1, shape_range=(16, 16))
    config = tiny_config(entries, n_validation=0)
    config["cross_validation"] = {"n_folds": 3}
    config["cluster"] = {"partition": "gpu\ntouch /tmp/pwned"}
    path = write(tmp_path, json.dumps(config))
    done = run_cli("train", "--config_filename", str(path), "--setup_crossval_only")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: cluster.partition: 'gpu\\ntouch /tmp/pwned' is refused: it goes into a shell script; expected "
        "partition names of letters, digits, '_', '.' and '-', separated by commas"
    ]
    assert not (tmp_path / "exp" / "submit_folds.sbatch").exists()
