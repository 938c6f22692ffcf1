"""Benchmark harness: performance is measured, not guessed.

One command measures, on the machine it runs on and with the library's own components (`build_components`, the
config's loader, loss, optimizer, gradient scaler and inferer):

  (a) loader overhead: training steps fed by the real train loader vs. the same steps fed from batches already in
      memory (on the device);
  (b) cache effect: one pass over the training loader with a fresh, empty disk cache vs. the second and third pass,
      and the same with `dataset.cache: none` for reference; plus a per-transform breakdown of the loading time;
  (c) throughput (samples/s with the real loader) and peak memory;
  (d) sliding-window prediction of one validation volume vs. the network's pure forward passes over its windows.

It prints a table (with the targets: loader overhead <= 5 %, later epochs >= 3x faster to load than the first,
sliding window <= 1.2x forward) and writes everything, with the machine's facts, to a JSON file.

    python benchmarks/run.py --config_filename examples/brats_like/brats_like_config.json --nthreads 0

`--brats_scale` instead benchmarks the brats2020 network (DynUNet 64-384, 6 levels) on synthetic 128^3 cases, with
batch sizes 1 and 2 and AMP on and off; it needs a CUDA device (or --force). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import gc
import io
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import monai
import torch
from monai.data import list_data_collate
from monai.data.utils import compute_importance_map
from monai.inferers import SlidingWindowInferer
from monai.transforms import RandomizableTrait, Transform, apply_transform
from monai.utils import ensure_tuple

import unet3d
from unet3d.cli.common import EXIT_USER_ERROR, add_overrides_argument, run_command, setup_logging
from unet3d.config.load import load_config, parse_assignments
from unet3d.config.schema import Config
from unet3d.data.datasets import case_items
from unet3d.data.synthetic import write_dataset
from unet3d.data.transforms import build_transforms, split_dataset_config
from unet3d.errors import ConfigError
from unet3d.inference.predict import Predictor
from unet3d.inferers import build_inferer
from unet3d.losses import activation_from_loss
from unet3d.preflight import check_data, check_experiment
from unet3d.runtime import (
    Runtime,
    amp_dtype,
    autocast,
    resolve_runtime,
    seed_everything,
    use_deterministic_algorithms,
)
from unet3d.training.components import Components, build_components, build_dataset, cache_settings
from unet3d.training.loop import train_step

log = logging.getLogger("unet3d")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE_CONFIG = REPO / "examples" / "brats_like" / "brats_like_config.json"
EXAMPLE_MAKE_DATA = REPO / "examples" / "brats_like" / "make_data.py"
RESULTS = HERE / "results"

TARGET_LOADER_OVERHEAD = 5.0  # %: loader-fed steps at most this much slower than memory-fed ones
TARGET_CACHE_SPEEDUP = 3.0  # x: later epochs at least this much faster to load than the first
TARGET_SLIDING_WINDOW = 1.2  # x: sliding-window prediction at most this much slower than the pure forward passes

DEFAULT_STEPS = 140  # timed steps per feed (20 one-epoch blocks of the example): about 45 s on 2 quiet CPU cores
DEFAULT_STEPS_BRATS = 40
MIB = 2**20


# --------------------------------------------------------------------------------------------------------------------
# Results: rows of the printed table
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One line of the table: a measurement, its value and unit, and its target (if it has one)."""

    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""
    failed: bool = False

    def status(self) -> str:
        if self.failed:
            return "failed"
        return "" if self.met is None else ("met" if self.met else "missed")


