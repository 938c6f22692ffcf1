"""Cases, in one place: the record (image files, label, ids), case lists as configs give them (lists of entries,
`.json`/`.npy` files, MSD / nnU-Net v2 data sets through `config.layouts`) with their ids made unique, cases found in
a folder by their modality endings (`unet3d-predict --input`), and label maps found by case id (pairing predictions
with their truth). Group selection is `Config.cases_of`.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from unet3d.config.jsonfile import read_json_value
from unet3d.config.layouts import dataset_json_of, read_layout
from unet3d.errors import ConfigError, DataError
from unet3d.formats import IMAGE_SUFFIXES, PROBABILITY_SUFFIX, image_suffix, strip_image_suffix
from unet3d.registry import suggest

if TYPE_CHECKING:
    from unet3d.config.schema import Config

log = logging.getLogger("unet3d")
CASE_KEYS = ("image", "label", "case_id", "subject")


@dataclass
class Case:
    """One case: its image files (one per modality, in channel order), its label map, and its identifiers."""

    images: list[Path]
    label: Path | None
    case_id: str
    subject: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"image": [str(p) for p in self.images]}
        if self.label is not None:
            entry["label"] = str(self.label)
        entry["case_id"] = self.case_id
        if self.subject is not None:
            entry["subject"] = self.subject
        return {**entry, **self.extra}


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


def resolve_path(path: Any, base: Path, where: str) -> Path:
    """A path from a config: `~` expanded, relative to `base` (the config's folder); a ConfigError naming `where`."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: expected a file path (a string), got {path!r}")
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else (base / resolved).resolve()


def parse_cases(entries: Any, base: Path, where: str) -> list[Case]:
    """A `*_filenames` value (list of case dicts; a path to a `.npy`/`.json` list; or an MSD / nnU-Net v2 data set's
    folder or `dataset.json`, see `config.layouts`) → cases with absolute paths."""
    if isinstance(entries, str):
        list_path = resolve_path(entries, base, where)
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
        image_paths = [resolve_path(p, base, f"{item}.image") for p in images]
        label = resolve_path(entry["label"], base, f"{item}.label") if entry.get("label") is not None else None
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


def modality_suffixes(config: Config) -> list[str]:
    """How the config's cases name their modalities: the end of each image file name after the case's common
    prefix (cut back to its last separator, which stays in the prefix), e.g. ['flair.nii.gz', 't1.nii.gz', ...] for
    BraTS, ['0000.nii.gz', ...] for nnU-Net-style names."""
    for group in ("training", "validation", *sorted(config.groups)):
        for case in config.groups.get(group, []):
            names = [p.name for p in case.images]
            if len(names) == 1:
                return [image_suffix(names[0]) or Path(names[0]).suffix]
            prefix = _case_prefix(names)
            return [name[len(prefix) :] for name in names]
    raise ConfigError("the config lists no case to learn the modality file names from; give --modality_suffixes")


def _case_prefix(names: Sequence[str]) -> str:
    """The common start of a case's file names, cut back to a separator ('X_t1' of X_t1 and X_t1ce → 'X_')."""
    common = os.path.commonprefix(list(names))  # noqa: RUF071 - file names compared character by character on purpose
    cut = max(common.rfind(c) for c in "_-.")
    return common[: cut + 1]


def _files_ending(folder: Path, ending: str) -> list[Path]:
    """Files under `folder` whose names end with `ending`, sorted; symlinked folders and files are followed (each
    real folder once, so a link loop ends)."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(root) / name for name in files if name.endswith(ending) and (Path(root) / name).is_file()]
    return sorted(found)


def cases_in_folder(folder: Path, suffixes: Sequence[str], source: str = "the first modality ending") -> list[Case]:
    """Cases found under `folder` (recursively): files that share a prefix and end with each modality suffix
    (`source`: where the first suffix came from, for the message when no file has it)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: input folder does not exist")
    first, *others = suffixes
    cases = []
    incomplete = []
    for path in _files_ending(folder, first):
        prefix = path.name[: -len(first)] if first else path.name
        images = [path] + [path.with_name(prefix + suffix) for suffix in others]
        if not all(p.exists() for p in images):
            incomplete.append(str(path))
            continue
        cases.append(Case(images=images, label=None, case_id=prefix.rstrip("_-.") or case_id_from_path(path)))
    if incomplete:
        raise DataError(
            f"{folder}: {len(incomplete)} case(s) lack a modality ({', '.join(suffixes)}), e.g. {incomplete[0]}"
        )
    if not cases:
        raise DataError(f"{folder}: no image ending with {first!r} ({source})")
    ids = [case.case_id for case in cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise DataError(
            f"{folder}: several cases are named {duplicated[0]!r} in different subfolders; "
            "give a .json file list with case_id instead"
        )
    log.info("%s: found %d case(s) by the endings %s", folder, len(cases), ", ".join(suffixes))
    return cases


def cases_from_input(path: Path, config: Config, suffixes: Sequence[str] | None = None) -> list[Case]:
    """Cases from `--input`: a folder of cases, or a `.json`/`.npy` file list (relative paths beside the list)."""
    path = Path(path).resolve()
    if path.suffix in (".json", ".npy"):
        return parse_cases(str(path), path.parent, f"--input {path.name}")
    if suffixes:
        return cases_in_folder(path, suffixes, "the first of --modality_suffixes")
    return cases_in_folder(path, modality_suffixes(config), "the config's first modality")


def find_label_map(folder: Path, case_id: str) -> Path | None:
    """`<folder>/<case_id>` with an image ending (.nii.gz first), or None."""
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{case_id}{suffix}"
        if path.is_file():
            return path
    return None


def label_map_files(folder: Path) -> list[Path]:
    """The label maps in a folder: files with an image ending, probability maps excluded, by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and image_suffix(p) and not p.name.endswith(PROBABILITY_SUFFIX)
    )


def cases_from_folders(predictions: Path, ground_truth: Path) -> list[Case]:
    """One case per label map `<case_id>.nii.gz` (or .png, .mhd, ...) in `predictions`, its label the file of the
    same case id in `ground_truth` (of any image format)."""
    for folder, role in ((predictions, "predictions"), (ground_truth, "ground-truth")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {role} folder does not exist")
    files = label_map_files(predictions)
    if not files:
        raise DataError(f"{predictions}: no prediction files (<case_id>.nii.gz, .png, .mhd, ...)")
    cases = []
    for path in files:
        case_id = case_id_from_path(path)
        cases.append(
            Case(images=[], label=find_label_map(ground_truth, case_id) or ground_truth / path.name, case_id=case_id)
        )
    return cases
