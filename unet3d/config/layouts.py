"""The two public data-set layouts as case lists: the Medical Segmentation Decathlon's and nnU-Net v2's raw format.

A `*_filenames` value may name such a data set (its folder, or its `dataset.json`) instead of listing cases, so a
config refers to the data set rather than copying it. `training_filenames` takes the labelled training cases; any
other group takes the unlabelled test cases (MSD's `test` list, nnU-Net's `imagesTs/`).

- MSD: `dataset.json` with `modality` ({"0": "FLAIR", ...}), `labels` ({"0": "background", "1": "edema", ...}),
  `training` ([{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]) and `test` (["./imagesTs/y.nii.gz"]);
  several modalities come as one 4D file per case (channels last), which the reader splits into channels.
- nnU-Net v2: `dataset.json` with `channel_names` ({"0": "CT"}), `labels` ({"background": 0, "liver": 1}, or regions
  {"whole": [1, 2, 3], "core": [2, 3], ...}), `file_ending` and `numTraining`; one file per channel,
  `imagesTr/{case}_{XXXX}{ending}`, and `labelsTr/{case}{ending}` (or an explicit `dataset` mapping of cases).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from unet3d.config.jsonfile import read_json
from unet3d.errors import ConfigError
from unet3d.formats import strip_image_suffix

DATASET_JSON = "dataset.json"


@dataclass(frozen=True)
class Layout:
    """A public data set read from its `dataset.json`: channel names in channel order, the label spec for a config
    (`labels`, `hierarchy`), the label names, and the cases as config entries with absolute paths."""

    kind: Literal["msd", "nnunet"]
    root: Path
    channel_names: list[str]
    labels: list[int | list[int]]
    hierarchy: bool
    label_names: dict[str, str] = field(default_factory=dict)  # str(value or values) → name
    training: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)

    def cases_for(self, group: str) -> list[dict[str, Any]]:
        """The cases a `<group>_filenames` key takes: the training cases for 'training', the test cases otherwise."""
        return self.training if group == "training" else self.test


def dataset_json_of(path: Path) -> Path | None:
    """The `dataset.json` that `path` names (the file, or a folder holding it); None for anything else."""
    if path.is_dir():
        candidate = path / DATASET_JSON
        return candidate if candidate.is_file() else None
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if isinstance(data, dict) and ("channel_names" in data or "modality" in data):
            return path
    return None


def read_layout(path: Path, where: str = "dataset") -> Layout:
    """Read an MSD or nnU-Net v2 data set from its folder or `dataset.json`; a ConfigError names what is wrong."""
    dataset_json = dataset_json_of(Path(path))
    if dataset_json is None:
        raise ConfigError(f"{where}: {path} is neither a data-set folder with {DATASET_JSON} nor such a file")
    meta = read_json(dataset_json)
    if "channel_names" in meta:
        return _nnunet(meta, dataset_json.parent, f"{where}: {dataset_json}")
    return _msd(meta, dataset_json.parent, f"{where}: {dataset_json}")


def _ordered_names(mapping: Any, key: str, where: str) -> list[str]:
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(f"{where}: '{key}' must map channel numbers to names")
    try:
        order = sorted(mapping, key=int)
    except ValueError:
        raise ConfigError(f"{where}: '{key}' keys must be channel numbers 0, 1, ...") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise ConfigError(f"{where}: '{key}' must number its channels 0 to {len(order) - 1}")
    return [str(mapping[k]) for k in order]


def _msd(meta: dict[str, Any], root: Path, where: str) -> Layout:
    channels = _ordered_names(meta.get("modality"), "modality", where)
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}: 'labels' must map label values to names")
    names: dict[int, str] = {}
    for key, name in labels.items():
        if not str(key).isdigit() or int(key) in names:
            raise ConfigError(
                f"{where}: 'labels' keys must be distinct label values 0, 1, 2, ... (non-negative), got {key!r}"
            )
        names[int(key)] = str(name)
    training = []
    for index, entry in enumerate(_listed(meta, "training", where)):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("image"), str)
            or not isinstance(entry.get("label"), str)
        ):
            raise ConfigError(f"{where}: training[{index}] must be {{'image': path, 'label': path}}, got {entry!r}")
        training.append(_entry(root, [entry["image"]], entry["label"]))
    expected = meta.get("numTraining")
    if expected is not None and expected != len(training):
        raise ConfigError(f"{where}: numTraining is {expected!r} but 'training' lists {len(training)} cases")
    test = []
    for index, item in enumerate(_listed(meta, "test", where)):
        image = item.get("image") if isinstance(item, dict) else item
        if not isinstance(image, str):
            raise ConfigError(f"{where}: test[{index}] must be an image path or {{'image': path}}, got {item!r}")
        test.append(_entry(root, [image]))
    values = sorted(v for v in names if v != 0)
    return Layout("msd", root, channels, values, False, {str(v): names[v] for v in values}, training, test)


def _listed(meta: dict[str, Any], key: str, where: str) -> list[Any]:
    """The list under `key` of a dataset.json (absent or null: none)."""
    items = meta.get(key) or []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: '{key}' must be a list, got {type(items).__name__}")
    return items


def _entry(root: Path, images: list[str], label: str | None = None) -> dict[str, Any]:
    paths = [(root / image).resolve() for image in images]
    entry: dict[str, Any] = {"image": [str(p) for p in paths], "case_id": strip_image_suffix(paths[0])}
    if label is not None:
        entry["label"] = str((root / label).resolve())
    return entry


def _nnunet(meta: dict[str, Any], root: Path, where: str) -> Layout:
    channels = _ordered_names(meta.get("channel_names"), "channel_names", where)
    ending = meta.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise ConfigError(f"{where}: 'file_ending' must be a file ending such as '.nii.gz'")
    labels, hierarchy, names = nnunet_labels(meta.get("labels"), where)
    if isinstance(meta.get("dataset"), dict):
        training = []
        for case_id, case in meta["dataset"].items():
            if (
                not isinstance(case, dict)
                or not isinstance(case.get("images"), list)
                or not all(isinstance(image, str) for image in case["images"])
                or not isinstance(case.get("label"), str)
            ):
                raise ConfigError(
                    f"{where}: dataset.{case_id} must be {{'images': [path, ...], 'label': path}}, got {case!r}"
                )
            training.append({**_entry(root, list(case["images"]), case["label"]), "case_id": case_id})
    else:
        training = _nnunet_folder(root / "imagesTr", root / "labelsTr", ending, len(channels), where)
    expected = meta.get("numTraining")
    if isinstance(expected, int) and expected != len(training):
        raise ConfigError(f"{where}: numTraining is {expected} but imagesTr holds {len(training)} cases")
    test = _nnunet_folder(root / "imagesTs", None, ending, len(channels), where) if (root / "imagesTs").is_dir() else []
    return Layout("nnunet", root, channels, labels, hierarchy, names, training, test)


def _nnunet_folder(images: Path, labels: Path | None, ending: str, n_channels: int, where: str) -> list[dict[str, Any]]:
    """Cases of an `imagesTr`-style folder: files `{case}_{XXXX}{ending}`, every channel present."""
    if not images.is_dir():
        raise ConfigError(f"{where}: folder {images} does not exist")
    pattern = re.compile(rf"(.+)_(\d{{4}}){re.escape(ending)}$")
    found: dict[str, set[int]] = {}
    for path in images.iterdir():
        match = pattern.match(path.name)
        if match:
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
        elif path.name.endswith(ending):
            raise ConfigError(f"{where}: {path} is not named {{case}}_{{XXXX}}{ending}")
    expected = set(range(n_channels))
    problems = []
    for case, present in sorted(found.items()):
        if present - expected:
            extra = ", ".join(f"{case}_{c:04d}{ending}" for c in sorted(present - expected))
            problems.append(f"{images}: {extra}: channel beyond the {n_channels} of channel_names")
        if expected - present:
            problems.append(f"{images}/{case}: channel file(s) {sorted(expected - present)} missing")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    entries = []
    for case in sorted(found):
        entry: dict[str, Any] = {
            "image": [str((images / f"{case}_{c:04d}{ending}").resolve()) for c in range(n_channels)],
            "case_id": case,
        }
        if labels is not None:
            entry["label"] = str((labels / f"{case}{ending}").resolve())
        entries.append(entry)
    return entries


def nnunet_labels(labels: Any, where: str) -> tuple[list[int | list[int]], bool, dict[str, str]]:
    """nnU-Net v2's `labels` (name → value, or name → values for regions) as a config's `labels` and
    `setup_label_hierarchy`. Regions must nest in a chain (BraTS: whole ⊃ core ⊃ enhancing): each channel is then
    the values of its region not in the next one, with the hierarchy on."""
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"{where}: 'labels' must map names to label values")
    regions: list[tuple[str, frozenset[int]]] = []
    for name, value in labels.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: labels.{name} must be a label value or a list of them, got {value!r}")
        if set(values) != {0}:
            regions.append((str(name), frozenset(values) - {0}))
    if not any(isinstance(v, list) for v in labels.values()):
        ordered = sorted(regions, key=lambda region: min(region[1]))
        return [min(r) for _, r in ordered], False, {str(min(r)): name for name, r in ordered}
    chain = sorted(regions, key=lambda region: -len(region[1]))
    steps: list[int | list[int]] = []
    for (name, outer), (inner_name, inner) in zip(chain, [*chain[1:], ("", frozenset())], strict=True):
        if not inner < outer:
            raise ConfigError(
                f"{where}: region {inner_name or name!r} is not inside {name!r}; unet3d trains regions that nest in a "
                "chain (list exclusive classes as single values instead)"
            )
        own = sorted(outer - inner)
        steps.append(own[0] if len(own) == 1 else own)
    names = {"+".join(str(v) for v in sorted(values)): name for name, values in chain}
    return steps, True, names
