"""Check every file of every case before any compute.

3DUnetCNN silently skips bad files or dies mid-epoch; here a missing, unreadable or inconsistent file stops the run
up front, with one line per problem naming the file. Checks: the file exists and is readable; all images of a case
share one spatial shape and affine (within tolerance), and its label map that grid (in any axis order); label values
are among the declared labels; images hold no NaN or infinite voxel (one would turn every loss and weight into NaN);
the images of a case have the same number of axes (an (X, Y, Z, 1) file beside (X, Y, Z) ones cannot be stacked).
Every image is read once, so a file whose header is fine but whose data is truncated is found here too, and constant
images are noted. A case that passed is remembered with the state of its files (`unet3d.data.checked_files`): later
runs read only what changed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet3d.allocator import keep_freed_memory
from unet3d.config.cases import Case
from unet3d.data.checked_files import CheckedFiles
from unet3d.data.image_io import Header, aligned_to, read_array, read_header
from unet3d.errors import DataError
from unet3d.formats import AFFINE_TOLERANCE

log = logging.getLogger("unet3d")
PROCESS_MINIMUM = 8  # cases to check for which a process pool pays its start


@dataclass(frozen=True)
class CaseInfo:
    """What the up-front check learned about one case."""

    case_id: str
    n_channels: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    constant: bool = False  # every image of the case holds a single value (no foreground to find)


def _spatial(image: Header, spatial_dims: int) -> tuple[tuple[int, ...], int]:
    shape = tuple(int(s) for s in image.shape)
    extra = shape[spatial_dims:]
    return shape[:spatial_dims], int(np.prod(extra)) if extra else 1


def check_case(case: Case, labels: set[int] | None, spatial_dims: int = 3, with_label: bool = True) -> CaseInfo:
    """Check one case's files; a DataError names the first file with a problem."""
    reference = read_header(case.images[0])
    ref_shape, n_channels = _spatial(reference, spatial_dims)
    if len(ref_shape) < spatial_dims or min(ref_shape) < 1:
        raise DataError(f"{case.images[0]}: expected a {spatial_dims}D image, got shape {reference.shape}")
    ref_affine = reference.affine
    constant = [_is_constant(case.images[0])]
    paths = list(case.images[1:]) + ([case.label] if with_label and case.label is not None else [])
    for path in paths:
        image = read_header(path)
        if path != case.label:
            constant.append(_is_constant(path))
            if len(image.shape) != len(reference.shape):
                raise DataError(
                    f"{path}: shape {image.shape} has {len(image.shape)} axes, {case.images[0].name} "
                    f"{reference.shape} has {len(reference.shape)}; the images of a case are stacked as channels, so "
                    "save them alike (e.g. drop a trailing axis of length 1 with nibabel.squeeze_image)"
                )
        shape, channels = _spatial(image, spatial_dims)
        if path == case.label and aligned_to(image, reference) is not None:
            continue  # the case's grid, possibly stored in another axis order (a NIfTI mask of a DICOM series)
        if shape != ref_shape:
            raise DataError(f"{path}: shape {shape} differs from {case.images[0].name} {ref_shape}")
        if image.affine.shape != ref_affine.shape or not np.allclose(image.affine, ref_affine, atol=AFFINE_TOLERANCE):
            raise DataError(f"{path}: affine differs from {case.images[0].name} by more than {AFFINE_TOLERANCE} mm")
        if path != case.label:
            n_channels += channels
    if with_label:
        if case.label is None:
            raise DataError(f"case {case.case_id!r}: no 'label' file")
        _check_label_values(case.label, labels)
    return CaseInfo(case.case_id, n_channels, ref_shape, reference.spacing[:spatial_dims], all(constant))


def _is_constant(path: Path) -> bool:
    """Read an image whole: a DataError when its data cannot be read or holds NaN or infinite voxels; whether all of
    its voxels hold one value."""
    data = read_array(path)
    if np.issubdtype(data.dtype, np.inexact):
        bad = ~np.isfinite(data)
        count = int(np.count_nonzero(bad))
        if count:
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(
                f"{path}: {count} voxel(s) are NaN or infinite (the first at index {first}); replace them (e.g. with "
                "the background value) before training"
            )
    return data.size == 0 or bool(data.min() == data.max())


def _check_label_values(path: Path, labels: set[int] | None) -> None:
    data = read_array(path)
    if labels is not None and data.size and data.dtype.kind in "iu":
        low, high = int(data.min()), int(data.max())
        if high - low <= len(labels) and labels.issuperset(range(low, high + 1)):
            return  # every value in [min, max] is declared: 2 ms where np.unique takes 30 (240 x 240 x 155 voxels)
    values = np.unique(data)
    fractional = values[~np.isclose(values, np.round(values))]
    if fractional.size:
        raise DataError(f"{path}: label map holds non-integer values, e.g. {fractional[0]}")
    if labels is not None:
        unknown = sorted(set(np.round(values).astype(int).tolist()) - labels)
        if unknown:
            raise DataError(f"{path}: label values {unknown} are not among the declared labels {sorted(labels)}")


