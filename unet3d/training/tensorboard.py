"""The training log mirrored to TensorBoard (`training.tensorboard: true`; needs `unet3d[tensorboard]`).

Event files go to `<work dir>/tensorboard/`: one scalar per numeric column of each log row, at step = epoch, tagged
`loss/train`, `loss/val`, `dice/val`, `dice/val_<region>`, `dice/full`, `dice/full_<region>`, `lr`, `time/epoch_s`,
`time/train_s` and `time/samples_per_s`; any other numeric column keeps its name. Like the CSV, the mirror is rebuilt
from the checkpoint's rows whenever training starts (`purge_step=1` hides what earlier processes wrote), so
TensorBoard shows every checkpointed epoch exactly once: none repeated after a resume, none lost to a crash between a
checkpoint and its events.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import Any

TENSORBOARD_DIRNAME = "tensorboard"
TAGS = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "lr": "lr",
    "epoch_time": "time/epoch_s",
    "train_time": "time/train_s",
    "samples_per_s": "time/samples_per_s",
}
PREFIXES = {"val_dice": "dice/val", "full_dice": "dice/full"}
Row = dict[str, Any]


def tag(column: str) -> str:
    """The TensorBoard tag of a log column: grouped by quantity (`loss/`, `dice/`), then by data (train, val, full)."""
    if column in TAGS:
        return TAGS[column]
    for prefix, group in PREFIXES.items():
        if column == prefix or column.startswith(f"{prefix}_"):
            return group + column[len(prefix) :]
    return column


def scalars(row: Row) -> dict[str, float]:
    """A log row's numeric columns by tag, without the epoch (the step) and NaN (not measured that epoch)."""
    return {
        tag(column): float(value)
        for column, value in row.items()
        if column != "epoch" and isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)
    }


@contextmanager
def tensorboard_mirror(work_dir: Path, rows: list[Row], enabled: bool) -> Iterator[Callable[[Row], None]]:
    """Replay `rows` (the checkpoint's) and yield a function that adds one more row; a no-op unless `enabled`.
    Every row is flushed at once, so TensorBoard follows the run; the writer is closed on leaving, errors included."""
    if not enabled:
        yield lambda row: None
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(work_dir / TENSORBOARD_DIRNAME), purge_step=1)

    def write(row: Row) -> None:
        for name, value in scalars(row).items():
            writer.add_scalar(name, value, global_step=int(row["epoch"]))

    def add(row: Row) -> None:
        write(row)
        writer.flush()

    try:
        for row in rows:
            write(row)
        writer.flush()
        yield add
    finally:
        writer.close()
