"""Read a config file into a `Config`: JSON, 3DUnetCNN's legacy spellings, file lists, paths, overrides.

Relative data paths resolve against the folder of the config file (not the working directory), so a config runs
the same from anywhere. The user's file is never written to; `Config.raw` is a normalized copy that can be saved.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

from unet3d.config.cases import parse_cases, resolve_path
from unet3d.config.fields import Problems, parse_named, parse_section, refuse_non_finite
from unet3d.config.jsonfile import read_json
from unet3d.config.schema import (
    NAMED_SECTIONS,
    NOTE_SECTIONS,
    REQUIRED_SECTIONS,
    SECTION_RECORDS,
    SPLIT_BLOCKS,
    Config,
    CrossValidationConfig,
    DatasetConfig,
)
from unet3d.errors import ConfigError
from unet3d.registry import suggest

TOP_LEVEL_KEYS = (*NAMED_SECTIONS, *SECTION_RECORDS, *NOTE_SECTIONS)


def _legacy_cross_validation(value: Any) -> Any:
    """3DUnetCNN's documented spellings: `folds`/`seed`, possibly inside a one-element list (sppin_config.json)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        warnings.warn("cross_validation: a one-element list is a legacy form; use an object", stacklevel=3)
        value = value[0]
    if isinstance(value, dict):
        renamed = {"folds": "n_folds", "seed": "random_seed"}
        for old, new in renamed.items():
            if old in value:
                if new in value:
                    raise ConfigError(f"cross_validation: both {old!r} and {new!r} are given")
                warnings.warn(f"cross_validation.{old} is a legacy spelling; use {new}", stacklevel=3)
                value = {(new if k == old else k): v for k, v in value.items()}
    return value


def split_dataset(raw: dict[str, Any], split: str) -> DatasetConfig | None:
    """The dataset settings of one split: the top-level `dataset` keys with the block `dataset.<split>` on top, or
    None when the split has no block. A ConfigError names each key of the block that is wrong, with its path."""
    block = (raw or {}).get(split) or {}
    if not block:
        return None
    problems = Problems()
    for key in block:
        if key in SPLIT_BLOCKS or key == "name":
            problems.add(f"dataset.{split}.{key}: cannot be set per split")
    problems.raise_any()
    merged = {k: v for k, v in raw.items() if k not in SPLIT_BLOCKS}
    merged.update(block)
    return parse_section(DatasetConfig, merged, f"dataset.{split}")


def parse_config(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Turn a JSON object into a Config. Relative paths resolve against `base`. Raises ConfigError."""
    raw = copy.deepcopy(data)
    problems = Problems()
    problems.run(refuse_non_finite, data, "")
    for key in data:
        if key not in TOP_LEVEL_KEYS and not key.endswith("_filenames"):
            problems.add(f"{key}: unknown section{suggest(key, TOP_LEVEL_KEYS)}")
    for key in REQUIRED_SECTIONS:
        if key not in data:
            problems.add(f"{key}: required section is missing")
    named = {key: problems.run(parse_named, data[key], key) for key in NAMED_SECTIONS if data.get(key) is not None}
    cross_validation = None
    if data.get("cross_validation") is not None:
        raw["cross_validation"] = _legacy_cross_validation(data["cross_validation"])
        cross_validation = problems.run(
            parse_section, CrossValidationConfig, raw["cross_validation"], "cross_validation"
        )
    dataset = problems.run(parse_section, SECTION_RECORDS["dataset"], data.get("dataset", {}), "dataset")
    splits = {split: problems.run(split_dataset, data.get("dataset") or {}, split) for split in SPLIT_BLOCKS}
    training = problems.run(parse_section, SECTION_RECORDS["training"], data.get("training", {}), "training")
    cluster = problems.run(parse_section, SECTION_RECORDS["cluster"], data.get("cluster") or {}, "cluster")
    groups = {
        key[: -len("_filenames")]: problems.run(parse_cases, value, base, key)
        for key, value in data.items()
        if key.endswith("_filenames")
    }
    problems.raise_any()  # every problem of the config at once, one line each
    for key, _value in list(raw.items()):
        if key.endswith("_filenames"):
            raw[key] = [case.to_json() for case in groups[key[: -len("_filenames")]]]
    if dataset.cache_dir is not None:
        raw["dataset"]["cache_dir"] = str(resolve_path(dataset.cache_dir, base, "dataset.cache_dir"))
        dataset.cache_dir = raw["dataset"]["cache_dir"]
        for settings in splits.values():
            if settings is not None:
                settings.cache_dir = dataset.cache_dir
    return Config(
        dataset=dataset,
        training=training,
        cross_validation=cross_validation,
        cluster=cluster,
        groups=groups,
        source=source,
        raw=raw,
        splits={split: settings for split, settings in splits.items() if settings is not None},
        **named,
    )


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` with dotted keys set (``{"training.batch_size": 2}``); intermediate objects are created."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: cannot set a key inside {part!r}, which is not an object")
            node = child
        node[leaf] = value
    return data


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`KEY.PATH=VALUE` strings (`--set`) → {dotted key: value}; the value is JSON when it parses as JSON, else the
    string itself."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load and parse the config at `path` (plus optional dotted overrides). Raises ConfigError."""
    path = Path(path).expanduser().resolve()
    data = read_json(path)
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_config(data, base=path.parent, source=path)
