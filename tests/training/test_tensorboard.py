"""TensorBoard mirror of the training log: tags and values, every epoch once across resumes, the missing package."""

from __future__ import annotations

import importlib.util
import math

import pandas as pd
import pytest

from unet3d.experiment.run import run_experiment
from unet3d.training.history import LOG_FILENAME
from unet3d.training.options import RunOptions
from unet3d.training.tensorboard import TENSORBOARD_DIRNAME, scalars, tag

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard")


def read_events(work_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag with its (step, value) pairs, as TensorBoard shows them: purged steps left out."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(work_dir / TENSORBOARD_DIRNAME), size_guidance={"scalars": 0})
    events.Reload()
    pairs = {name: [(e.step, e.value) for e in events.Scalars(name)] for name in events.Tags()["scalars"]}
    return {name: points for name, points in pairs.items() if points}


def assert_mirrors_the_log(work_dir) -> None:
    log = pd.read_csv(work_dir / LOG_FILENAME)
    events = read_events(work_dir)
    numeric = [c for c in log.columns if c != "epoch" and pd.api.types.is_numeric_dtype(log[c])]
    assert set(events) == {tag(c) for c in numeric if log[c].notna().any()}
    for column in numeric:
        expected = [(int(e), v) for e, v in zip(log["epoch"], log[column], strict=True) if not math.isnan(v)]
        steps = [step for step, _ in events.get(tag(column), [])]
        assert steps == [e for e, _ in expected], column
        values = [value for _, value in events.get(tag(column), [])]
        # The CSV keeps 6 significant digits.
        assert values == pytest.approx([v for _, v in expected], rel=1e-5), column


def test_tags_group_the_log_columns():
    assert [tag(c) for c in ("loss", "val_loss", "val_dice", "val_dice_1+4", "full_dice_4", "lr", "epoch_time")] == [
        "loss/train",
        "loss/val",
        "dice/val",
        "dice/val_1+4",
        "dice/full_4",
        "lr",
        "time/epoch_s",
    ]
    assert tag("val_dicey") == "val_dicey"
    row = {"epoch": 3, "loss": 0.5, "full_dice": math.nan, "lr": 1e-3, "note": "x", "flag": True}
    assert scalars(row) == {"loss/train": 0.5, "lr": 1e-3}


@needs_tensorboard
def test_event_files_hold_the_training_log(experiment, tmp_path):
    run_experiment(experiment("tb", n_epochs=2, tensorboard=True), tmp_path, RunOptions(seed=1))
    work = tmp_path / "tb"
    assert_mirrors_the_log(work)
    events = read_events(work)
    assert {"loss/train", "loss/val", "dice/val", "dice/val_4", "lr", "time/epoch_s", "dice/full"} <= set(events)
    assert [step for step, _ in events["loss/train"]] == [1, 2]


@needs_tensorboard
def test_extending_a_run_shows_every_epoch_once(experiment, tmp_path):
    config = experiment("tb_extend", n_epochs=2, tensorboard=True)
    run_experiment(config, tmp_path, RunOptions(seed=2))
    work = tmp_path / "tb_extend"
    # As if a process had written events past its last checkpoint (epoch 3, a tag since gone) and died.
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(work / TENSORBOARD_DIRNAME)) as ahead:
        ahead.add_scalar("loss/train", 123.0, global_step=3)
        ahead.add_scalar("stale/column", 1.0, global_step=3)
    run_experiment(config, tmp_path, RunOptions(seed=2), overrides={"training.n_epochs": 3})
    assert [step for step, _ in read_events(work)["loss/train"]] == [1, 2, 3]
    assert_mirrors_the_log(work)


@needs_tensorboard
def test_switching_it_on_for_an_extension_replays_the_earlier_epochs(experiment, tmp_path):
    config = experiment("tb_late", n_epochs=1)
    run_experiment(config, tmp_path, RunOptions(seed=4))
    assert not (tmp_path / "tb_late" / TENSORBOARD_DIRNAME).exists()
    run_experiment(
        config, tmp_path, RunOptions(seed=4), overrides={"training.n_epochs": 2, "training.tensorboard": True}
    )
    assert [step for step, _ in read_events(tmp_path / "tb_late")["loss/train"]] == [1, 2]
    assert_mirrors_the_log(tmp_path / "tb_late")
