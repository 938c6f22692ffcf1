"""The printed table: one row per measurement, with its value and target, and the text blocks around it."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any

from perf.settings import TARGET_CACHE_SPEEDUP, TARGET_LOADER_OVERHEAD, TARGET_SLIDING_WINDOW

log = logging.getLogger("unet3d")


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
        Row(
            f"[{label}] throughput on {blocks.get('device', 'the device')}, real train loader",
            blocks["throughput_samples_per_s"],
            "samples/s",
        ),
    ]
    if peak.get("kind") in ("cuda", "accelerator"):  # 'cuda': results written before other accelerators
        rows.append(Row(f"[{label}] peak device memory ({peak['label']})", peak["max_allocated_mib"], "MiB"))
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


def header(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    if not machine["device"].startswith("cpu"):
        hardware = f"{machine['device_name']} x{settings['n_devices']}, CPU {machine['cpu_model']}"
    else:
        hardware = f"CPU {machine['cpu_model']} ({machine['cpu_cores_usable']} cores, no accelerator used)"
    return (
        f"unet3d benchmark {machine['date']} | {hardware} | torch {machine['torch']} | monai {machine['monai']} | "
        f"torch threads {machine['torch_threads']} | loader workers {settings['nthreads']}\n"
        f"config {settings['config']} | {settings['model']} {settings['n_parameters']:,} parameters | "
        f"input {settings['desired_shape']} | {settings['timed_steps_per_feed']} timed steps per feed | "
        f"{settings['wall_seconds']:.0f} s"
    )
