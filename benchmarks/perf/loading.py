"""What loading costs: passes over the loader with fresh and warm caches, a per-transform profile, transport."""

from __future__ import annotations

import copy
import gc
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from monai.data import list_data_collate
from monai.transforms import RandomizableTrait, Transform, apply_transform

from perf.timing import measure, robust, timed
from unet3d.config.schema import Config
from unet3d.data.datasets import case_items
from unet3d.runtime import (
    Runtime,
    seed_everything,
)
from unet3d.training.components import Components, build_components, build_dataset

log = logging.getLogger("unet3d")


def loader_passes(config: Config, runtime: Runtime, passes: int, repeats: int) -> dict[str, Any]:
    """Time `passes` full iterations of the training loader, starting from an empty cache in a fresh work dir;
    `repeats` times, each with a fresh cache, so that a pass disturbed by another process can be set aside.
    The first epoch also pays for building the dataset: that is where an in-memory cache is filled."""
    timings: dict[str, list[float]] = {"construction": [], "first": [], "later": []}
    shares: dict[str, list[float | None]] = {"construction": [], "first": [], "later": []}
    n_batches = 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="unet3d_bench_") as work:
            seconds, share = measure(
                torch.device("cpu"), lambda work=work: build_dataset(config, "training", Path(work), runtime, True)
            )
            timings["construction"].append(seconds)
            shares["construction"].append(share)
            components = build_components(config, Path(work), runtime)
            seed_everything(0)
            components.train_transform.set_random_state(seed=0)
            for index in range(passes):
                seconds, share = measure(
                    torch.device("cpu"), lambda loader=components.train_loader: sum(1 for _ in loader)
                )
                timings["first" if index == 0 else "later"].append(seconds)
                shares["first" if index == 0 else "later"].append(share)
            n_batches = len(components.train_loader)
            del components
            gc.collect()
    estimates = {key: robust(timings[key], shares[key]) for key in timings}
    first_epoch = estimates["construction"]["value"] + estimates["first"]["value"]
    return {
        "n_batches": n_batches,
        "seconds": timings,
        "foreign_cpu_share": shares,
        "estimates": estimates,
        "construction_seconds": estimates["construction"]["value"],
        "first_seconds": estimates["first"]["value"],
        "first_epoch_seconds": first_epoch,
        "later_seconds": estimates["later"]["value"],
        "first_over_later": first_epoch / estimates["later"]["value"],
    }


def prefix_length(steps: list[Any]) -> int:
    """How many transforms a caching dataset stores: those before the first random one (as unet3d.data.datasets)."""
    for index, step in enumerate(steps):
        if isinstance(step, RandomizableTrait) or not isinstance(step, Transform):
            return index
    return len(steps)


def _clone(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in data.items()}


def profile_loading(components: Components, config: Config, work_dir: Path, repeats: int = 3) -> dict[str, Any]:
    """Where the loading time goes, per case: each transform of the training chain (first epoch: all of them),
    writing and reading the cache, and collation. Runs in this process, whatever --nthreads is; each number is the
    least of `repeats` runs (another process on the machine can only add time)."""
    runs = [_profile_once(components, config, work_dir) for _ in range(repeats)]
    return _least(runs) | {"repeats": repeats}


def _least(values: list[Any]) -> Any:
    """Element-wise minimum of equally shaped nested results (numbers; other leaves are taken from the first)."""
    first = values[0]
    if isinstance(first, dict):
        return {key: _least([v[key] for v in values]) for key in first}
    if isinstance(first, list):
        return [_least(list(items)) for items in zip(*values, strict=True)]
    if isinstance(first, float):
        return min(values)
    return first


