"""Training steps fed by the real loader against the same steps fed from memory, in interleaved blocks."""

from __future__ import annotations

import logging
from typing import Any

import torch

from perf.machine import PeakMemory
from perf.timing import cycle, measure, robust
from unet3d.training.components import Components
from unet3d.training.loop import train_step

log = logging.getLogger("unet3d")


def step_blocks(components: Components, device: torch.device, total: int, clip: float | None) -> dict[str, Any]:
    """Time about `total` training steps in each of two feeds, in blocks of one epoch, interleaved (AB, BA, ...) so
    that a machine getting busier or quieter affects both alike and a disturbed block can be set aside:

    - loader: batches drawn from the real train loader (epoch after epoch, cache already filled);
    - memory: one epoch of the same loader's batches, collected beforehand and already on the device.
    """
    components.network.train()
    batches = cycle(components.train_loader)
    per_epoch = len(components.train_loader)
    steps, rounds = per_epoch, max(1, round(total / per_epoch))
    for _ in range(per_epoch):  # the warm-up epoch: cache filled, allocator and kernels (cuDNN autotuning) warm
        train_step(components, next(batches), device, clip)
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
            samples[feed] += train_step(components, batch, device, clip)[1]

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
        "device": str(device),
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