def check_unique_files(groups: dict[str, Sequence[Case]]) -> None:
    """Refuse a file (resolved: symlinks followed) that belongs to two cases, in one group or in two: the same scan
    under two case ids would land in training and in validation of the same fold."""
    owners: dict[str, str] = {}
    problems = []
    for group, cases in groups.items():
        for index, case in enumerate(cases):
            where = f"{group}_filenames[{index}] ({case.case_id})"
            files = {os.path.realpath(p) for p in [*case.images, *([case.label] if case.label is not None else [])]}
            for path in sorted(files):
                if path in owners:
                    problems.append(f"{where}: {path} is also a file of {owners[path]}; a file may belong to one case")
                else:
                    owners[path] = where
    if problems:
        raise DataError("\n".join(problems))


def check_cases(
    groups: dict[str, Sequence[Case]],
    labels: set[int] | None,
    spatial_dims: int = 3,
    labelled_groups: Iterable[str] = (),
    n_threads: int = 4,
) -> dict[str, list[CaseInfo]]:
    """Check all cases of all groups in parallel; raise one DataError listing every problem (one line each)."""
    check_unique_files(groups)
    labelled = set(labelled_groups)
    jobs = [(group, case) for group, cases in groups.items() for case in cases]
    memory = CheckedFiles({"labels": sorted(labels) if labels is not None else None, "spatial_dims": spatial_dims})
    with_labels = [group in labelled or case.label is not None for group, case in jobs]
    states = [memory.state(case, with_label) for (_, case), with_label in zip(jobs, with_labels, strict=True)]
    results: list[CaseInfo | DataError | None] = []
    for (_, case), state, with_label in zip(jobs, states, with_labels, strict=True):
        results.append(_info(case.case_id, memory.recall(state, with_label)))
    todo = [i for i, result in enumerate(results) if result is None]
    arguments = [(jobs[i][1], labels, spatial_dims, with_labels[i]) for i in todo]
    for i, result in zip(todo, _run_checks(arguments, n_threads), strict=True):
        results[i] = result
        if isinstance(result, CaseInfo):
            known = {k: v for k, v in asdict(result).items() if k != "case_id"}
            memory.remember(jobs[i][1], states[i], with_labels[i], known)
    problems = [
        f"{group}_filenames: {result}"
        for (group, _), result in zip(jobs, results, strict=False)
        if isinstance(result, DataError)
    ]
    if problems:
        raise DataError("\n".join(problems))
    infos: dict[str, list[CaseInfo]] = {group: [] for group in groups}
    for (group, _), result in zip(jobs, results, strict=False):
        infos[group].append(result)
    channels = {info.n_channels for group in infos.values() for info in group}
    if len(channels) > 1:
        raise DataError(f"cases have different numbers of image channels: {sorted(channels)}")
    if len(todo) < len(jobs):
        log.info(
            "%d of %d cases passed this check before with their files as they are: not read again",
            len(jobs) - len(todo),
            len(jobs),
        )
    return infos


def _check_or_error(arguments: tuple[Case, set[int] | None, int, bool]) -> CaseInfo | DataError:
    case, labels, spatial_dims, with_label = arguments
    try:
        return check_case(case, labels, spatial_dims, with_label=with_label)
    except DataError as error:
        return error


def _run_checks(arguments: list[tuple[Case, set[int] | None, int, bool]], n_workers: int) -> list[CaseInfo | DataError]:
    """check_case for each argument tuple, in order. Many cases go to `n_workers` processes: nibabel's gzip stream
    held the interpreter lock between its decompression calls, so threads gained nothing (a BraTS-size case took
    0.19 s with 2 threads, 0.077 s with 2 processes); the one-call inflate of `image_io` releases it, but only a
    process of its own can keep freed memory for the next image (`unet3d.allocator`, half of a case's time) without
    changing this process's allocator. The processes come from a fork server that imports only this module (0.3 s to
    start), never from a fork of a process that may run threads; where one cannot start, threads."""
    if n_workers > 1 and len(arguments) >= PROCESS_MINIMUM:
        try:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            workers = min(n_workers, len(arguments))
            with ProcessPoolExecutor(workers, mp_context=context, initializer=keep_freed_memory) as pool:
                return list(pool.map(_check_or_error, arguments, chunksize=2))
        except (OSError, BrokenProcessPool, ValueError) as error:
            log.debug("file checks in threads: no process pool (%s)", error)
    with ThreadPoolExecutor(max(1, n_workers)) as pool:
        return list(pool.map(_check_or_error, arguments))


def _info(case_id: str, known: dict[str, Any] | None) -> CaseInfo | None:
    """The CaseInfo of a remembered record, or None (no record, or one that is not a record: the case is read)."""
    if known is None:
        return None
    try:
        return CaseInfo(
            case_id,
            int(known["n_channels"]),
            tuple(int(s) for s in known["shape"]),
            tuple(float(s) for s in known["spacing"]),
            bool(known["constant"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
