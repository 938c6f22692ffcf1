"""Datasets and loaders: the transform chain over a list of cases, with the deterministic part cached.

`cache: disk` stores each case's deterministic preprocessing (load, reorient, encode labels, crop, resize) under
`<cache dir>/<fingerprint>/`, so epoch 2 onwards (and every later fold and rerun) skips NIfTI reading and resampling.
The fingerprint hashes the preprocessing settings, so changing them starts a fresh cache; a case's key includes the
size and modification time of its files, so replacing a file on disk invalidates its entry. Random crops and
augmentations run after the cache, every epoch. The disk cache holds plain tensors, without MONAI's metadata.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, ThreadDataLoader
from monai.data.utils import pad_list_data_collate
from monai.data.utils import worker_init_fn as monai_worker_init
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import convert_to_tensor

from unet3d.allocator import keep_freed_memory
from unet3d.atomic import atomic_write, atomic_write_text
from unet3d.config.cases import Case
from unet3d.data.image_io import read_header
from unet3d.errors import DataError

log = logging.getLogger("unet3d")


def case_items(cases: Sequence[Case], with_label: bool) -> list[dict[str, Any]]:
    """MONAI data dicts: image paths (one per modality) and the label path, plus the case id."""
    items = []
    for case in cases:
        item: dict[str, Any] = {"image": [str(p) for p in case.images], "case_id": case.case_id}
        if with_label:
            item["label"] = str(case.label)
        items.append(item)
    return items


MEMORY_SHARE = 0.25  # the in-memory cache may take this share of the memory that is available when a run starts


def preprocessed_bytes(
    cases: Sequence[Case],
    desired_shape: Sequence[int] | None,
    n_target_channels: int,
    spacing: Sequence[float] | None = None,
) -> int:
    """Estimated float32 size of the cached cases: `desired_shape` when volumes are resized to it, else each
    case's own shape from its image headers, rescaled to `spacing` (crops make the real size smaller)."""
    total = 0
    for case in cases:
        if desired_shape:
            voxels, channels = int(np.prod(desired_shape)), len(case.images)
        else:
            header = read_header(case.images[0])
            dims = len(spacing) if spacing else min(3, len(header.shape))
            scale = np.prod(np.divide(header.spacing[:dims], spacing)) if spacing else 1.0
            voxels, channels = int(np.prod(header.shape[:dims]) * scale), len(case.images)
        total += voxels * (channels + n_target_channels) * 4
    return total


def available_memory() -> int:
    """Bytes of memory available now: Linux's MemAvailable (free memory plus the page cache it can reclaim), else
    the free pages; 0 if the platform does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def automatic_cache(estimated: int, available: int) -> str:
    """'memory' when the preprocessed data fits in a quarter of the available memory (fastest epochs), else 'disk'
    (which also outlives the run: later folds and reruns skip preprocessing)."""
    return "memory" if 0 < estimated <= MEMORY_SHARE * available else "disk"


def file_state_hash(item: dict[str, Any]) -> bytes:
    """Cache key of one case: its file paths with their sizes and modification times."""
    paths = [*item["image"], *([item["label"]] if "label" in item else [])]
    state = []
    for path in paths:
        stat = os.stat(path)
        state.append((path, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(state).encode()).hexdigest().encode()


def fingerprint_dir(cache_root: Path, fingerprint: dict[str, Any]) -> Path:
    """`cache_root/<hash of the preprocessing settings>`, with the settings written beside it for people to read."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    folder = Path(cache_root) / hashlib.sha256(text.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    settings = folder / "preprocessing.json"
    if not settings.exists():
        atomic_write_text(settings, json.dumps(fingerprint, indent=2, sort_keys=True, default=str))
    return folder


def cached_prefix_key(transform: Compose) -> str:
    """A name for the part of the chain a caching dataset stores: the transforms before the first random one.

    Training (which stops before its augmentations) and validation (which runs through normalization) cache
    different prefixes of otherwise equal chains, so each gets its own folder.
    """
    names = []
    for step in transform.transforms:
        if isinstance(step, RandomizableTrait) or not isinstance(step, Transform):
            break
        names.append(type(step).__name__)
    return "steps-" + hashlib.sha256(",".join(names).encode()).hexdigest()[:8]


def allow_image_metadata_in_safe_loads() -> None:
    """Let ``torch.load(weights_only=True)`` read cached MetaTensors: their metadata holds numpy arrays, numpy
    dtypes and MONAI key enums. These are plain data types (unpickling them runs no user code)."""
    import numpy as np
    from monai.utils.enums import MetaKeys, SpaceKeys, TraceKeys

    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    torch.serialization.add_safe_globals([reconstruct, np.ndarray, np.dtype, *dtypes, TraceKeys, SpaceKeys, MetaKeys])


def compact(item: Any) -> Any:
    """`item` with every tensor that views a larger buffer copied into its own. A crop (CropForegroundd) returns a view
    of the whole scan, and a cache holding the view holds the whole scan: on a BraTS-size case (240 x 240 x 155, the
    brain 128 x 154 x 129) each cached case took 170 MB on disk instead of 51 MB."""
    if isinstance(item, dict):
        return {key: compact(value) for key, value in item.items()}
    if isinstance(item, list):
        return [compact(value) for value in item]
    if isinstance(item, torch.Tensor) and item.untyped_storage().nbytes() > item.numel() * item.element_size():
        return item.clone(memory_format=torch.contiguous_format)
    return item


