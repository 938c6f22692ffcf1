"""Where and how a run executes (unet3d/runtime.py): torchrun's world, the device, seeds, precision, the banner, and
DistributedDataParallel under torchrun on the CPU (gloo, 2 processes)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import monai
import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import run_cli
from unet3d import checkpoint as ckpt
from unet3d.runtime import (
    Runtime,
    all_reduce_mean,
    banner,
    broadcast_from_main,
    is_main_process,
    resolve_runtime,
    seed_everything,
    torchrun_world,
)
from unet3d.training.history import LOG_FILENAME


def torchrun(config, output_dir, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "unet3d.cli.train",
        "--config_filename",
        str(config),
        "--output_dir",
        str(output_dir),
        "--seed",
        "1",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_two_process_run_trains_resumes_and_writes_one_set_of_outputs(experiment, tmp_path):
    ddp = experiment("ddp", n_epochs=4, mutate=lambda c: c["training"].update(batch_size=1))
    result = torchrun(ddp, tmp_path)
    assert result.returncode == 0, result.stderr
    work = tmp_path / "ddp"
    log = pd.read_csv(work / LOG_FILENAME)
    assert list(log["epoch"]) == [1, 2, 3, 4]
    banner = (work / "train.log").read_text()
    assert "x2 processes (DistributedDataParallel)" in banner
    assert "batch size 1 per process, 2 in all (effective)" in banner
    assert result.stdout.count("results in") == 1, "only rank 0 reports"
    assert sorted(p.name for p in work.glob("*.pth")) == ["model.pth", "model_best.pth"]
    assert not list(work.rglob("*.tmp")) and (work / "validation/metrics.csv").exists()

    single = experiment("single", n_epochs=4)  # one process with the same effective batch size of 2
    run_cli(
        "train", "--config_filename", str(single), "--output_dir", str(tmp_path), "--seed", "1", timeout=300
    ).check_returncode()
    single_log = pd.read_csv(tmp_path / "single" / LOG_FILENAME)
    for losses in (log["loss"], single_log["loss"]):
        assert losses.iloc[-1] < losses.iloc[0]
    assert abs(log["loss"].iloc[-1] - single_log["loss"].iloc[-1]) < 0.25 * single_log["loss"].iloc[-1]

    result = torchrun(ddp, tmp_path, "--set", "training.n_epochs=5")
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(work / LOG_FILENAME)["epoch"]) == [1, 2, 3, 4, 5]
    assert ckpt.load_checkpoint(work / "model.pth")["epoch"] == 5
    assert json.loads((work / "config.json").read_text())["training"]["n_epochs"] == 5


TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def test_torchrun_s_environment_gives_the_rank_and_the_world(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert torchrun_world() == (0, 0, 1) and is_main_process()
    for name, value in zip(TORCHRUN_VARIABLES, ("3", "1", "4"), strict=True):
        monkeypatch.setenv(name, value)
    assert torchrun_world() == (3, 1, 4) and not is_main_process()


def test_outside_torchrun_a_run_without_gpus_is_one_cpu_process(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    runtime = resolve_runtime(n_devices=0, n_workers=-2, pin_memory=True, thread_workers=True)
    assert runtime == Runtime(torch.device("cpu"), n_devices=0, n_workers=0, pin_memory=False, thread_workers=True)
    assert not runtime.distributed and runtime.is_main
    assert all_reduce_mean(0.25, runtime) == 0.25 and broadcast_from_main(7, runtime) == 7


def test_seeding_repeats_the_draws_of_python_numpy_and_torch():
    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(5)
    first = draws()
    seed_everything(5)
    assert draws() == first
    seed_everything(6)
    assert draws() != first


def test_the_banner_names_the_versions_the_device_the_workers_and_the_seed():
    line = banner(Runtime(torch.device("cpu"), 0, 2, False, rank=0, world_size=2, thread_workers=True), seed=7)
    assert f"| torch {torch.__version__} | monai {monai.__version__} |" in line
    assert "| device CPU (" in line and "threads) x2 processes (DistributedDataParallel) |" in line
    assert line.endswith("| loader workers 2 (threads) | seed 7")
    gloo = banner(Runtime(torch.device("cpu"), 0, 2, False, rank=0, world_size=2, backend="gloo"), seed=7)
    assert "x2 processes (DistributedDataParallel) over gloo |" in gloo
    alone = banner(Runtime(torch.device("cpu"), 0, 0, False, thread_workers=True), seed=7)
    assert alone.endswith("| loader workers 0 | seed 7") and "processes" not in alone


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"SLURM_CPUS_PER_TASK": "1"}, 1),
        ({"SLURM_CPUS_PER_TASK": "8", "LOCAL_WORLD_SIZE": "4"}, 2),
        ({"SLURM_CPUS_PER_TASK": "1", "LOCAL_WORLD_SIZE": "2"}, 1),
        ({}, "affinity"),
    ],
)
def test_the_cpus_of_a_process_follow_slurm_then_the_affinity_mask(monkeypatch, environment, expected):
    from unet3d.runtime import cpus_for_this_process

    for name in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cpus_for_this_process() == (len(os.sched_getaffinity(0)) if expected == "affinity" else expected)


def test_a_one_cpu_slurm_task_trains_on_one_thread(experiment, tmp_path):
    config = experiment("one_cpu", n_epochs=1)
    environment = {**os.environ, "SLURM_CPUS_PER_TASK": "1"}
    environment.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(
        [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(config), "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert "device CPU (1 threads)" in (tmp_path / "one_cpu" / "train.log").read_text()
