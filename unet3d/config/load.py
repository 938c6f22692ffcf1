"""Read a config file into a `Config`: JSON, 3DUnetCNN's legacy spellings, file lists, paths, overrides.

Relative data paths resolve against the folder of the config file (not the working directory), so a config runs
the same from anywhere. The user's file is never written to; `Config.raw` is a normalized copy that can be saved.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from unet3d.config.fields import Problems, parse_named, parse_section, refuse_non_finite
from unet3d.config.jsonfile import read_json, read_json_value
from unet3d.config.layouts import dataset_json_of, read_layout
from unet3d.config.schema import (
    NAMED_SECTIONS,
    NOTE_SECTIONS,
    REQUIRED_SECTIONS,
    SECTION_RECORDS,
    SPLIT_BLOCKS,
    Case,
    Config,
    CrossValidationConfig,
    DatasetConfig,
)
from unet3d.errors import ConfigError
from unet3d.formats import strip_image_suffix
from unet3d.registry import suggest

TOP_LEVEL_KEYS = (*NAMED_SECTIONS, *SECTION_RECORDS, *NOTE_SECTIONS)
CASE_KEYS = ("image", "label", "case_id", "subject")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy object arrays of plain dicts/lists/strings and refuses every other global (no code runs)."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_npy_list(path: Path) -> list[Any]:
    """A file list saved with numpy (3DUnetCNN's `.npy` lists), loaded without allowing arbitrary pickled code."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in readers:
                raise ValueError(f"unsupported .npy format version {version}")
            _, _, dtype = readers[version](handle)
            if dtype.hasobject:
                array = _ArrayOnlyUnpickler(io.BytesIO(handle.read())).load()
            else:
                handle.seek(0)
                array = np.load(handle, allow_pickle=False)
    except (OSError, ValueError, pickle.UnpicklingError, EOFError) as error:
        raise ConfigError(f"{path}: cannot read file list ({error})") from None
    return np.asarray(array).tolist()


def case_id_from_path(path: Path) -> str:
    """A file name without its image ending: 'BraTS_001_flair.nii.gz' → 'BraTS_001_flair'."""
    return strip_image_suffix(path)


def _resolve(path: Any, base: Path, where: str) -> Path:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: expected a file path (a string), got {path!r}")
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else (base / resolved).resolve()


def parse_cases(entries: Any, base: Path, where: str) -> list[Case]:
    """A `*_filenames` value (list of case dicts; a path to a `.npy`/`.json` list; or an MSD / nnU-Net v2 data set's
    folder or `dataset.json`, see `config.layouts`) → cases with absolute paths."""
    if isinstance(entries, str):
        list_path = _resolve(entries, base, where)
        if dataset_json_of(list_path) is not None:
            entries = read_layout(list_path, where).cases_for(where.removesuffix("_filenames"))
            if not entries:
                raise ConfigError(f"{where}: data set {list_path} holds no cases for this group")
        elif list_path.suffix not in (".npy", ".json"):
            raise ConfigError(
                f"{where}: expected a .npy or .json file list or a data-set folder with dataset.json, got {list_path}"
            )
        elif not list_path.exists():
            raise ConfigError(f"{where}: file list {list_path} does not exist")
        else:
            entries = load_npy_list(list_path) if list_path.suffix == ".npy" else _read_json_list(list_path, where)
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list of cases or a path to a .npy/.json list")
    cases = []
    for index, entry in enumerate(entries):
        item = f"{where}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{item}: expected an object with 'image' (and 'label'), got {type(entry).__name__}")
        for key in entry:
            hint = suggest(key, CASE_KEYS)
            if key not in CASE_KEYS and hint:
                raise ConfigError(f"{item}.{key}: unknown case key{hint}")
        if "image" not in entry:
            raise ConfigError(f"{item}: missing 'image'")
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        if not images:
            raise ConfigError(f"{item}.image: empty list")
        image_paths = [_resolve(p, base, f"{item}.image") for p in images]
        label = _resolve(entry["label"], base, f"{item}.label") if entry.get("label") is not None else None
        case_id = entry.get("case_id")
        if case_id is not None and (not isinstance(case_id, str) or not case_id or "/" in case_id):
            raise ConfigError(f"{item}.case_id: expected a non-empty string without '/', got {case_id!r}")
        subject = entry.get("subject")
        extra = {k: v for k, v in entry.items() if k not in CASE_KEYS}
        cases.append(
            Case(
                image_paths,
                label,
                case_id or case_id_from_path(image_paths[0]),
                None if subject is None else str(subject),
                extra,
            )
        )
    _disambiguate_ids(cases, [isinstance(e, dict) and e.get("case_id") is not None for e in entries], where)
    return cases


def _read_json_list(path: Path, where: str) -> Any:
    try:
        return read_json_value(path, "file list")
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _disambiguate_ids(cases: list[Case], explicit: list[bool], where: str) -> None:
    """Make derived case ids unique within a group by prefixing their folder; explicit `case_id`s are kept as given,
    and a repeated id that cannot be told apart is an error."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.case_id] = counts.get(case.case_id, 0) + 1
    for case, given in zip(cases, explicit, strict=True):
        if counts[case.case_id] > 1 and not given:
            case.case_id = f"{case.images[0].parent.name}_{case.case_id}"
    seen: dict[str, int] = {}
    for index, case in enumerate(cases):
        if case.case_id in seen:
            raise ConfigError(
                f"{where}[{index}]: case id {case.case_id!r} repeats {where}[{seen[case.case_id]}]; give 'case_id'"
            )
        seen[case.case_id] = index


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
        raw["dataset"]["cache_dir"] = str(_resolve(dataset.cache_dir, base, "dataset.cache_dir"))
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
