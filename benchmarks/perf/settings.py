"""Where the benchmark reads and writes, and the targets it measures against."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("unet3d")


HERE = Path(__file__).resolve().parents[1]  # benchmarks/
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