def _profile_once(components: Components, config: Config, work_dir: Path) -> dict[str, Any]:
    steps = list(components.train_transform.transforms)
    n_prefix = prefix_length(steps)
    items = case_items(config.groups["training"], with_label=True)
    seconds = [0.0] * len(steps)
    prefix_outputs, outputs = [], []
    for item in items:
        data: Any = copy.deepcopy(item)
        for index, step in enumerate(steps):
            start = time.perf_counter()
            data = apply_transform(step, data)
            seconds[index] += time.perf_counter() - start
            if index == n_prefix - 1:
                prefix_outputs.append(_clone(data))
        outputs.append(data)
    n = len(items)
    # Writing and reading the cached prefix as the disk cache does (torch.save; torch.load with weights_only=True),
    # and for comparison without the safe unpickler and without the MetaTensors' metadata (our own fresh files).
    save_seconds = load_seconds = unsafe_seconds = bare_seconds = 0.0
    scratch, bare = work_dir / "profile.pt", work_dir / "profile_bare.pt"
    for output in prefix_outputs:
        start = time.perf_counter()
        torch.save(output, scratch)
        save_seconds += time.perf_counter() - start
        torch.save({k: v.as_tensor() for k, v in output.items() if hasattr(v, "as_tensor")}, bare)
        load_seconds += timed(torch.device("cpu"), lambda: torch.load(scratch, weights_only=True))
        unsafe_seconds += timed(torch.device("cpu"), lambda: torch.load(scratch, weights_only=False))
        bare_seconds += timed(torch.device("cpu"), lambda: torch.load(bare, weights_only=True))
    scratch.unlink(missing_ok=True)
    bare.unlink(missing_ok=True)
    n_saved = max(1, len(prefix_outputs))
    for index in range(n):
        components.train_dataset[index]  # fill the cache (a no-op when the warm-up epoch already did)
    start = time.perf_counter()
    for index in range(n):
        components.train_dataset[index]  # a cache hit: hash the file states, torch.load, then the random transforms
    cached_item_seconds = (time.perf_counter() - start) / n
    batch_size = config.training.batch_size
    start = time.perf_counter()
    n_batches = 0
    for first in range(0, n, batch_size):
        list_data_collate(outputs[first : first + batch_size])
        n_batches += 1
    collate_seconds = (time.perf_counter() - start) / n_batches
    batches = [list_data_collate(outputs[first : first + batch_size]) for first in range(0, n, batch_size)]
    transport = {
        "metatensor": worker_transport(batches),
        "plain_tensors": worker_transport([plain_batch(batch) for batch in batches]),
    }
    per_case_ms = [1000 * s / n for s in seconds]
    suffix_ms = sum(per_case_ms[n_prefix:])
    return {
        "n_cases": n,
        "transforms": [
            {"index": i, "name": type(step).__name__, "cached": i < n_prefix, "ms_per_case": per_case_ms[i]}
            for i, step in enumerate(steps)
        ],
        "first_epoch_ms_per_case": {
            "cached_prefix_transforms": sum(per_case_ms[:n_prefix]),
            "cache_write_torch_save": 1000 * save_seconds / n_saved,
            "random_transforms": suffix_ms,
        },
        "later_epoch_ms_per_case": {
            "cache_hit_total": 1000 * cached_item_seconds,
            "of_which_random_transforms": suffix_ms,
            # clamped: with an in-memory cache the difference is within the timing noise
            "cache_hit_without_random_transforms": max(0.0, 1000 * cached_item_seconds - suffix_ms),
            "torch_load_weights_only": 1000 * load_seconds / n_saved,
            "torch_load_unrestricted": 1000 * unsafe_seconds / n_saved,
            "torch_load_tensors_without_metadata": 1000 * bare_seconds / n_saved,
        },
        "collate_ms_per_batch": 1000 * collate_seconds,
        "batch_size": batch_size,
        "dataset_class": type(components.train_dataset).__name__,
        "worker_transport_ms_per_batch": transport,
    }


def plain_batch(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v.as_tensor().clone() if hasattr(v, "as_tensor") else v for k, v in batch.items()}


def worker_transport(batches: list[dict[str, Any]]) -> dict[str, float] | None:
    """What handing a collated batch from a loader worker to the training process costs: pickling it as the worker
    queue does (tensor storages go to shared memory, one file descriptor each) and unpickling it, per batch."""
    try:
        import pickle
        from multiprocessing.reduction import ForkingPickler

        import torch.multiprocessing  # noqa: F401 - registers torch's shared-memory reductions with ForkingPickler

        send = receive = 0.0
        for batch in batches:
            buffer = io.BytesIO()
            start = time.perf_counter()
            ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(batch)
            send += time.perf_counter() - start
            start = time.perf_counter()
            pickle.loads(buffer.getvalue())
            receive += time.perf_counter() - start
    except Exception as error:  # the platform may not share memory this way; the number is then simply absent
        log.debug("worker transport not measured: %s", error)
        return None
    return {"send": 1000 * send / len(batches), "receive": 1000 * receive / len(batches)}


# --------------------------------------------------------------------------------------------------------------------
# (a) + (c): loader-fed vs memory-fed steps, throughput and peak memory
