"""Reading users' JSON files (unet3d/config/jsonfile.py): one line naming the file, never a traceback (issue 22)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from unet3d.config.jsonfile import read_json, read_json_value
from unet3d.errors import ConfigError


def test_a_latin1_file_is_named_with_the_offending_byte(tmp_path):
    path = tmp_path / "exp.json"
    path.write_bytes('{"name": "Tumeur é"}'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"exp.json: is not UTF-8 text \(byte 17 is 0xe9\); save it as UTF-8"):
        read_json(path)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": 1}).encode())
    assert read_json(path) == {"a": 1}


def test_json_nested_200000_levels_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ConfigError, match=r"deep\.json: the JSON is nested too deeply to read"):
        read_json_value(path)


def test_invalid_json_and_a_non_object_name_the_place(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,}')
    with pytest.raises(ConfigError, match=r"bad.json: invalid JSON at line 1 column 9"):
        read_json(path)
    path.write_text("[1]")
    with pytest.raises(ConfigError, match="expected a JSON object at the top level, got list"):
        read_json(path)


def test_the_train_command_reports_a_latin1_config_in_one_line(tmp_path):
    path = tmp_path / "exp.json"
    path.write_bytes('{"model": {"name": "UNet"}, "x": "é"}'.encode("latin-1"))
    result = run_cli("train", "--config_filename", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {path}: is not UTF-8 text")
