"""The C allocator's settings for workers that read one large image after another (unet3d/allocator.py)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from unet3d.allocator import keep_freed_memory

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

CYCLES = r"""
import json, resource, sys
from unet3d.allocator import keep_freed_memory
taken = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(12):  # twelve cases of three 18 MB channels, each case's held together, then dropped
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    images = [bytearray(18 * 2**20) for _ in range(3)]
    del images
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"taken": taken, "faults": faults}))
"""


def _cycles(mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_freed_image_memory_is_reused_instead_of_faulted_in_again():
    default, kept = _cycles("default"), _cycles("keep")
    assert kept["taken"] is True
    pages = 18 * 2**20 // 4096
    # glibc's default (measured: 9,184 faults per case after the first two, of 13,824 pages): fresh pages for most
    assert min(default["faults"][2:]) > pages
    assert max(kept["faults"][1:]) < pages // 20  # kept (measured: none): the first case's pages serve the next


@pytest.mark.skipif(GLIBC, reason="elsewhere than glibc")
def test_nothing_is_set_without_glibc():
    assert keep_freed_memory() is False