def format_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| measurement | value | unit | target | status |", "|---|---:|---|---|---|"]
    for row in rows:
        name = f"{row.name} ({row.note})" if row.note else row.name
        lines.append(f"| {name} | {format_value(row.value)} | {row.unit} | {row.target} | {row.status()} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Machine facts and memory probes
# --------------------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value and not value.isdigit():
                    return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_memory_gib() -> float | None:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return round(int(match.group(1)) / 2**20, 1) if match else None


def machine_facts(runtime: Runtime) -> dict[str, Any]:
    """What produced the numbers: hardware, versions, date and how busy the machine was."""
    import nibabel
    import numpy

    facts: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": total_memory_gib(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "unet3d": unet3d.__version__,
        "numpy": numpy.__version__,
        "nibabel": nibabel.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "device": str(runtime.device),
        "n_gpus_used": runtime.n_gpus,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        facts["cuda_devices"] = [
            {
                "name": torch.cuda.get_device_name(i),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
            }
            for i in range(torch.cuda.device_count())
        ]
        facts["cudnn"] = torch.backends.cudnn.version()
    return facts


def _status_kib(pid: int | str, key: str) -> int | None:
    try:
        match = re.search(rf"{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _children() -> list[int]:
    """Direct child processes of this one (the loader's worker processes), from /proc."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*/children") if Path("/proc/self/task").exists() else []:
        with contextlib.suppress(OSError):
            pids += [int(p) for p in task.read_text().split()]
    return sorted(set(pids))


def _reset_peak_rss(pid: int | str) -> bool:
    """Reset a process's peak RSS (VmHWM, and so ru_maxrss) to its current RSS: Linux's /proc/PID/clear_refs."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory over a block of work: CUDA's allocator peak on a GPU, else the peak resident set size."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset_ok = False
        self.lifetime_before = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        self.lifetime_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.reset_ok = _reset_peak_rss("self")
        for pid in _children():
            _reset_peak_rss(pid)

    def stop(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return {
                "kind": "cuda",
                "label": "torch.cuda.max_memory_allocated",
                "max_allocated_mib": torch.cuda.max_memory_allocated(self.device) / MIB,
                "max_reserved_mib": torch.cuda.max_memory_reserved(self.device) / MIB,
            }
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        workers = [kib for pid in _children() if (kib := _status_kib(pid, "VmHWM")) is not None]
        return {
            "kind": "rss",
            "label": (
                "peak RSS during these steps (ru_maxrss after resetting the high-water mark via /proc/self/clear_refs)"
                if self.reset_ok
                else "process lifetime peak RSS (ru_maxrss; could not reset the high-water mark)"
            ),
            "peak_rss_mib": peak,
            "lifetime_peak_rss_mib": max(peak, self.lifetime_before / 1024),
            "workers_peak_rss_mib": [kib / 1024 for kib in workers],
        }


# --------------------------------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, work: Callable[[], Any]) -> float:
    """Wall time of `work()`, with CUDA synchronized before and after."""
    sync(device)
    start = time.perf_counter()
    work()
    sync(device)
    return time.perf_counter() - start


CONTENDED = 0.05  # share of the machine's CPU time used by other processes above which a timing counts as disturbed
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int | None:
    """CPU time (clock ticks) spent by the whole machine outside idle and iowait, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


def _own_ticks() -> int:
    """CPU time (clock ticks) of this process (all threads) and its live children (loader workers)."""
    total = 0
    for pid in ["self", *_children()]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def measure(device: torch.device, work: Callable[[], Any]) -> tuple[float, float | None]:
    """Wall time of `work()` and the share of the machine's CPU capacity that other processes used meanwhile
    (None where /proc is unavailable). A shared machine's neighbours can slow a block many-fold; this tells which."""
    busy, own = _busy_ticks(), _own_ticks()
    seconds = timed(device, work)
    after = _busy_ticks()
    if busy is None or after is None:
        return seconds, None
    foreign = (after - busy) - (_own_ticks() - own)
    capacity = _TICK * seconds * (os.cpu_count() or 1)
    return seconds, max(0.0, foreign / capacity) if capacity > 0 else None


def robust(values: list[float], shares: list[float | None]) -> dict[str, Any]:
    """The median of the undisturbed timings; the minimum when every timing was disturbed."""
    clean = [v for v, share in zip(values, shares, strict=True) if share is None or share < CONTENDED]
    if clean:
        return {"value": statistics.median(clean), "n_clean": len(clean), "n": len(values), "method": "median"}
    return {"value": min(values), "n_clean": 0, "n": len(values), "method": "min (all disturbed)"}


def cycle(loader: torch.utils.data.DataLoader) -> Iterator[dict[str, Any]]:
    """Batches of the loader, epoch after epoch (as consecutive epochs of `fit` would draw them)."""
    while True:
        yield from loader


# --------------------------------------------------------------------------------------------------------------------
# Config handling
# --------------------------------------------------------------------------------------------------------------------


def ensure_example_data(config_path: Path) -> None:
    """The example's data is generated, not stored: write it when the example config's data folder is missing."""
    if config_path.resolve() != EXAMPLE_CONFIG.resolve() or (EXAMPLE_CONFIG.parent / "data").is_dir():
        return
    print(f"example data missing: running {EXAMPLE_MAKE_DATA.relative_to(REPO)}", file=sys.stderr)
    subprocess.run([sys.executable, str(EXAMPLE_MAKE_DATA)], check=True)


def with_validation(config: Config, n_validation: int) -> tuple[Config, str]:
    """The config's training cases used directly (no folds); the last `n_validation` become validation cases when
    the config has none. Returns the config and a note saying which cases play which part."""
    training = list(config.groups.get("training", []))
    if config.groups.get("validation"):
        return config, f"{len(training)} training case(s), {len(config.groups['validation'])} validation case(s)"
    n_validation = max(1, min(n_validation, len(training) - 1))
    if len(training) < 2:
        raise ConfigError("training_filenames: the benchmark needs at least 2 cases (1 is held out for prediction)")
    groups = dict(config.groups)
    groups["training"], groups["validation"] = training[:-n_validation], training[-n_validation:]
    note = f"{len(groups['training'])} training cases, last {n_validation} of training_filenames held out as validation"
    if config.cross_validation is not None:
        note += " (cross_validation ignored: no folds)"
    return dataclasses.replace(config, groups=groups), note


def variant_config(config: Config, overrides: dict[str, Any]) -> Config:
    """The same experiment with some dotted keys changed (through `load_config`'s override path, so that the change
    is validated and `raw` stays consistent); the benchmark's group split is kept."""
    from unet3d.config.load import apply_overrides, parse_config

    assert config.source is not None
    raw = apply_overrides(config.raw, overrides)
    changed = parse_config(raw, base=config.source.parent, source=config.source)
    return dataclasses.replace(changed, groups=config.groups)


def amp_label(amp: bool | str, device: torch.device) -> str:
    if not amp or device.type != "cuda":
        return "fp32"
    return "AMP bf16" if amp == "bf16" else "AMP fp16"


# --------------------------------------------------------------------------------------------------------------------
# (b) cache effect, and the per-transform breakdown of loading
# --------------------------------------------------------------------------------------------------------------------


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
            parts = build_components(config, Path(work), runtime)
            seed_everything(0)
            parts.train_transform.set_random_state(seed=0)
            for index in range(passes):
                seconds, share = measure(torch.device("cpu"), lambda loader=parts.train_loader: sum(1 for _ in loader))
                timings["first" if index == 0 else "later"].append(seconds)
                shares["first" if index == 0 else "later"].append(share)
            n_batches = len(parts.train_loader)
            del parts
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


def profile_loading(parts: Components, config: Config, work_dir: Path, repeats: int = 3) -> dict[str, Any]:
    """Where the loading time goes, per case: each transform of the training chain (first epoch: all of them),
    writing and reading the cache, and collation. Runs in this process, whatever --nthreads is; each number is the
    least of `repeats` runs (another process on the machine can only add time)."""
    runs = [_profile_once(parts, config, work_dir) for _ in range(repeats)]
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


def _profile_once(parts: Components, config: Config, work_dir: Path) -> dict[str, Any]:
    steps = list(parts.train_transform.transforms)
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
        parts.train_dataset[index]  # fill the cache (a no-op when the warm-up epoch already did)
    start = time.perf_counter()
    for index in range(n):
        parts.train_dataset[index]  # a cache hit: hash the file states, torch.load, then the random transforms
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
        "dataset_class": type(parts.train_dataset).__name__,
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
# --------------------------------------------------------------------------------------------------------------------


def step_blocks(parts: Components, device: torch.device, total: int, clip: float | None) -> dict[str, Any]:
    """Time about `total` training steps in each of two feeds, in blocks of one epoch, interleaved (AB, BA, ...) so
    that a machine getting busier or quieter affects both alike and a disturbed block can be set aside:

    - loader: batches drawn from the real train loader (epoch after epoch, cache already filled);
    - memory: one epoch of the same loader's batches, collected beforehand and already on the device.
    """
    parts.network.train()
    batches = cycle(parts.train_loader)
    per_epoch = len(parts.train_loader)
    steps, rounds = per_epoch, max(1, round(total / per_epoch))
    for _ in range(per_epoch):  # the warm-up epoch: cache filled, allocator and kernels (cuDNN autotuning) warm
        train_step(parts, next(batches), device, clip)
    memory: list[dict[str, Any]] = []
    position = 0
    seconds: dict[str, list[float]] = {"loader": [], "memory": []}
    shares: dict[str, list[float | None]] = {"loader": [], "memory": []}
    samples = {"loader": 0, "memory": 0}
    peak: dict[str, Any] = {}

    def run(feed: str) -> None:
        nonlocal position
        for _ in range(steps):
            if feed == "loader":
                batch = next(batches)
            else:
                batch = memory[position % len(memory)]
                position += 1
            samples[feed] += train_step(parts, batch, device, clip)[1]

    def block(feed: str) -> None:
        elapsed, share = measure(device, lambda: run(feed))
        seconds[feed].append(elapsed)
        shares[feed].append(share)

    for index in range(rounds):
        for feed in ["loader", "memory"] if index % 2 == 0 else ["memory", "loader"]:
            if feed == "loader" and index == 0:
                probe = PeakMemory(device)
                probe.start()
                block(feed)
                peak = probe.stop()
                # One epoch of batches, in loader order (same batch sizes, a short last batch included), on device.
                for _ in range(per_epoch):
                    batch = next(batches)
                    memory.append({k: batch[k].to(device) for k in ("image", "label")})
                continue
            block(feed)
    # Medians over the undisturbed blocks: a block slowed down by another process on the machine is set aside.
    estimates = {feed: robust(seconds[feed], shares[feed]) for feed in seconds}
    step_seconds = {feed: estimate["value"] / steps for feed, estimate in estimates.items()}
    per_round = [
        100 * (loader - mem) / loader for loader, mem in zip(seconds["loader"], seconds["memory"], strict=True)
    ]
    samples_per_step = samples["loader"] / (steps * rounds)
    return {
        "steps_per_block": steps,
        "rounds": rounds,
        "batches_per_epoch": per_epoch,
        "block_seconds": seconds,
        "block_foreign_cpu_share": shares,
        "estimates": estimates,
        "step_seconds": step_seconds,
        "loader_overhead_percent": 100 * (step_seconds["loader"] - step_seconds["memory"]) / step_seconds["loader"],
        "loader_overhead_percent_per_round": per_round,
        "samples_per_step": samples_per_step,
        "throughput_samples_per_s": samples_per_step / step_seconds["loader"],
        "throughput_samples_per_s_mean_over_blocks": samples["loader"] / sum(seconds["loader"]),
        "peak_memory": peak,
    }


# --------------------------------------------------------------------------------------------------------------------
# (d) sliding-window prediction vs. pure forward passes
# --------------------------------------------------------------------------------------------------------------------


class WindowRecorder(torch.nn.Module):
    """Passes inputs to the model and records the shape of every batch of windows it is given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def median_time(device: torch.device, work: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    work()  # warm-up
    times = [timed(device, work) for _ in range(repeats)]
    return statistics.median(times), times


def sliding_window(
    parts: Components, config: Config, device: torch.device, amp: bool, sw_batch_size: int | None, repeats: int
) -> dict[str, Any]:
    """`Predictor.probabilities` of one validation volume, preprocessed as for prediction, against the model's pure
    forward passes over the same number and size of windows (random tensors, same batches of windows)."""
    case = config.groups["validation"][0]
    activation = activation_from_loss(config.loss)
    dataset = split_dataset_config(config.dataset, config.raw.get("dataset", {}), "validation")
    transform = build_transforms(dataset, with_label=False, softmax=activation == "softmax", augment=False)
    image = transform(case_items([case], with_label=False)[0])["image"].unsqueeze(0).as_tensor()
    model = parts.model.eval()
    inferer = build_inferer(config, sw_batch_size=sw_batch_size)
    recorder = WindowRecorder(model)
    Predictor([recorder], inferer, activation, device, amp=amp).probabilities(image)
    windows = recorder.shapes
    predictor = Predictor([model], inferer, activation, device, amp=amp)
    prediction, prediction_times = median_time(device, lambda: predictor.probabilities(image), repeats)
    inputs = [torch.randn(shape, device=device) for shape in windows]

    @torch.no_grad()
    def forward() -> None:
        with autocast(amp_dtype(amp, device, warn=False), device):
            for x in inputs:
                model(x)

    pure, forward_times = median_time(device, forward, repeats)
    result: dict[str, Any] = {
        "case_id": case.case_id,
        "image_shape": list(image.shape),
        "inferer": type(inferer).__name__,
        "n_forward_calls": len(windows),
        "n_windows": sum(shape[0] for shape in windows),
        "window_batch_shapes": [list(s) for s in windows],
        "prediction_seconds": prediction,
        "prediction_seconds_all": prediction_times,
        "forward_seconds": pure,
        "forward_seconds_all": forward_times,
        "prediction_over_forward": prediction / pure,
        "amp": amp,
    }
    if isinstance(inferer, SlidingWindowInferer):
        result.update(
            roi_size=list(ensure_tuple(inferer.roi_size)),
            overlap=inferer.overlap,
            mode=str(inferer.mode.value if hasattr(inferer.mode, "value") else inferer.mode),
            sw_batch_size=inferer.sw_batch_size,
            cached_weight_map=inferer.roi_weight_map is not None,
        )
        if inferer.roi_weight_map is None:
            roi = ensure_tuple(inferer.roi_size)
            weight_seconds, _ = median_time(
                device,
                lambda: compute_importance_map(roi, mode=inferer.mode, sigma_scale=inferer.sigma_scale, device=device),
                repeats,
            )
            result["importance_map_seconds_per_call"] = weight_seconds
    model.train()
    return result


# --------------------------------------------------------------------------------------------------------------------
# BraTS-scale mode
# --------------------------------------------------------------------------------------------------------------------


def brats_scale_config(folder: Path, n_cases: int, shape: int, n_validation: int) -> Path:
    """Synthetic BraTS-like cases (each axis 140-160 voxels for 128^3 inputs) and a config with the brats2020
    fixture's network, loss, optimizer and preprocessing (3DUnetCNN examples/brats2020/brats2020_config.json)."""
    low, high = round(shape * 140 / 128), round(shape * 160 / 128)
    config_path = folder / "brats_scale_config.json"
    if config_path.exists():
        return config_path
    print(f"writing {n_cases} synthetic cases of {low}-{high} voxels per axis to {folder}", file=sys.stderr)
    entries = write_dataset(folder, n_cases, seed=2020, shape_range=(low, high), prefix="brats")
    levels = 6
    config = {
        "model": {
            "name": "DynUNet",
            "in_channels": 4,
            "out_channels": 3,
            "spatial_dims": 3,
            "deep_supervision": False,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (levels - 1),
            "filters": [64, 96, 128, 192, 256, 384],
            "kernel_size": [[3, 3, 3]] * levels,
            "upsample_kernel_size": [[2, 2, 2]] * (levels - 1),
        },
        "optimizer": {"name": "Adam", "lr": 0.001},
        "loss": {"name": "GeneralizedDiceLoss", "include_background": False, "sigmoid": True},
        "scheduler": {"name": "ReduceLROnPlateau", "patience": 10, "factor": 0.5, "min_lr": 1e-08},
        "dataset": {
            "name": "SegmentationDatasetPersistent",
            "desired_shape": [shape] * 3,
            # The fixture's BraTS labels; the synthetic cases use the BraTS values 2 (edema), 1 (core), 4 (enhancing).
            "labels": [2, 1, 4],
            "setup_label_hierarchy": True,
            "normalization": "NormalizeIntensityD",
            "normalization_kwargs": {"channel_wise": True, "nonzero": False},
            "resample": True,
            "crop_foreground": True,
        },
        "training": {"batch_size": 1, "validation_batch_size": 1, "amp": False, "n_epochs": 250, "save_best": True},
        "training_filenames": entries[: n_cases - n_validation],
        "validation_filenames": entries[n_cases - n_validation :],
    }
    config_path.write_text(json.dumps(config, indent=2))
    return config_path


# --------------------------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------------------------


def amp_settings(choice: str | None, config: Config, device: torch.device, notes: list[str]) -> list[bool | str]:
    """`training.amp` values to benchmark. AMP is CUDA-only in unet3d: on a CPU only full precision is measured."""
    configured = config.training.amp or True  # "on" keeps a configured 'bf16'/'fp16', else fp16 with a scaler
    if choice is None:
        choice = "on" if config.training.amp else "off"
    wanted: list[bool | str] = {"on": [configured], "off": [False], "both": [False, configured]}[choice]
    if device.type != "cuda" and any(wanted):
        notes.append(f"--amp {choice}: AMP is CUDA-only in unet3d (ignored on the CPU); measured in full precision")
        return [False]
    return wanted


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        return _benchmark(args, stack)


def _benchmark(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    notes: list[str] = []
    runtime = resolve_runtime(args.ngpus, args.nthreads, args.pin_memory, args.thread_workers)
    device = runtime.device
    if args.brats_scale:
        if device.type != "cuda" and not args.force:
            raise SystemExit(
                "--brats_scale trains the brats2020 network (DynUNet 64-384) on 128^3 volumes: minutes per step on a "
                "CPU. It needs a CUDA device; add --force to run it here anyway."
            )
        if args.data_dir is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="unet3d_brats_scale_")))
        else:
            folder = args.data_dir
        folder.mkdir(parents=True, exist_ok=True)
        config_path = brats_scale_config(folder, args.brats_cases, args.brats_shape, n_validation=1)
    else:
        config_path = Path(args.config_filename)
        ensure_example_data(config_path)
    config = load_config(config_path, parse_assignments(args.overrides))
    check_experiment(config)
    check_data(config, n_threads=2)
    config, split_note = with_validation(config, args.n_validation)
    notes.append(split_note)
    batch_sizes = args.batch_size or ([1, 2] if args.brats_scale else [config.training.batch_size])
    amps = amp_settings(args.amp or ("both" if args.brats_scale else None), config, device, notes)
    steps = args.steps or (DEFAULT_STEPS_BRATS if args.brats_scale else DEFAULT_STEPS)
    use_deterministic_algorithms(config.training.deterministic)
    facts = machine_facts(runtime)
    settings = {
        "config": str(config_path),
        "overrides": args.overrides,
        "mode": "brats_scale" if args.brats_scale else "config",
        "timed_steps_per_feed": steps,
        "repeats": args.repeats,
        "nthreads": runtime.n_workers,
        "thread_workers": runtime.thread_workers,
        "ngpus": runtime.n_gpus,
        "pin_memory": runtime.pin_memory,
        "batch_sizes": batch_sizes,
        "amp": [amp_label(a, device) for a in amps],
        "desired_shape": config.dataset.desired_shape,
        "model": config.model.name,
        "n_parameters": None,
        "n_training_cases": len(config.groups["training"]),
        "cache": config.dataset.cache,
    }
    rows: list[Row] = []
    results: dict[str, Any] = {}
    base = variant_config(config, {"training.batch_size": batch_sizes[0], "training.amp": amps[0]})

    # (b) cache effect: each cache mode from empty; the target applies to the disk cache (the brief's "persistent"
    # dataset) and to the in-memory cache; no cache at all is the reference.
    log.info("(b) cache effect: %d passes over the training loader per cache mode", args.passes)
    results["cache"] = {}
    for mode in ("disk", "memory", "none"):
        cached = variant_config(base, {"dataset.cache": mode})
        outcome = attempt(loader_passes, cached, runtime, args.passes, args.cache_repeats)
        results["cache"][mode] = outcome
        rows += cache_rows(mode, outcome)

    with tempfile.TemporaryDirectory(prefix="unet3d_bench_") as work_dir:
        work = Path(work_dir)
        settings["cache_used"] = cache_settings(config, work)[0]
        results["variants"] = []
        clip = getattr(config.training, "gradient_clip", None)
        for amp in amps:
            for index, batch_size in enumerate(batch_sizes):
                label = f"bs {batch_size}, {amp_label(amp, device)}"
                cfg = variant_config(config, {"training.batch_size": batch_size, "training.amp": amp})
                seed_everything(args.seed)
                parts = build_components(cfg, work, runtime)
                parts.train_transform.set_random_state(seed=args.seed)
                settings["n_parameters"] = sum(p.numel() for p in parts.model.parameters())
                if "loading_profile" not in results:
                    log.info("loading profile: each transform of the training chain, cache read/write, collation")
                    results["loading_profile"] = attempt(profile_loading, parts, cfg, work)
                log.info("(a)+(c) %s: about %d steps each, real loader / in memory, in 1-epoch blocks", label, steps)
                blocks = attempt(step_blocks, parts, device, steps, clip)
                variant: dict[str, Any] = {"batch_size": batch_size, "amp": amp_label(amp, device), **blocks}
                rows += variant_rows(label, blocks)
                if index == 0:
                    log.info("(d) %s: sliding-window prediction vs. pure forward passes", label)
                    window = attempt(sliding_window, parts, cfg, device, bool(amp), args.sw_batch_size, args.repeats)
                    variant["sliding_window"] = window
                    rows += window_rows(label, window)
                results["variants"].append(variant)
                del parts
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    facts["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if any(row.failed for row in rows):
        notes.append("some measurements failed: the error is in the table and under 'error' in the JSON")
    if any("all disturbed" in row.note for row in rows):
        notes.append(
            "some timings were all disturbed by other processes (see 'min of N' in the table): they are upper bounds; "
            "rerun on a quiet machine"
        )
    return {
        "machine": facts,
        "settings": settings,
        "targets": {
            "loader_overhead_percent_max": TARGET_LOADER_OVERHEAD,
            "cache_first_over_later_min": TARGET_CACHE_SPEEDUP,
            "sliding_window_over_forward_max": TARGET_SLIDING_WINDOW,
        },
        "measurements": results,
        "rows": [dataclasses.asdict(row) | {"status": row.status()} for row in rows],
        "notes": notes,
    }


def attempt(work: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one measurement; a failure (e.g. a loader that crashes) is recorded as {"error": ...} and the benchmark
    goes on with the next measurement: a harness that finds a bug should report it, not hide the other numbers."""
    try:
        return work(*args)
    except Exception as error:  # any failure of the code under test is a result
        log.debug("measurement failed", exc_info=True)
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [""]
        # A loader worker's error carries the worker's traceback: its most specific line says what went wrong.
        specific = [line for line in lines if "expects" in line or "got" in line]
        errors = [line for line in lines if "Error" in line]
        line = (specific or errors or lines)[0 if specific else -1]
        text = line if re.match(r"^\w+(Error|Exception): ", line) else f"{type(error).__name__}: {line}"
        text = text.split(", shape [")[0][:300]
        log.warning("measurement failed: %s", text)
        return {"error": text}


def failed_row(name: str, outcome: dict[str, Any], target: str = "") -> Row:
    return Row(name, None, "", target, note=f"failed: {outcome['error']}", failed=True)


def cache_rows(mode: str, outcome: dict[str, Any]) -> list[Row]:
    title = {"disk": "disk cache", "memory": "memory cache", "none": "no cache"}[mode]
    target = f">= {TARGET_CACHE_SPEEDUP:g}x" if mode != "none" else ""
    if "error" in outcome:
        return [failed_row(f"{title}: first / later", outcome, target)]
    estimates = outcome["estimates"]
    rows = []
    if mode == "memory":
        rows.append(
            Row(
                f"{title}: filling it while building the dataset",
                outcome["construction_seconds"],
                "s",
                note=clean(estimates["construction"]),
            )
        )
    rows += [
        Row(
            f"{title}: first pass over the train loader" + (" (empty cache)" if mode != "none" else ""),
            outcome["first_seconds"],
            "s",
            note=clean(estimates["first"]),
        ),
        Row(f"{title}: later passes (2nd, 3rd)", outcome["later_seconds"], "s", note=clean(estimates["later"])),
        Row(
            f"{title}: first epoch / later" + (" (reference)" if mode == "none" else ""),
            outcome["first_over_later"],
            "x",
            target,
            outcome["first_over_later"] >= TARGET_CACHE_SPEEDUP if target else None,
        ),
    ]
    return rows


def clean(estimate: dict[str, Any]) -> str:
    """How a value was obtained from repeated timings, for the table."""
    if estimate["n_clean"] == 0:
        return f"min of {estimate['n']}, all disturbed by other processes"
    return f"median of {estimate['n_clean']}/{estimate['n']} undisturbed"


def variant_rows(label: str, blocks: dict[str, Any]) -> list[Row]:
    if "error" in blocks:
        return [
            failed_row(
                f"[{label}] loader overhead, throughput, peak memory", blocks, f"<= {TARGET_LOADER_OVERHEAD:g} %"
            )
        ]
    step, estimates = blocks["step_seconds"], blocks["estimates"]
    overhead = blocks["loader_overhead_percent"]
    peak = blocks["peak_memory"]
    rows = [
        Row(f"[{label}] step time, real train loader", step["loader"], "s/step", note=clean(estimates["loader"])),
        Row(f"[{label}] step time, batches in memory", step["memory"], "s/step", note=clean(estimates["memory"])),
        Row(
            f"[{label}] loader overhead",
            overhead,
            "%",
            f"<= {TARGET_LOADER_OVERHEAD:g} %",
            overhead <= TARGET_LOADER_OVERHEAD,
        ),
        Row(f"[{label}] throughput, real train loader", blocks["throughput_samples_per_s"], "samples/s"),
    ]
    if peak.get("kind") == "cuda":
        rows.append(
            Row(f"[{label}] peak GPU memory (torch.cuda.max_memory_allocated)", peak["max_allocated_mib"], "MiB")
        )
    elif peak:
        what = "peak RSS during loader-fed steps" if "clear_refs" in peak["label"] else "process lifetime peak RSS"
        rows.append(Row(f"[{label}] {what} (ru_maxrss, main process)", peak["peak_rss_mib"], "MiB"))
        if peak["workers_peak_rss_mib"]:
            n = len(peak["workers_peak_rss_mib"])
            rows.append(
                Row(f"[{label}] peak RSS of {n} loader workers (sum)", sum(peak["workers_peak_rss_mib"]), "MiB")
            )
    return rows


def window_rows(label: str, window: dict[str, Any]) -> list[Row]:
    if "error" in window:
        return [failed_row(f"[{label}] sliding-window prediction / forward", window, f"<= {TARGET_SLIDING_WINDOW:g}x")]
    shape = "x".join(map(str, window["image_shape"][2:]))
    rows = [
        Row(
            f"[{label}] sliding-window prediction, one {shape} volume",
            window["prediction_seconds"],
            "s",
            note=f"{window['n_windows']} window{'s' if window['n_windows'] != 1 else ''}",
        ),
        Row(f"[{label}] pure forward passes over the same windows", window["forward_seconds"], "s"),
        Row(
            f"[{label}] prediction / forward",
            window["prediction_over_forward"],
            "x",
            f"<= {TARGET_SLIDING_WINDOW:g}x",
            window["prediction_over_forward"] <= TARGET_SLIDING_WINDOW,
        ),
    ]
    if "importance_map_seconds_per_call" in window:
        rows.append(
            Row(
                f"[{label}] of which Gaussian weight map (rebuilt per call)",
                1000 * window["importance_map_seconds_per_call"],
                "ms",
            )
        )
    return rows


def profile_text(profile: dict[str, Any]) -> str:
    if "error" in profile:
        return f"Loading profile failed: {profile['error']}"
    lines = [
        f"Where loading time goes (per case, {profile['n_cases']} training cases, in this process; least of "
        f"{profile.get('repeats', 1)} runs):",
        "| step | cached | ms/case |",
        "|---|---|---:|",
    ]
    for step in profile["transforms"]:
        cached = "yes" if step["cached"] else "no"
        lines.append(f"| {step['index']}. {step['name']} | {cached} | {step['ms_per_case']:.2f} |")
    first, later = profile["first_epoch_ms_per_case"], profile["later_epoch_ms_per_case"]
    dataset = profile.get("dataset_class", "dataset")
    lines += [
        f"| first epoch: cached transforms | | {first['cached_prefix_transforms']:.2f} |",
        f"| every epoch: random transforms | | {first['random_transforms']:.2f} |",
        f"| later epochs: {dataset}[i] without the random transforms | | "
        f"{later['cache_hit_without_random_transforms']:.2f} |",
        f"| disk cache: write (torch.save) | | {first['cache_write_torch_save']:.2f} |",
        f"| disk cache: read, torch.load(weights_only=True), plain tensors (what the cache stores) | | "
        f"{later['torch_load_tensors_without_metadata']:.2f} |",
        f"| for comparison: the same as MetaTensors (weights_only=True) | | {later['torch_load_weights_only']:.2f} |",
        f"| for comparison: MetaTensors, weights_only=False | | {later['torch_load_unrestricted']:.2f} |",
        f"| collate (per batch of {profile['batch_size']}) | | {profile['collate_ms_per_batch']:.2f} |",
    ]
    transport = profile.get("worker_transport_ms_per_batch") or {}
    meta, plain = transport.get("metatensor"), transport.get("plain_tensors")
    if meta and plain:
        lines += [
            f"| worker to training process, per batch: send + receive (plain tensors, as sent) | | "
            f"{plain['send']:.2f} + {plain['receive']:.2f} |",
            f"| for comparison: the same batch as MetaTensors | | {meta['send']:.2f} + {meta['receive']:.2f} |",
        ]
    return "\n".join(lines)


def default_output(args: argparse.Namespace, device: torch.device) -> Path:
    name = "brats_scale" if args.brats_scale else Path(args.config_filename).name.split(".")[0]
    threads = "_threads" if args.thread_workers and args.nthreads else ""
    return RESULTS / f"{name}_{device.type}_nthreads{args.nthreads}{threads}.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config_filename", default=str(EXAMPLE_CONFIG), help="experiment config (default: example)")
    parser.add_argument("--output", type=Path, help="JSON results (default: benchmarks/results/<name>.json)")
    parser.add_argument(
        "--steps",
        type=int,
        help=f"timed steps per feed, in 1-epoch blocks (default {DEFAULT_STEPS}; --brats_scale: {DEFAULT_STEPS_BRATS})",
    )
    parser.add_argument("--passes", type=int, default=3, help="passes over the loader for the cache effect (>= 2)")
    parser.add_argument("--cache_repeats", type=int, default=3, help="fresh-cache repeats of the passes")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats of the sliding-window prediction")
    parser.add_argument("--nthreads", type=int, default=0, help="data loader worker processes (as unet3d-train)")
    parser.add_argument(
        "--thread_workers", action="store_true", help="the --nthreads workers as threads (as unet3d-train)"
    )
    parser.add_argument("--ngpus", type=int, default=None, help="GPUs to use (default: all; 0: the CPU)")
    parser.add_argument("--pin_memory", action="store_true", help="pinned loader memory (as unet3d-train)")
    parser.add_argument("--amp", choices=("on", "off", "both"), help="mixed precision (default: the config's)")
    parser.add_argument("--batch_size", type=int, nargs="+", help="one or more batch sizes (default: the config's)")
    parser.add_argument("--sw_batch_size", type=int, help="sliding windows per forward pass (default: the config's)")
    add_overrides_argument(parser, example="dataset.cache=memory")
    parser.add_argument("--n_validation", type=int, default=2, help="cases held out when the config has none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--brats_scale", action="store_true", help="brats2020 network on synthetic 128^3 cases")
    parser.add_argument("--force", action="store_true", help="run --brats_scale even without a GPU")
    parser.add_argument("--brats_cases", type=int, default=6, help="synthetic cases for --brats_scale (1 validation)")
    parser.add_argument("--brats_shape", type=int, default=128, help="input size for --brats_scale (a quick check)")
    parser.add_argument("--data_dir", type=Path, help="keep (and reuse) the --brats_scale data here")
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    args = parser.parse_args(argv)
    if args.passes < 2:
        parser.error("--passes must be at least 2")
    if min(args.repeats, args.cache_repeats, args.steps or 1, *(args.batch_size or [1])) < 1:
        parser.error("--steps, --repeats, --cache_repeats and --batch_size must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        started = time.perf_counter()
        report = benchmark(args)
        report["settings"]["wall_seconds"] = time.perf_counter() - started
        device = torch.device(report["machine"]["device"])
        output = args.output or default_output(args, device)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(header(report))
        print()
        print(markdown_table([Row(**{k: v for k, v in r.items() if k != "status"}) for r in report["rows"]]))
        print()
        print(profile_text(report["measurements"]["loading_profile"]))
        for note in report["notes"]:
            print(f"note: {note}")
        print(f"results written to {output}")
        return 0

    try:
        return run_command(body)
    except SystemExit as refusal:
        if isinstance(refusal.code, str):
            print(refusal.code, file=sys.stderr)
            return EXIT_USER_ERROR
        raise


def header(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    if machine.get("cuda_devices") and machine["device"].startswith("cuda"):
        hardware = f"{machine['cuda_devices'][0]['name']} x{settings['ngpus']}, CPU {machine['cpu_model']}"
    else:
        hardware = f"CPU {machine['cpu_model']} ({machine['cpu_cores_usable']} cores, no GPU used)"
    return (
        f"unet3d benchmark {machine['date']} | {hardware} | torch {machine['torch']} | monai {machine['monai']} | "
        f"torch threads {machine['torch_threads']} | loader workers {settings['nthreads']}\n"
        f"config {settings['config']} | {settings['model']} {settings['n_parameters']:,} parameters | "
        f"input {settings['desired_shape']} | {settings['timed_steps_per_feed']} timed steps per feed | "
        f"{settings['wall_seconds']:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
