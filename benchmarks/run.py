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
batch sizes 1 and 2 and AMP on and off; it needs an accelerator (or --force). `--device` picks it as for
unet3d-train; the throughput rows name the device they ran on. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from perf.configs import (
    amp_label,
    amp_settings,
    brats_scale_config,
    ensure_example_data,
    variant_config,
    with_validation,
)
from perf.loading import loader_passes, profile_loading
from perf.machine import machine_facts
from perf.report import Row, attempt, cache_rows, header, markdown_table, profile_text, variant_rows, window_rows
from perf.settings import (
    DEFAULT_STEPS,
    DEFAULT_STEPS_BRATS,
    EXAMPLE_CONFIG,
    RESULTS,
    TARGET_CACHE_SPEEDUP,
    TARGET_LOADER_OVERHEAD,
    TARGET_SLIDING_WINDOW,
)
from perf.steps import step_blocks
from perf.window import sliding_window

from unet3d.cli.common import EXIT_USER_ERROR, add_overrides_argument, run_command, setup_logging
from unet3d.config.load import load_config, parse_assignments
from unet3d.devices import DEVICE_CHOICES, empty_cache
from unet3d.preflight import check_data, check_experiment
from unet3d.runtime import (
    resolve_runtime,
    seed_everything,
    use_deterministic_algorithms,
)
from unet3d.training.components import build_components, cache_settings

log = logging.getLogger("unet3d")


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        return _benchmark(args, stack)


def _benchmark(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    notes: list[str] = []
    runtime = resolve_runtime(args.n_devices, args.nthreads, args.pin_memory, args.thread_workers, args.device)
    device = runtime.device
    if args.brats_scale:
        if device.type == "cpu" and not args.force:
            raise SystemExit(
                "--brats_scale trains the brats2020 network (DynUNet 64-384) on 128^3 volumes: minutes per step on a "
                "CPU. It needs an accelerator (CUDA, NPU, XPU, MPS); add --force to run it here anyway."
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
        "device": str(device),
        "n_devices": runtime.n_devices,
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
                components = build_components(cfg, work, runtime)
                components.train_transform.set_random_state(seed=args.seed)
                settings["n_parameters"] = sum(p.numel() for p in components.model.parameters())
                if "loading_profile" not in results:
                    log.info("loading profile: each transform of the training chain, cache read/write, collation")
                    results["loading_profile"] = attempt(profile_loading, components, cfg, work)
                log.info("(a)+(c) %s: about %d steps each, real loader / in memory, in 1-epoch blocks", label, steps)
                blocks = attempt(step_blocks, components, device, steps, clip)
                variant: dict[str, Any] = {"batch_size": batch_size, "amp": amp_label(amp, device), **blocks}
                rows += variant_rows(label, blocks)
                if index == 0:
                    log.info("(d) %s: sliding-window prediction vs. pure forward passes", label)
                    window = attempt(
                        sliding_window, components, cfg, device, bool(amp), args.sw_batch_size, args.repeats
                    )
                    variant["sliding_window"] = window
                    rows += window_rows(label, window)
                results["variants"].append(variant)
                del components
                gc.collect()
                empty_cache(device)
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
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="where to measure, as unet3d-train --device"
    )
    parser.add_argument(
        "--n_devices", "--ngpus", dest="n_devices", type=int, default=None, help="0: the CPU (default: the device)"
    )
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


if __name__ == "__main__":
    sys.exit(main())
