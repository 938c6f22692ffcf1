"""Timing helpers: synchronized wall times, and whether other processes disturbed a measurement."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from perf.machine import _children
from unet3d.devices import synchronize

log = logging.getLogger("unet3d")


def timed(device: torch.device, work: Callable[[], Any]) -> float:
    """Wall time of `work()`, with the device synchronized before and after."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
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


def median_time(device: torch.device, work: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    work()  # warm-up
    times = [timed(device, work) for _ in range(repeats)]
    return statistics.median(times), times
