"""Facts about the machine a result was measured on, and peak memory probes (RSS of the process tree, the
accelerator's allocator)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import re
import resource
from pathlib import Path
from typing import Any

import monai
import torch

import unet3d
from perf.settings import MIB
from unet3d.devices import device_name, synchronize, torch_sees
from unet3d.runtime import Runtime

log = logging.getLogger("unet3d")


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
        "accelerator": torch_sees(),
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "device": str(runtime.device),
        "device_name": device_name(runtime.device),
        "n_devices_used": runtime.n_devices,
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
    """Peak memory over a block of work: the allocator's peak on an accelerator (torch.accelerator's memory
    statistics), else (the CPU, and MPS, which shares the RAM) the peak resident set size."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.on_accelerator = device.type not in ("cpu", "mps")
        self.reset_ok = False
        self.lifetime_before = 0

    def start(self) -> None:
        if self.on_accelerator:
            synchronize(self.device)
            torch.accelerator.reset_peak_memory_stats(self.device)
            return
        self.lifetime_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.reset_ok = _reset_peak_rss("self")
        for pid in _children():
            _reset_peak_rss(pid)

    def stop(self) -> dict[str, Any]:
        if self.on_accelerator:
            synchronize(self.device)
            return {
                "kind": "accelerator",
                "label": "torch.accelerator.max_memory_allocated",
                "max_allocated_mib": torch.accelerator.max_memory_allocated(self.device) / MIB,
                "max_reserved_mib": torch.accelerator.max_memory_reserved(self.device) / MIB,
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
