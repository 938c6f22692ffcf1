"""Reading the JSON files users give (configs, case lists, a data set's dataset.json): one ConfigError line naming
the file for every way such a file can be wrong, instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unet3d.errors import ConfigError


def read_json_value(path: Path, what: str = "file") -> Any:
    """The JSON value in `path`; a ConfigError naming the file and the problem otherwise: unreadable, not UTF-8,
    invalid JSON (line and column), or nested too deeply to read."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}); save it as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the JSON is nested too deeply to read") from None


def read_json(path: Path, what: str = "config") -> dict[str, Any]:
    """The JSON object in `path` (see `read_json_value`); a ConfigError when the top level is not an object."""
    data = read_json_value(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data