class AtomicPersistentDataset(PersistentDataset):
    """MONAI's disk cache, with entries written atomically in the cache folder itself (MONAI writes them in /tmp and
    moves them, which leaves a truncated entry when the disk fills during the move) and unreadable entries (truncated,
    corrupt) logged, deleted and rebuilt instead of failing every later run."""

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        entry = Path(self.cache_dir) / f"{self.hash_func(item_transformed).decode('utf-8')}{self.transform_hash}.pt"
        if entry.is_file():
            try:
                return torch.load(entry, weights_only=True)
            except Exception as error:  # truncated, corrupt or foreign: torch raises many types
                log.warning("%s: unreadable cache entry (%s); rebuilding it", entry, str(error).splitlines()[0])
                entry.unlink(missing_ok=True)
        item = compact(self._pre_transform(deepcopy(item_transformed)))
        stored = convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta)
        atomic_write(entry, lambda handle: torch.save(stored, handle))
        return item


class _Failed:
    """A case whose preprocessing raised while the in-memory cache was being filled."""

    def __init__(self, item: dict[str, Any], error: Exception) -> None:
        self.item, self.error = item, error


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


class CheckedCacheDataset(CacheDataset):
    """MONAI's in-memory cache, where a case that fails to preprocess is reported as a DataError naming its files
    after the filling threads have finished (an exception escaping those threads aborted the process: exit 134)."""

    def _load_cache_item(self, idx: int) -> Any:
        try:
            return super()._load_cache_item(idx)  # MONAI's `as_contiguous` copies a crop's view
        except Exception as error:
            return _Failed(self.data[idx], error)

    def _fill_cache(self, indices: Any = None) -> list:
        cache = super()._fill_cache(indices)
        failed = [entry for entry in cache if isinstance(entry, _Failed)]
        if failed:
            raise DataError(
                "\n".join(
                    f"{_case_files(entry.item)}: preprocessing failed: {type(_root_cause(entry.error)).__name__}: "
                    f"{str(_root_cause(entry.error)).splitlines()[0] if str(_root_cause(entry.error)) else ''}"
                    for entry in failed
                )
            )
        return cache


def _case_files(item: Any) -> str:
    images = item.get("image") if isinstance(item, dict) else None
    return str(images[0] if isinstance(images, (list, tuple)) and images else images)


def make_dataset(
    items: list[dict[str, Any]],
    transform: Compose,
    cache: str,
    cache_dir: Path | None,
    n_workers: int = 0,
) -> Dataset:
    """A MONAI dataset of `items` with the requested caching ('disk' needs `cache_dir`)."""
    if cache == "disk":
        assert cache_dir is not None, "disk cache needs a folder"
        folder = Path(cache_dir) / cached_prefix_key(transform)
        allow_image_metadata_in_safe_loads()
        # Plain tensors: reading a cached case back is 10x faster than with its MetaTensor metadata (which
        # training does not use: predictions and examples run the uncached chain).
        return AtomicPersistentDataset(items, transform, cache_dir=folder, hash_func=file_state_hash, track_meta=False)
    if cache == "memory":
        return CheckedCacheDataset(items, transform, num_workers=max(1, n_workers), progress=False)
    return Dataset(items, transform)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    n_workers: int,
    pin_memory: bool,
    variable_shapes: bool = False,
    prefetch_factor: int | None = None,
    sampler: torch.utils.data.Sampler | None = None,
    thread_workers: bool = False,
) -> DataLoader:
    """A MONAI DataLoader in the order of `sampler` (training: the seeded, shuffling sampler), else in the dataset's
    order (validation); `variable_shapes` pads each batch to its largest case (full-volume validation);
    `thread_workers` makes the workers threads of this process (MONAI's ThreadDataLoader) instead of processes."""
    kwargs: dict[str, Any] = {"collate_fn": pad_list_data_collate} if variable_shapes else {}
    if n_workers > 0:
        kwargs["persistent_workers"] = True
        if prefetch_factor:
            kwargs["prefetch_factor"] = prefetch_factor
    loader = DataLoader
    if thread_workers and n_workers > 0:
        loader, kwargs["use_thread_workers"] = ThreadDataLoader, True
    if n_workers > 0 and not thread_workers:
        kwargs["worker_init_fn"] = _init_worker
    return loader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=n_workers,
        pin_memory=pin_memory,
        **kwargs,
    )


def _init_worker(worker_id: int) -> None:
    """MONAI's seeding of a loader worker, and freed memory kept for the next sample (`unet3d.allocator`, which has
    the measurements): every transform of the chain allocates whole volumes. Not in the main process, where the
    sliding-window validation and prediction also run and kept memory raised the peak."""
    monai_worker_init(worker_id)
    keep_freed_memory()


def stop_workers(loader: torch.utils.data.DataLoader | None) -> None:
    """End a loader's persistent worker processes now. Left to the garbage collector, they are stopped wherever it
    happens to run: inside an import, the queue thread that tells them to stop waits for the import lock, and each
    worker then costs a 5 s timeout (a run and its resume in one process stalled 35 s)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None  # type: ignore[union-attr]
